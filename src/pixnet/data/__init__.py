"""The SpatialData layer: a slide's image on a working grid, its tables' bins as geometry, coverage checks."""

from .bins import TableSpots, shapes_to_spots, table_counts, table_spots
from .image import SlideImage, element_to_cs, image_levels
from .resolution import default_loss, default_val_fraction, spot_diameter_um, working_resolution
from .slide import Slide, on_image, resolve_slide, resolve_table

__all__ = [
    "Slide",
    "SlideImage",
    "TableSpots",
    "element_to_cs",
    "image_levels",
    "on_image",
    "resolve_slide",
    "resolve_table",
    "shapes_to_spots",
    "default_loss",
    "default_val_fraction",
    "spot_diameter_um",
    "table_counts",
    "table_spots",
    "working_resolution",
]
