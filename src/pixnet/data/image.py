"""Read a SpatialData image element at a working resolution, tile by tile."""

from __future__ import annotations

import logging
import threading

import dask.array as da
import numpy as np
from PIL import Image
from spatialdata.transformations import get_transformation
from xarray import DataArray, DataTree

from .zarr_window import local_windows

logger = logging.getLogger(__name__)

#: A level whose dask graph holds a chunk (not in memory) of at least this many bytes, and 16 times
#: a read window, is decoded whole by every read (spatialdata-io reads JPEG/PNG/TIFF with
#: dask_image.imread: one chunk per image): it is computed once and kept, when it fits in
#: :data:`MATERIALISE_MAX_BYTES`.
HEAVY_CHUNK_BYTES = 16 * 2**20
MATERIALISE_MAX_BYTES = 4 * 2**30  #: The most memory one materialised level may take.
_WARNED: set[str] = set()


def image_levels(element: DataArray | DataTree) -> list[DataArray]:
    """The resolution levels of an image or labels element, finest first (one for a single-scale element)."""
    if isinstance(element, DataTree):
        return [element[k][next(iter(element[k].data_vars))] for k in element]
    return [element]


def element_to_cs(element, cs: str, name: str = "The element") -> np.ndarray:
    """3x3 affine from an element's intrinsic ``(x, y)`` to coordinate system ``cs``."""
    transformations = get_transformation(element, get_all=True)
    if cs not in transformations:
        raise ValueError(
            f"{name} has no transformation to coordinate system {cs!r} (it has {sorted(transformations)}). "
            "Image and bins must share a coordinate system; "
            "set one with spatialdata.transformations.set_transformation."
        )
    return np.asarray(transformations[cs].to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), np.float64)


