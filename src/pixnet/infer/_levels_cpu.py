"""The map's levels, planar, from the network's channels-last tile: compiled loops, one pass a level.

The network gives a map tile as ``(h, w, C)`` in memory (channels-last, the fast convolution
layout); the stored map is ``(C, h, w)``. :func:`planar_levels` writes level 0 as a transposed
copy in blocks of 64 pixels x 32 channels (both sides' cache lines used whole: 17-19 ms for
250 channels x 256 x 256 px, against 43 ms for numpy's ``copyto`` of the transposed view), and
each coarser level from the planar one before it, with :func:`pixnet.infer.pyramid.coarsen`'s
sums in its order, ``(a00 + a01) + (a10 + a11)`` over 4 in float32: the same values to the bit.
Compiled by numba on first use (and cached on disk); no lock on Python is held (``nogil``).
"""

from __future__ import annotations

import functools

import numpy as np

X_BLOCK, C_BLOCK = 64, 32  # pixels x channels a block of the transposed copy (measured: benchmarks/RESULTS.md)


@functools.cache
def _kernels():
    import numba

    jit = numba.njit(cache=True, nogil=True)
    return jit(_to_planar), jit(_halve)


def planar_levels(hwc: np.ndarray, levels: list[np.ndarray]) -> None:
    """Fill ``levels`` ``[(C, h, w), (C, h / 2, w / 2), ...]`` (float32, C-contiguous) from ``hwc``.

    ``hwc``: ``(h, w, C)`` float32 with any strides (a crop of the network's map); ``h`` and ``w``
    are multiples of ``2**(len(levels) - 1)``. Values as :func:`pixnet.infer.pyramid.coarsen`
    gives them level by level, NaN excepted (its callers send tiles with NaN to xarray).
    """
    to_planar, halve = _kernels()
    to_planar(hwc, levels[0], X_BLOCK, C_BLOCK)
    for finer, coarser in zip(levels[:-1], levels[1:]):
        halve(finer, coarser)


def _to_planar(src, out, xb, cb):
    h, w, c_n = src.shape
    for y in range(h):
        for x0 in range(0, w, xb):
            x1 = min(x0 + xb, w)
            for c0 in range(0, c_n, cb):
                for c in range(c0, min(c0 + cb, c_n)):
                    for x in range(x0, x1):
                        out[c, y, x] = src[y, x, c]


def _halve(a, out):
    four = np.float32(4.0)
    c_n, h, w = out.shape
    for c in range(c_n):
        for y in range(h):
            for x in range(w):
                top = a[c, 2 * y, 2 * x] + a[c, 2 * y, 2 * x + 1]
                out[c, y, x] = (top + (a[c, 2 * y + 1, 2 * x] + a[c, 2 * y + 1, 2 * x + 1])) / four
