"""pixnet: spatially dense gene expression from H&E images (PixNet), for scverse.

``pixnet.io`` reads Visium HD and Visium runs into SpatialData, ``pixnet.tl`` fits, predicts
and evaluates, ``pixnet.pl`` plots, ``pixnet.datasets`` makes synthetic slides.
"""

from . import baselines, datasets, geometry, io, model, pl, pp, tl
from ._version import __version__
from .model import PixNet

__all__ = ["PixNet", "__version__", "baselines", "datasets", "geometry", "io", "model", "pl", "pp", "tl"]
