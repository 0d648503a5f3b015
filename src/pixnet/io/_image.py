"""Lazy, chunked loading of slide images as spatialdata image elements, the format told by content."""

from __future__ import annotations

import threading
from pathlib import Path

import dask.array as da
import numpy as np
from dask.base import tokenize
from PIL import Image
from spatialdata.models import Image2DModel
from spatialdata.transformations import BaseTransformation, Identity

#: First bytes of the formats pixnet reads: TIFF and BigTIFF (also OME-TIFF, SVS, NDPI, .btf), PNG, JPEG.
_MAGIC = (
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
)
_NEEDS_RGB = (
    "pixnet needs an RGB H&E image (the brightfield scan, 3 colour channels); pass the full-resolution "
    "H&E microscope image (fullres_image_file=... for pixnet.io.visium_hd)."
)


class _ImageError(ValueError):
    """A readable file that is not an RGB image (its own message, not "truncated or unsupported")."""


def image_format(path: Path) -> str | None:
    """``"tiff"``, ``"png"``, ``"jpeg"`` from the file's first bytes (whatever its suffix), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def read_image(path: Path, *, transformations: dict[str, BaseTransformation], multiscale: bool = True):
    """An RGB image file as an ``Image2DModel`` element ``(c, y, x)``, read lazily.

    The format is told by content, not suffix. TIFF-based files (BigTIFF, OME-TIFF, SVS, NDPI,
    ``.btf``) are read tile by tile through tifffile's zarr interface, so a 22k x 22k slide costs
    no memory until pixels are asked for; PNG and JPEG are decoded once, when pixels are first
    asked for. Channels may come first (planar) or last; an alpha channel is dropped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Image {path} not found.")
    kind = image_format(path)
    try:
        data, axes = _tiff(path) if kind == "tiff" else _pil(path)
    except _ImageError as err:
        raise ValueError(str(err)) from None
    except Exception as err:
        raise ValueError(f"{path} cannot be read as an image (truncated or unsupported?): {err}") from err
    data = _channels_last(data, axes, path)[..., :3].transpose(2, 0, 1)
    chunks = (3, 1024, 1024)
    return Image2DModel.parse(
        data.rechunk(chunks),
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        scale_factors=[2, 2, 2, 2] if multiscale and min(data.shape[1:]) >= 2048 else None,
        transformations=transformations or {"global": Identity()},
    )


def _tiff(path: Path) -> tuple[da.Array, str]:
    """The first series' full-resolution level, lazily, with its axes (``YXS``, ``SYX``, ``CYX``...)."""
    import tifffile
    import zarr

    with tifffile.TiffFile(path) as tf:
        axes = tf.series[0].axes
        palette = tf.pages[0].photometric == tifffile.PHOTOMETRIC.PALETTE
    if palette:  # indexed colours (the values are not grey levels): decoded to RGB through the colour map, by PIL
        return _pil(path)
    store = tifffile.imread(path, aszarr=True, level=0)
    # spatialdata's write(overwrite=True) asks each zarr store for its root, to refuse
    # overwriting the files an element reads from; tifffile's store has none
    store.root = str(path)
    data = da.from_zarr(zarr.open(store, mode="r"))
    data[tuple(slice(-1, None) for _ in data.shape)].compute()  # a truncated file fails here, not later
    return data, axes


def _decode(path: Path, mode: str) -> np.ndarray:
    """Decode a PNG/JPEG (or other PIL image) in full, as RGB or RGBA."""
    Image.MAX_IMAGE_PIXELS = None  # the user's own slide, not untrusted input
    with Image.open(path) as im:
        return np.asarray(im if im.mode == mode else im.convert(mode))


class _Decoded:
    """An image file as an array that decodes on first access, once, however many windows are read."""

    def __init__(self, path: Path, shape: tuple[int, ...], mode: str):
        self.path, self.shape, self.mode = path, shape, mode
        self.dtype, self.ndim = np.dtype(np.uint8), len(shape)
        self._data, self._lock = None, threading.Lock()

    def __getitem__(self, key):
        with self._lock:
            if self._data is None:
                self._data = _decode(self.path, self.mode)
        return self._data[key]

    def __getstate__(self):  # sent to a worker without its pixels
        return {"path": self.path, "shape": self.shape, "mode": self.mode}

    def __setstate__(self, state):
        self.__init__(state["path"], state["shape"], state["mode"])


# PIL modes: those that are colour (and what to decode them as), and those that are one channel.
_COLOUR = {"RGB": "RGB", "RGBA": "RGBA", "RGBX": "RGB", "P": "RGB", "PA": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}


def _pil(path: Path) -> tuple[da.Array, str]:
    """PNG, JPEG or another format PIL knows by content: a lazy array decoded once, on first use."""
    Image.MAX_IMAGE_PIXELS = None
    try:
        im = Image.open(path)  # reads the header only
    except Image.UnidentifiedImageError as err:
        with open(path, "rb") as f:
            head = f.read(8)
        raise _ImageError(
            f"{path} is not an image pixnet can read (it starts with {head!r}); TIFF (also BigTIFF, OME-TIFF, "
            f"SVS, NDPI), PNG and JPEG are read, whatever the suffix. {_NEEDS_RGB}"
        ) from err
    with im:
        w, h = im.size
        mode, fmt = im.mode, im.format
        if fmt == "PNG":
            im.verify()  # chunk checksums, without decoding: a truncated file fails here, not in a later read
    if mode not in _COLOUR:
        raise _ImageError(f"{path} is a single-channel {fmt} image (mode {mode!r}, {h} x {w} px). {_NEEDS_RGB}")
    out = _COLOUR[mode]
    shape = (h, w, len(out))
    name = "pixnet-image-" + tokenize(str(path), path.stat().st_mtime_ns, path.stat().st_size)
    meta = np.empty((0, 0, 0), np.uint8)
    arr = da.from_array(_Decoded(path, shape, out), chunks=(2048, 2048, len(out)), name=name, meta=meta)
    return arr, "YXS"


def _channels_last(data: da.Array, axes: str, path: Path) -> da.Array:
    """``(y, x, c)`` with c of 3 or 4, from any order with a channel axis first or last; else an RGB error."""
    keep = [i for i, n in enumerate(data.shape) if n != 1]
    if len(axes) == data.ndim:
        axes = "".join(axes[i] for i in keep)
    data = data.reshape(tuple(data.shape[i] for i in keep))
    found = f"shape {tuple(data.shape)}" + (f", axes {axes}" if len(axes) == data.ndim else "")
    if data.ndim == 2:
        raise ValueError(f"{path} is a single-channel (greyscale) image ({found}). {_NEEDS_RGB}")
    if data.ndim != 3:
        raise ValueError(f"{path} is not a 2-D colour image ({found}). {_NEEDS_RGB}")
    first, last = data.shape[0] in (3, 4), data.shape[-1] in (3, 4)
    if first and last and len(axes) == 3:  # a tiny image: trust the file's axes
        first = axes[0] in "SC" and axes[-1] not in "SC"
    if last and (not first or data.shape[0] > data.shape[-1]):
        return data
    if first:
        return da.moveaxis(data, 0, -1)
    channels = min(data.shape)
    raise ValueError(f"{path} has {channels} channels ({found}), not 3 (RGB) or 4 (RGBA). {_NEEDS_RGB}")
