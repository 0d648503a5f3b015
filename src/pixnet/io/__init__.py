"""Readers: Space Ranger Visium HD and Visium outputs into SpatialData, and zarr stores with large tables."""

from ._zarr import read_zarr
from .visium import visium
from .visium_hd import read_table_grid, visium_hd

__all__ = ["read_table_grid", "read_zarr", "visium", "visium_hd"]
