"""Readers: Space Ranger Visium HD and Visium outputs into SpatialData."""

from .visium import visium
from .visium_hd import read_table_grid, visium_hd

__all__ = ["read_table_grid", "visium", "visium_hd"]
