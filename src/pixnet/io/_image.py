"""Lazy, chunked loading of slide images as spatialdata image elements."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
from PIL import Image
from spatialdata.models import Image2DModel
from spatialdata.transformations import BaseTransformation, Identity

_TIFF = {".tif", ".tiff", ".btf"}


def read_image(path: Path, *, transformations: dict[str, BaseTransformation], multiscale: bool = True):
    """An RGB image file as an ``Image2DModel`` element ``(c, y, x)``.

    TIFF (and BigTIFF ``.btf``) images are read lazily, tile by tile, through tifffile's zarr
    interface, so a 22k x 22k slide costs no memory until pixels are asked for.
    """
    if not path.is_file():
        raise FileNotFoundError(f"Image {path} not found.")
    try:
        if path.suffix.lower() in _TIFF:
            import tifffile
            import zarr

            store = tifffile.imread(path, aszarr=True, level=0)
            # spatialdata's write(overwrite=True) asks each zarr store for its root, to refuse
            # overwriting the files an element reads from; tifffile's store has none
            store.root = str(path)
            arr = zarr.open(store, mode="r")
            data = da.from_zarr(arr)
            data[-1:, -1:].compute()  # a truncated file fails here, not deep inside a later computation
        else:
            Image.MAX_IMAGE_PIXELS = None  # the user's own slide, not untrusted input
            data = da.from_array(np.asarray(Image.open(path).convert("RGB")), chunks=(2048, 2048, 3))
    except Exception as err:
        raise ValueError(f"{path} cannot be read as an image (truncated or unsupported?): {err}") from err
    if data.ndim == 2:
        data = da.stack([data] * 3, axis=-1)
    if data.ndim != 3 or data.shape[-1] not in (3, 4):
        raise ValueError(f"{path} has shape {data.shape}; pixnet expects an RGB image (y, x, 3).")
    data = data[..., :3].transpose(2, 0, 1)
    chunks = (3, 1024, 1024)
    return Image2DModel.parse(
        data.rechunk(chunks),
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        scale_factors=[2, 2, 2, 2] if multiscale and min(data.shape[1:]) >= 2048 else None,
        transformations=transformations or {"global": Identity()},
    )
