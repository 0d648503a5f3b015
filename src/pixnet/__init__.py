"""pixnet: spatially dense gene expression from H&E images (PixNet), for scverse."""

__version__ = "0.1.0"
