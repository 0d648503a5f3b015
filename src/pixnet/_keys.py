"""Names shared across pixnet's subpackages (element names, keys in ``uns`` and ``attrs``)."""

from __future__ import annotations

#: Key under which pixnet records its metadata in ``AnnData.uns`` and ``SpatialData.attrs``.
UNS_KEY = "pixnet"

#: spatialdata-io's names for Visium HD tables and their keys.
REGION_KEY = "region"
INSTANCE_KEY = "location_id"
LABELS_INSTANCE_KEY = "relabeled_location_id"
ARRAY_ROW = "array_row"
ARRAY_COL = "array_col"

#: Boolean ``obs`` column: whether the bin's centre lies on the slide image (False bins are not trained on or scored).
ON_IMAGE = "pixnet_on_image"


def bin_table_name(bin_size: int) -> str:
    """Name spatialdata-io gives the table of the ``bin_size`` um bins (``square_008um``)."""
    return f"square_{int(bin_size):03d}um"

#: Names of the circles and the table of spot-level data read by :func:`pixnet.io.spots` and its layouts.
SPOTS_SHAPES = "spots"
SPOTS_TABLE = "table"
