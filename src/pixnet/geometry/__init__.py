"""Bin geometry, in numpy and shapely only: square grids, rotated squares, circles, polygons and their area weights.

Nothing here knows SpatialData or torch: readers, training, inference and plots share these.
"""

from .grid import BinGrid
from .spots import Spots, spot_weights

__all__ = ["BinGrid", "Spots", "spot_weights"]
