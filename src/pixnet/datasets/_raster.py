"""Rasterise a layout's cells onto any pixel grid (the image's, or the bin array's)."""

from __future__ import annotations

import numpy as np

from ._jit import lazy_njit
from ._layout import Layout


def rasterise(
    layout: Layout, shape: tuple[int, int], origin: np.ndarray, ex: np.ndarray, ey: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cell index (+1, 0 = no cell) and nucleus mask of every pixel of a grid.

    Pixel ``(i, j)`` has its centre at ``origin + (j + 0.5) * ex + (i + 0.5) * ey`` micrometres
    of the layout, so the same cells can be drawn on the image or on a rotated bin array.
    """
    h, w = shape
    corners = origin + np.array([[0, 0], [w, 0], [0, h], [w, h]]) @ np.stack([ex, ey])
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    c = layout.cells
    reach = c["a"] + np.hypot(c["nx"], c["ny"])
    sel = np.flatnonzero(
        (c["x"] + reach > lo[0]) & (c["x"] - reach < hi[0]) & (c["y"] + reach > lo[1]) & (c["y"] - reach < hi[1])
    )
    labels = np.zeros(shape, np.int32)
    nucleus = np.zeros(shape, np.bool_)
    _draw(
        labels, nucleus, sel, c["x"], c["y"], c["a"], c["b"], c["na"], c["nb"], c["theta"], c["nx"], c["ny"],
        float(origin[0]), float(origin[1]), float(ex[0]), float(ex[1]), float(ey[0]), float(ey[1]),
    )  # fmt: skip
    return labels, nucleus


@lazy_njit
def _draw(labels, nucleus, sel, x, y, a, b, na, nb, theta, nx, ny, ox, oy, exx, exy, eyx, eyy):  # pragma: no cover
    h, w = labels.shape
    det = exx * eyy - eyx * exy
    for k in sel:
        r = a[k] * 1.15 + abs(nx[k]) + abs(ny[k])
        jmin, jmax, imin, imax = 1 << 30, -(1 << 30), 1 << 30, -(1 << 30)
        for sx in (-r, r):
            for sy in (-r, r):
                px, py = x[k] + sx - ox, y[k] + sy - oy
                # Invert (px, py) = J * ex + I * ey for fractional pixel coordinates (J, I).
                jj = (px * eyy - py * eyx) / det - 0.5
                ii = (py * exx - px * exy) / det - 0.5
                jmin, jmax = min(jmin, int(np.floor(jj))), max(jmax, int(np.ceil(jj)))
                imin, imax = min(imin, int(np.floor(ii))), max(imax, int(np.ceil(ii)))
        imin, jmin = max(imin, 0), max(jmin, 0)
        imax, jmax = min(imax, h - 1), min(jmax, w - 1)
        c, s = np.cos(theta[k]), np.sin(theta[k])
        # Irregular outlines: a low-order wobble of the radius, its phase fixed by the cell's index.
        p1, p2 = (k * 2.399) % 6.283, (k * 1.733) % 6.283
        for i in range(imin, imax + 1):
            for j in range(jmin, jmax + 1):
                px = ox + (j + 0.5) * exx + (i + 0.5) * eyx
                py = oy + (j + 0.5) * exy + (i + 0.5) * eyy
                dx, dy = px - x[k], py - y[k]
                u, v = dx * c + dy * s, -dx * s + dy * c
                phi = np.arctan2(v, u)
                wob = 1.0 + 0.07 * np.sin(3 * phi + p1) + 0.04 * np.sin(5 * phi + p2)
                if (u / a[k]) ** 2 + (v / b[k]) ** 2 <= wob * wob:
                    labels[i, j] = k + 1
                    du, dv = u - (nx[k] * c + ny[k] * s), v - (-nx[k] * s + ny[k] * c)
                    nucleus[i, j] = (du / na[k]) ** 2 + (dv / nb[k]) ** 2 <= (1.0 + 0.05 * np.sin(4 * phi + p2)) ** 2
