"""Read a SpatialData image element at a working resolution, tile by tile."""

from __future__ import annotations

import numpy as np
from PIL import Image
from spatialdata.transformations import get_transformation
from xarray import DataArray, DataTree


def image_levels(element: DataArray | DataTree) -> list[DataArray]:
    """The resolution levels of an image or labels element, finest first (one for a single-scale element)."""
    if isinstance(element, DataTree):
        return [element[k][next(iter(element[k].data_vars))] for k in element]
    return [element]


def element_to_cs(element, cs: str) -> np.ndarray:
    """3x3 affine from an element's intrinsic ``(x, y)`` to coordinate system ``cs``."""
    transformations = get_transformation(element, get_all=True)
    if cs not in transformations:
        raise ValueError(
            f"The element has no transformation to coordinate system {cs!r} (it has {sorted(transformations)}). "
            "Image and bins must share a coordinate system; "
            "set one with spatialdata.transformations.set_transformation."
        )
    return np.asarray(transformations[cs].to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), np.float64)


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
            dims = levels[0].dims if levels else None
            raise ValueError(f"pixnet needs an RGB image element with dims (c, y, x) and 3 channels; got {dims}.")
        self.levels = levels
        self.cs = cs
        to_cs = element_to_cs(levels[0], cs)
        if abs(to_cs[0, 1]) > 1e-9 or abs(to_cs[1, 0]) > 1e-9:
            raise ValueError("The image is rotated in its coordinate system; pixnet needs an axis-aligned image.")
        self.scale = np.array([to_cs[0, 0], to_cs[1, 1]])  # cs units per level-0 pixel
        self.offset = to_cs[:2, 2]
        self.f = work_um_per_px / cs_um_per_px  # cs units per working pixel
        self.work_um_per_px = work_um_per_px
        h0, w0 = levels[0].sizes["y"], levels[0].sizes["x"]
        x1, y1 = self.offset + self.scale * (w0, h0)
        self.shape = (int(np.ceil(y1 / self.f)), int(np.ceil(x1 / self.f)))  # working grid covering the image

    def read(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """Working pixels ``[y0:y0+h, x0:x0+w]`` as ``(h, w, 3)`` uint8; white outside the image."""
        # The window in level-0 pixels (float), then the coarsest level finer than the working grid.
        a = (np.array([x0, y0]) * self.f - self.offset) / self.scale
        b = (np.array([x0 + w, y0 + h]) * self.f - self.offset) / self.scale
        per_px = (b - a) / np.array([w, h])
        level, down = 0, 1.0
        for k in range(1, len(self.levels)):
            d = self.levels[0].sizes["x"] / self.levels[k].sizes["x"]
            if d <= per_px.min() * 1.001:
                level, down = k, d
        arr = self.levels[level]
        a, b = a / down, b / down
        lo = np.floor(a).astype(int) - 1
        hi = np.ceil(b).astype(int) + 1
        H, W = arr.sizes["y"], arr.sizes["x"]
        clo, chi = np.maximum(lo, 0), np.minimum(hi, (W, H))
        crop = np.full((hi[1] - lo[1], hi[0] - lo[0], 3), 255, np.uint8)
        if (chi > clo).all():
            data = arr.data[:3, clo[1] : chi[1], clo[0] : chi[0]]
            data = np.asarray(data.compute() if hasattr(data, "compute") else data)
            crop[clo[1] - lo[1] : chi[1] - lo[1], clo[0] - lo[0] : chi[0] - lo[0]] = np.moveaxis(data, 0, -1)
        box = (a[0] - lo[0], a[1] - lo[1], b[0] - lo[0], b[1] - lo[1])
        out = Image.fromarray(crop).resize((w, h), resample=Image.Resampling.BILINEAR, box=box, reducing_gap=None)
        return np.asarray(out)

    def load(self, *, tile: int = 4096) -> np.ndarray:
        """The whole image on the working grid, ``(H, W, 3)`` uint8, read tile by tile."""
        h, w = self.shape
        out = np.empty((h, w, 3), np.uint8)
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                th, tw = min(tile, h - y), min(tile, w - x)
                out[y : y + th, x : x + tw] = self.read(y, x, th, tw)
        return out
