"""Spots of any shape (rotated squares, circles, polygons) and their exact area weights over a pixel grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass
class Spots:
    """Spots in map pixel coordinates (pixel ``j`` spans ``[j, j + 1)``).

    ``size`` is the half side of squares (rotated by ``angle``) or the radius of circles;
    polygons are shapely geometries. One size for all spots (a bin grid, see :meth:`squares`)
    may be a broadcast view (``np.broadcast_to``), which subsets and rescaled copies keep: it
    costs no memory for millions of bins.
    """

    kind: Literal["square", "circle", "polygon"]
    centres: np.ndarray  # (n, 2) x, y
    size: np.ndarray | None = None  # (n,)
    angle: float = 0.0
    polygons: list | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.centres)

    @classmethod
    def squares(cls, centres: np.ndarray, half_side: float, angle: float = 0.0) -> Spots:
        """Squares of one size (a bin grid), the size held once as a broadcast view."""
        return cls("square", centres, np.broadcast_to(float(half_side), (len(centres),)), angle)

    def subset(self, idx) -> Spots:
        """The spots at ``idx`` (an index array or boolean mask)."""
        polys = None if self.polygons is None else np.asarray(self.polygons)[idx]
        centres = self.centres[idx]
        if self.size is None:
            size = None
        elif _one_size(self.size):
            size = np.broadcast_to(self.size[0], (len(centres),))
        else:
            size = np.asarray(self.size)[idx]
        return Spots(self.kind, centres, size, self.angle, polys)

    def scaled(self, factor: float, origin: tuple[float, float] = (0.0, 0.0)) -> Spots:
        """The same spots in coordinates ``(p - origin) / factor`` (for example, working pixels)."""
        origin = np.asarray(origin, np.float64)
        polys = None
        if self.polygons is not None:
            import shapely

            polys = shapely.transform(np.asarray(self.polygons), lambda c: (c - origin) / factor)
        size = None if self.size is None else _map_sizes(self.size, lambda v: v / factor)
        return Spots(self.kind, (self.centres - origin) / factor, size, self.angle, polys)

    def mean_area(self) -> float:
        """Mean area of the spots, in squared pixels (exact for squares and circles)."""
        if self.kind == "square":
            return float(np.mean((2 * np.asarray(self.size)) ** 2))
        if self.kind == "circle":
            return float(np.mean(np.pi * np.asarray(self.size) ** 2))
        import shapely

        return float(np.mean(shapely.area(np.asarray(self.polygons))))

    def extent(self) -> np.ndarray:
        """Half extent of each spot's bounding box around its centre, in pixels."""
        if self.kind == "polygon":
            import shapely

            b = shapely.bounds(np.asarray(self.polygons))
            return np.maximum(np.abs(b[:, [0, 1]] - self.centres), np.abs(b[:, [2, 3]] - self.centres)).max(1)
        c, s = abs(np.cos(self.angle)), abs(np.sin(self.angle))
        k = (c + s) if self.kind == "square" else 1.0
        return _map_sizes(self.size, lambda v: v * k)


def _one_size(size) -> bool:
    """Whether ``size`` is a broadcast view of one value (a bin grid's sizes)."""
    return isinstance(size, np.ndarray) and size.ndim == 1 and len(size) > 1 and size.strides == (0,)


def _map_sizes(size, fn) -> np.ndarray:
    """``fn(size)``, computed on the one value (and still a broadcast view) when ``size`` is one."""
    if _one_size(size):
        return np.broadcast_to(fn(size[:1])[0], size.shape)
    return fn(np.asarray(size))


def spot_weights(spots: Spots, shape: tuple[int, int], *, supersample: int = 4, chunk: int = 8192):
    """Sparse weights of each spot over map pixels: the covered fraction of each pixel.

    Coverage is measured on ``supersample`` x ``supersample`` points per pixel; with
    ``supersample=1`` a pixel counts fully when its centre is inside the spot (a pixel mask).

    Returns
    -------
    ``(spot, pixel, weight)`` arrays: spot index, flat pixel index ``i * W + j``, weight in (0, 1].
    Pixels outside ``shape`` are dropped.

    """
    h, w = shape
    off = (np.arange(supersample) + 0.5) / supersample
    if spots.kind == "polygon":
        return _polygon_weights(spots, h, w, off)
    out = []
    n = len(spots)
    k = int(np.ceil(2 * spots.extent().max())) + 2 if n else 0
    chunk = max(1, min(chunk, 4_000_000 // max(1, k * k * len(off) ** 2)))  # bounds the temporaries
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        cx, cy = spots.centres[sl, 0], spots.centres[sl, 1]
        bj, bi = np.floor(cx).astype(np.int64) - k // 2, np.floor(cy).astype(np.int64) - k // 2
        jj = bj[:, None] + np.arange(k)[None, :]  # (m, k) pixel columns
        ii = bi[:, None] + np.arange(k)[None, :]  # (m, k) pixel rows
        dx = ((jj[:, :, None] + off) - cx[:, None, None])[:, None, :, None, :]  # (m, 1, k, 1, s)
        dy = ((ii[:, :, None] + off) - cy[:, None, None])[:, :, None, :, None]  # (m, k, 1, s, 1)
        size = np.asarray(spots.size, np.float64)[sl].reshape(-1, 1, 1, 1, 1)
        if spots.kind == "circle":
            inside = dx * dx + dy * dy <= size * size  # (m, k, k, s, s)
        else:
            c, s = np.cos(spots.angle), np.sin(spots.angle)
            inside = (np.abs(dx * c + dy * s) <= size) & (np.abs(dy * c - dx * s) <= size)
        cover = inside.reshape(inside.shape[0], k, k, -1).mean(-1)  # (m, k rows, k cols)
        m_idx, r, col = np.nonzero(cover)
        pi, pj = ii[m_idx, r], jj[m_idx, col]
        ok = (pi >= 0) & (pi < h) & (pj >= 0) & (pj < w)
        out.append((m_idx[ok] + start, pi[ok] * w + pj[ok], cover[m_idx, r, col][ok].astype(np.float32)))
    if not out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return tuple(np.concatenate(a) for a in zip(*out))


def _polygon_weights(spots: Spots, h: int, w: int, off: np.ndarray):
    import shapely

    spot, pix, wt = [], [], []
    s = len(off)
    for n, poly in enumerate(spots.polygons):
        x0, y0, x1, y1 = poly.bounds
        j0, i0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        j1, i1 = min(w, int(np.ceil(x1)) + 1), min(h, int(np.ceil(y1)) + 1)
        if j1 <= j0 or i1 <= i0:
            continue
        ys = (np.arange(i0, i1)[:, None] + off[None, :]).ravel()
        xs = (np.arange(j0, j1)[:, None] + off[None, :]).ravel()
        gx, gy = np.meshgrid(xs, ys)
        inside = shapely.contains_xy(poly, gx, gy).reshape(i1 - i0, s, j1 - j0, s).mean(axis=(1, 3))
        r, c = np.nonzero(inside)
        spot.append(np.full(len(r), n, np.int64))
        pix.append((r + i0) * w + (c + j0))
        wt.append(inside[r, c].astype(np.float32))
    if not spot:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(spot), np.concatenate(pix).astype(np.int64), np.concatenate(wt)
