"""Which measured rows a prediction's rows are: matched by name, checked to be the same places, on the image.

Shared by :func:`pixnet.tl.evaluate` and :func:`pixnet.pl.compare`, so that a figure's PCC is the
one the metrics report; with the checks of what is compared (a layer on the measured scale, a
measured table of counts).
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
from spatialdata import SpatialData

from .._keys import ARRAY_COL, ARRAY_ROW, ON_IMAGE, UNS_KEY
from .bins import table_spots
from .grids import table_grid

logger = logging.getLogger(__name__)

#: Layers of a prediction on the measured scale (log-normalised): ``X`` (None) and ``"lognorm"``.
COMPARABLE_LAYERS = (None, "lognorm")


def scored_values(pred: ad.AnnData, layer: str | None):
    """``pred.X`` or the layer, refused by name when it is not on the measured table's log-normalised scale."""
    if layer is not None and layer not in pred.layers:
        raise KeyError(f"No layer {layer!r} in the prediction (its layers: {list(pred.layers)}); pass layer=None (X).")
    if layer not in COMPARABLE_LAYERS:
        raise ValueError(
            f"layer={layer!r} is not log-normalised as the measurement is scored (log1p(x / total * 1e4)): compare "
            "X (layer=None, the expected measured value) or layer='lognorm'."
        )
    return pred.layers[layer] if layer else pred.X


def paired_rows(sdata: SpatialData, pred_name: str, meas_name: str) -> pd.Index:
    """The ``obs_names`` shared by prediction and measurement, checked to be the same places, on the image.

    Names alone do not say where a bin is: a grid laid anew, or bins read by another tool, can
    reuse barcodes for other places. Each pair's centres (the prediction's ``obsm["spatial"]``
    and the measured table's geometry) must lie within a quarter of a spot of each other.
    """
    pred, measured = sdata.tables[pred_name], sdata.tables[meas_name]
    common = pred.obs_names.intersection(measured.obs_names, sort=False)
    if len(common) < 2:
        raise ValueError(
            f"Predicted ({pred_name!r}) and measured ({meas_name!r}) tables share fewer than 2 bins (obs_names); "
            "were they made for the same bins? Predict with the measured table's bin size or shapes."
        )
    rows_p, rows_m = pred.obs_names.get_indexer(common), measured.obs_names.get_indexer(common)
    places = _measured_centres(sdata, meas_name, pred.uns.get(UNS_KEY, {}).get("coordinate_system"))
    if places is None or "spatial" not in pred.obsm:  # a table made by hand, without positions
        logger.warning(
            "%r or %r has no bin positions (geometry or obsm['spatial']): rows are paired by name only, their "
            "places unchecked.", pred_name, meas_name,
        )  # fmt: skip
    else:
        xy_m, tol = places
        dist = np.hypot(*(np.asarray(pred.obsm["spatial"], np.float64)[rows_p, :2] - xy_m[rows_m]).T)
        far = dist > tol
        if far.any():
            raise ValueError(
                f"{int(far.sum())} of {len(common)} bins that {pred_name!r} and {meas_name!r} both name lie in "
                f"different places (median {np.median(dist[far]):.1f} px apart, more than {tol:.1f} px): the "
                "prediction was not made for the measured bins. Re-run pixnet.tl.predict(sdata, bin_size=...) with "
                "the measured table in sdata, so that it predicts exactly those bins, then evaluate."
            )
    if ON_IMAGE in pred.obs:
        on = pred.obs[ON_IMAGE].to_numpy(bool)[rows_p]
        if not on.all():
            logger.warning(
                "%d of %d bins lie off the image (obs[%r] is False) and are not scored.", (~on).sum(), len(on), ON_IMAGE
            )
            common = common[on]
    return common


def _measured_centres(sdata: SpatialData, name: str, cs: str | None) -> tuple[np.ndarray, float] | None:
    """Centres of the measured table's rows in ``cs`` and a tolerance (a quarter of a spot); None if unknown."""
    table = sdata.tables[name]
    try:  # Visium HD bins: their grid where they lie now (the reader's record, checked), as predict lays them
        grid = table_grid(sdata, name, cs) if cs is not None and ARRAY_ROW in table.obs else None
    except (KeyError, ValueError):
        grid = None
    if grid is not None:
        xy = grid.centres(table.obs[ARRAY_ROW].to_numpy(), table.obs[ARRAY_COL].to_numpy())
        return xy, max(0.25 * grid.side_px, 1.0)
    try:
        spots = table_spots(sdata, name, cs).spots if cs is not None else None
    except (KeyError, ValueError):
        spots = None
    if spots is not None:
        half = float(np.median(spots.extent())) if len(spots) else 1.0
        return spots.centres, max(0.5 * half, 1.0)
    if "spatial" not in table.obsm:
        return None
    xy = np.asarray(table.obsm["spatial"], np.float64)[:, :2]
    return xy, max(0.25 * _spacing(xy), 1.0)


def _spacing(xy: np.ndarray) -> float:
    """Median distance from a point to its nearest neighbour (a sample of points)."""
    from scipy.spatial import cKDTree

    if len(xy) < 2:
        return 1.0
    sample = xy[np.linspace(0, len(xy) - 1, min(len(xy), 5000)).astype(int)]
    d, _ = cKDTree(xy).query(sample, k=2)
    return float(np.median(d[:, 1]))
