"""The element a prediction table annotates: the target's own shapes, squares of a grid, or labels."""

from __future__ import annotations

import numpy as np
from geopandas import GeoDataFrame
from spatialdata.models import ShapesModel
from spatialdata.transformations import Identity

from .._keys import ARRAY_COL, ARRAY_ROW, INSTANCE_KEY, LABELS_INSTANCE_KEY
from ..io.visium_hd import _labels


def geometry_element(target, slide):
    """The element the prediction table annotates, and the table's instance key."""
    if target.geometry is not None:
        return target.geometry, "instance_id"
    rows, cols = target.obs[ARRAY_ROW].to_numpy(), target.obs[ARRAY_COL].to_numpy()
    if target.as_labels:  # a 2 um grid's millions of bins
        return _labels(target.grid, rows, cols, {slide.cs: Identity()}), LABELS_INSTANCE_KEY
    gdf = GeoDataFrame(geometry=target.grid.polygons(rows, cols), index=np.arange(len(rows)))
    return ShapesModel.parse(gdf, transformations={slide.cs: Identity()}), INSTANCE_KEY