def _block_mean(data, k: int) -> da.Array:
    """``(c, y, x)`` image reduced by ``k`` x ``k`` block means, lazily and chunk by chunk, in its dtype."""
    arr = data if isinstance(data, da.Array) else da.from_array(data, chunks=(data.shape[0], 2048, 2048))
    side = k * max(1, 1024 // k)  # float64 temporaries of the mean stay ~25 MB a chunk
    arr = arr[:, : arr.shape[1] // k * k, : arr.shape[2] // k * k].rechunk((arr.shape[0], side, side))
    out = da.coarsen(np.mean, arr, {1: k, 2: k}, trim_excess=True)
    return (out + 0.5).astype(arr.dtype) if np.issubdtype(arr.dtype, np.integer) else out.astype(arr.dtype)


def source_chunk_bytes(data) -> int:
    """Bytes of the largest chunk a read of ``data`` may have to compute whole (0 for in-memory data).

    Every layer of a dask array's graph counts except in-memory numpy blocks, so an image decoded
    as one chunk and rechunked afterwards (``Image2DModel.parse`` of ``dask_image.imread``) is seen
    for what it costs a read: the whole image.
    """
    if not isinstance(data, da.Array):
        return 0
    try:
        layers = data.dask.layers.values()
    except AttributeError:  # a graph without layers: judge by the array's own chunks
        return int(np.prod(data.chunksize)) * data.dtype.itemsize
    biggest = 0
    for layer in layers:
        ann = layer.collection_annotations or {}
        size = ann.get("chunksize")
        if size is None or _in_memory(layer):
            continue
        dtype = ann.get("dtype")
        itemsize = (data.dtype if dtype is None else np.dtype(dtype)).itemsize
        biggest = max(biggest, int(np.prod(size)) * itemsize)
    return biggest


def zarr_source(data):
    """The zarr array that the dask array ``data`` reads unchanged (``da.from_zarr``: spatialdata's images), or None.

    A window sliced from it reads the chunks it touches in one zarr call, without dask's graph and a
    task for each chunk: ~2.5x faster for predict's tiles of 256 px chunks (``benchmarks/RESULTS.md``).
    Any other graph (rechunked, computed, a JPEG read by dask_image) gives None: the dask array is read.
    """
    import zarr

    name = getattr(data, "name", None)
    layers = getattr(getattr(data, "dask", None), "layers", None)
    if not isinstance(data, da.Array) or layers is None or len(layers) != 2 or f"original-{name}" not in layers:
        return None
    sources = list(dict(layers[f"original-{name}"]).values())
    if len(sources) != 1 or not isinstance(sources[0], zarr.Array):
        return None
    source = sources[0]
    return source if (source.shape, source.dtype) == (data.shape, data.dtype) else None


def _in_memory(layer) -> bool:
    mapping = getattr(layer, "mapping", None)
    if not isinstance(mapping, dict) or not mapping:
        return False
    return isinstance(next(iter(mapping.values())), np.ndarray)


def _computed(arr: da.Array) -> np.ndarray:
    """The first three channels of a ``(c, y, x)`` dask array in memory, as a ``(c, y, x)`` view of ``(y, x, c)``.

    Pixel-interleaved, as reads and Pillow use them: no transposing copy of the whole image.
    """
    return np.moveaxis(np.asarray(arr[:3].transpose(1, 2, 0).compute(scheduler="synchronous")), -1, 0)


def _block_mean_np(data: np.ndarray, k: int) -> np.ndarray:
    """``(c, y, x)`` array reduced by ``k`` x ``k`` block means (excess rows and columns dropped), in its dtype."""
    c, h, w = data.shape[0], data.shape[1] // k, data.shape[2] // k
    if data.dtype == np.uint8 and c == 3:  # Pillow's box reduction, in C: ~20x numpy's
        img = Image.fromarray(np.ascontiguousarray(np.moveaxis(data, 0, -1)))  # no copy for _computed's arrays
        return np.moveaxis(np.asarray(img.reduce(k, box=(0, 0, w * k, h * k))), -1, 0)
    out = np.empty((c, h, w), data.dtype)
    step = max(1, 2**24 // max(1, w * k * k))  # rows of blocks at a time: float32 temporaries of ~64 MB
    for ch in range(c):
        for y in range(0, h, step):
            rows = data[ch, y * k : min(h, y + step) * k, : w * k].astype(np.float32)
            mean = rows.reshape(-1, k, w, k).mean(axis=(1, 3))
            out[ch, y : y + len(mean)] = mean + 0.5 if np.issubdtype(data.dtype, np.integer) else mean
    return out


def _as_uint8(data: np.ndarray) -> np.ndarray:
    """8-bit pixels from uint8, uint16 or float (0-1 or 0-255) images; NaN and inf are refused."""
    if data.dtype == np.uint8:
        return data
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all():
            raise ValueError(
                "The image contains NaN or inf pixels; fill them (for example with white) before using pixnet."
            )
        scale = 255.0 if data.max(initial=0) <= 1.0 else 1.0
        return np.clip(data * scale, 0, 255).astype(np.uint8)
    if data.dtype == np.uint16:
        return (data >> 8).astype(np.uint8)
    return np.clip(data, 0, 255).astype(np.uint8)


class SlideImage:
    """An RGB image element seen on a working pixel grid of the coordinate system ``cs``.

    Working pixel ``(i, j)`` covers ``[j f, (j + 1) f) x [i f, (i + 1) f)`` in ``cs`` units,
    with ``f = work_um_per_px / cs_um_per_px``. Reads pick the coarsest pyramid level that is
    still finer than the working grid and resample with an anti-aliasing filter, so a whole
    slide streams in bounded memory.
    """

    def __init__(self, element: DataArray | DataTree, *, cs: str, cs_um_per_px: float, work_um_per_px: float):
        levels = image_levels(element)
        if not levels or levels[0].dims != ("c", "y", "x") or levels[0].sizes["c"] < 3:
            got = f"dims {levels[0].dims}, sizes {dict(levels[0].sizes)}" if levels else "no image"
            raise ValueError(
                f"pixnet needs an RGB H&E image element with dims (c, y, x) and 3 channels; got {got}. A "
                "single-channel image (greyscale, DAPI, IF) cannot be predicted from: pass the brightfield H&E scan."
            )
        self.levels = levels
        self.cs = cs
        to_cs = element_to_cs(levels[0], cs, "The image")
        if abs(to_cs[0, 1]) > 1e-9 or abs(to_cs[1, 0]) > 1e-9:
            raise ValueError("The image is rotated in its coordinate system; pixnet needs an axis-aligned image.")
        if to_cs[0, 0] <= 0 or to_cs[1, 1] <= 0:  # its far edge would fall before its origin: an image 0 px wide
            raise ValueError(
                "The image is mirrored in its coordinate system (a negative scale); pixnet needs one that is not. "
                "Flip the image's array and its shapes' coordinates instead, or predict in a coordinate system "
                "where it is not mirrored."
            )
        self.scale = np.array([to_cs[0, 0], to_cs[1, 1]])  # cs units per level-0 pixel
        self.offset = to_cs[:2, 2]
        self.f = work_um_per_px / cs_um_per_px  # cs units per working pixel
        self.work_um_per_px = work_um_per_px
        h0, w0 = levels[0].sizes["y"], levels[0].sizes["x"]
        x1, y1 = self.offset + self.scale * (w0, h0)
        self.shape = (int(np.ceil(y1 / self.f)), int(np.ceil(x1 / self.f)))  # working grid covering the image
        # (array (c, y, x), level-0 pixels per pixel) of each level, plus a lazy block-mean level when the
        # working grid is much coarser than every level, so that reads never pull in a large fine window.
        self._arrays = [(lv.data, w0 / lv.sizes["x"]) for lv in levels]
        per_px = self.f / np.abs(self.scale)
        level, down = self._level(per_px)
        k = int(per_px.min() / down)
        if k >= 2:
            self._arrays.append((_block_mean(self._arrays[level][0], k), down * k))
        # Levels that a small read would decode whole (one-chunk JPEG/PNG sources): computed once, on first use.
        self._source_bytes = [source_chunk_bytes(a) for a, _ in self._arrays]
        # levels read straight from their zarr array, on local disk in this thread (pixnet.data.zarr_window)
        self._zarr = [(local_windows(z) or z) if (z := zarr_source(a)) is not None else None for a, _ in self._arrays]
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]  # a worker process gets its own
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def read(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """Working pixels ``[y0:y0+h, x0:x0+w]`` as ``(h, w, 3)`` uint8; white outside the image."""
        # The window in level-0 pixels (float), then the coarsest level finer than the working grid.
        a = (np.array([x0, y0]) * self.f - self.offset) / self.scale
        b = (np.array([x0 + w, y0 + h]) * self.f - self.offset) / self.scale
        level, down = self._level((b - a) / np.array([w, h]))
        a, b = a / down, b / down
        lo = np.floor(a).astype(int) - 1
        hi = np.ceil(b).astype(int) + 1
        arr = self._array(level, int(np.prod(hi - lo)) * 3)
        H, W = arr.shape[1], arr.shape[2]
        clo, chi = np.maximum(lo, 0), np.minimum(hi, (W, H))
        crop = np.empty((hi[1] - lo[1], hi[0] - lo[0], 3), np.uint8)
        if (clo > lo).any() or (chi < hi).any():  # pixels beyond the image: white
            crop.fill(255)
        if (chi > clo).all():
            data = arr[:3, clo[1] : chi[1], clo[0] : chi[0]]
            # synchronous: a small window, often read inside a task of predict's graph (threads or a cluster)
            data = _as_uint8(np.asarray(data.compute(scheduler="synchronous") if hasattr(data, "compute") else data))
            inside = crop[clo[1] - lo[1] : chi[1] - lo[1], clo[0] - lo[0] : chi[0] - lo[0]]
            for k in range(3):  # a channel at a time: ~4x faster than numpy's copy of the whole (c, y, x) -> (y, x, c)
                inside[..., k] = data[k]
        box = (a[0] - lo[0], a[1] - lo[1], b[0] - lo[0], b[1] - lo[1])
        out = Image.fromarray(crop).resize((w, h), resample=Image.Resampling.BILINEAR, box=box, reducing_gap=None)
        return np.asarray(out)

    def _array(self, level: int, window_px: int) -> np.ndarray | da.Array:
        """Level ``level``'s array; computed and kept in memory first when reads would decode it whole."""
        if self._zarr[level] is not None:
            return self._zarr[level]
        arr = self._arrays[level][0]
        heavy = self._source_bytes[level]
        if not heavy or heavy < max(HEAVY_CHUNK_BYTES, 16 * window_px * arr.dtype.itemsize):
            return arr
        size = int(np.prod(arr[:3].shape)) * arr.dtype.itemsize
        if size > MATERIALISE_MAX_BYTES:
            key = getattr(arr, "name", str(id(arr)))
            if key not in _WARNED:
                _WARNED.add(key)
                logger.warning(
                    "The image is stored in chunks of %.0f MB (a JPEG/PNG/TIFF read as one chunk, as spatialdata-io "
                    "does): every tile read decodes a whole chunk, and this level (%.1f GB) is too large to keep in "
                    "memory, so reads will be slow. Write the SpatialData to zarr (sdata.write('slide.zarr')) and "
                    "read it back with spatialdata.read_zarr, or read the image with pixnet.io.",
                    heavy / 2**20, size / 2**30,
                )  # fmt: skip
            return arr
        with self._lock:  # the first of dask's threads computes it, the others wait and reuse it
            if isinstance(self._arrays[level][0], da.Array):
                logger.info("decoding the image once (level of %.0f MB) instead of once per tile", size / 2**20)
                self._arrays[level] = self._materialise(level)
                self._source_bytes[level] = 0
            return self._arrays[level][0]

    def _materialise(self, level: int) -> tuple[np.ndarray, float]:
        """Level ``level`` in memory, and its factor.

        A coarser level is the block mean of the full-resolution level, itself computed once, when
        that is heavy too and fits the budget: its graph's pyramid (thousands of small dask tasks)
        costs several times the decode.
        """
        arr, down = self._arrays[level]
        k = round(down)
        base = self._arrays[0][0]
        full_size = int(np.prod(base[:3].shape)) * base.dtype.itemsize
        if level and abs(down - k) < 0.01 * k and (self._source_bytes[0] or not isinstance(base, da.Array)):
            if full_size <= MATERIALISE_MAX_BYTES:
                if isinstance(base, da.Array):
                    self._arrays[0] = (_computed(base), 1.0)
                    self._source_bytes[0] = 0
                return _block_mean_np(self._arrays[0][0], k), float(k)
        return _computed(arr), down

    def _level(self, per_px: np.ndarray) -> tuple[int, float]:
        """The coarsest pyramid level still finer than ``per_px`` level-0 pixels a working pixel, and its factor."""
        level, down = 0, 1.0
        for k, (_, d) in enumerate(self._arrays):
            if d <= per_px.min() * 1.001 and d >= down:
                level, down = k, d
        return level, down

    def source_px_per_px(self) -> float:
        """Pixels of the level that reads serve per working pixel (side): the cost of a read."""
        per_px = self.f / np.abs(self.scale)
        return float(per_px.max() / self._level(per_px)[1])

    def load(self, *, tile: int = 4096) -> np.ndarray:
        """The whole image on the working grid, ``(H, W, 3)`` uint8, read tile by tile."""
        h, w = self.shape
        tile = int(np.clip(tile / max(1.0, self.source_px_per_px()), 64, tile))  # reads of at most tile^2 source px
        out = np.empty((h, w, 3), np.uint8)
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                th, tw = min(tile, h - y), min(tile, w - x)
                out[y : y + th, x : x + tw] = self.read(y, x, th, tw)
        return out
