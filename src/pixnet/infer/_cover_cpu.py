"""The covered fraction of pixels by squares and circles, one compiled loop over spots and pixels.

What :func:`pixnet.geometry.spot_weights` computes for squares and circles, in the same float64
arithmetic (so the same weights, bit for bit: ``tests/test_stream.py``), without the
five-dimensional temporaries its array form needs (~8x on rotated 2 um bins). ``pixnet.geometry``
stays numpy and shapely, the reference; prediction, which computes weights for millions of bins,
uses this. Compiled by numba on first use (and cached on disk); it releases the GIL, so the one
pass's helper thread computes weights while the network runs.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .. import geometry
from ..geometry import Spots


@functools.cache
def _kernel():
    import numba

    return numba.njit(cache=True, nogil=True)(_cover)


def spot_weights(spots: Spots, shape: tuple[int, int], *, supersample: int = 4, chunk: int = 65536):
    """:func:`pixnet.geometry.spot_weights`'s ``(spot, pixel, weight)`` arrays, compiled for squares and circles.

    Polygons go to the reference function (shapely does their work).
    """
    if spots.kind == "polygon" or not len(spots):
        return geometry.spot_weights(spots, shape, supersample=supersample)
    off = (np.arange(supersample) + 0.5) / supersample
    k = int(np.ceil(2 * spots.extent().max())) + 2
    size = np.asarray(spots.size, np.float64)
    chunk = max(1, min(chunk, 2_000_000 // max(1, k * k)))  # bounds the output buffers (20 bytes a pixel)
    out = []
    for start in range(0, len(spots), chunk):
        sl = slice(start, min(len(spots), start + chunk))
        x, y = spots.centres[sl, 0].astype(np.float64), spots.centres[sl, 1].astype(np.float64)
        s, p, wt = _cover_block(x, y, size[sl], circle=spots.kind == "circle", angle=spots.angle, k=k, off=off,
                                shape=shape)  # fmt: skip
        out.append((s + start, p, wt))
    return tuple(np.concatenate(a) for a in zip(*out))


def _cover_block(cx, cy, size, *, circle: bool, angle: float, k: int, off: np.ndarray, shape: tuple[int, int]):
    """``(spot, pixel, weight)`` of the spots ``cx, cy, size`` (float64 arrays) over the pixels of ``shape``.

    ``k``: pixels a spot spans at most (rows and columns, from ``floor(centre) - k // 2``);
    ``off``: the sample points' offsets in a pixel. Spots are numbered from 0, in order; pixels
    ``i * W + j`` in row-major order within a spot; pixels outside ``shape`` are dropped.
    """
    m = len(cx)
    spot, pix, wt = np.empty(m * k * k, np.int64), np.empty(m * k * k, np.int64), np.empty(m * k * k, np.float32)
    c, s = float(np.cos(angle)), float(np.sin(angle))  # numpy's, as the array form had them
    n = _kernel()(cx, cy, size, circle, c, s, k, off, shape[0], shape[1], spot, pix, wt)
    return spot[:n], pix[:n], wt[:n]


def _cover(cx, cy, size, circle, c, s, k, off, h, w, spot, pix, wt):
    n_off = len(off)
    samples = float(n_off * n_off)
    n = 0
    for i in range(len(cx)):
        bj = np.int64(math.floor(cx[i])) - k // 2
        bi = np.int64(math.floor(cy[i])) - k // 2
        sz = size[i]
        for r in range(k):
            pi = bi + r
            for q in range(k):
                pj = bj + q
                count = 0
                for a in range(n_off):
                    dy = (float(pi) + off[a]) - cy[i]
                    for b in range(n_off):
                        dx = (float(pj) + off[b]) - cx[i]
                        if circle:
                            inside = dx * dx + dy * dy <= sz * sz
                        else:
                            inside = abs(dx * c + dy * s) <= sz and abs(dy * c - dx * s) <= sz
                        if inside:
                            count += 1
                if count and pi >= 0 and pi < h and pj >= 0 and pj < w:
                    spot[n] = i
                    pix[n] = pi * w + pj
                    wt[n] = np.float32(count / samples)
                    n += 1
    return n
