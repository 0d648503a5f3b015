"""Readers: Space Ranger Visium HD and Visium outputs, spot-level data from other layouts, zarr stores."""

from ._zarr import read_zarr
from .hest import hest
from .istar import istar
from .legacy_st import legacy_st
from .spots import spots
from .visium import visium
from .visium_hd import read_table_grid, visium_hd

__all__ = ["hest", "istar", "legacy_st", "read_table_grid", "read_zarr", "spots", "visium", "visium_hd"]
