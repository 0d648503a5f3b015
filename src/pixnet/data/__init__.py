"""Training data: a SpatialData image on a working grid, and tiles with the bins inside them."""

from .bins import TableSpots, shapes_to_spots, table_counts, table_spots
from .dataset import EpochSampler, SlideData, TileSpec, TrainTiles, ValTiles, collate, spatial_split
from .features import colour_texture_features
from .image import SlideImage, element_to_cs, image_levels
from .resolution import spot_diameter_um, working_resolution

__all__ = [
    "EpochSampler",
    "SlideData",
    "SlideImage",
    "TableSpots",
    "TileSpec",
    "TrainTiles",
    "ValTiles",
    "collate",
    "colour_texture_features",
    "element_to_cs",
    "image_levels",
    "spatial_split",
    "spot_diameter_um",
    "table_counts",
    "shapes_to_spots",
    "table_spots",
    "working_resolution",
]
