"""The map's pyramid made in the pass, tile by tile, with the values spatialdata would give it.

spatialdata makes an image's coarser levels from its level 0 after the fact (xarray's coarsen
mean over 2 x 2 pixels, each level from the one before): for a whole slide's map at 2 um that
reads 10 GB back and takes minutes on one thread. :class:`MapLevels` coarsens each tile's core
while it is in memory, with the same xarray call, so that every level holds the values
spatialdata would compute (``tests/test_stream.py`` compares them level by level, to the last
bit where the chunks' memory layout sums the 2 x 2 pixels in the same order). A tile's core is a
whole number of pixels at every level when its side and the map's are multiples of
``2**levels`` (:func:`can_coarsen`; :func:`pixnet.infer.dense.map_region` makes the map's so).
A coarser level's rows wait in memory, a chunk at a time, until every tile over that chunk has
been put, and are then written at once: each chunk once, whole.
"""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import torch
import xarray as xr

from ._levels_cpu import planar_levels
from .buffers import kept

DIMS = ("c", "y", "x")
MAX_LEVELS = 4  # coarser levels, at most
SIDE = 2**MAX_LEVELS  # the map's sides are multiples of this (pixnet.infer.dense.map_region): each level halves exactly


def scale_factors(shape: tuple[int, int, int]) -> list[int]:
    """The pyramid's factors for a map ``(C, h, w)``: halved down to ~64 pixels, at most 4 times."""
    return [2] * int(np.clip(np.log2(max(1, min(shape[1:]) / 64)), 0, MAX_LEVELS))


def level_shapes(shape: tuple[int, int, int], n: int) -> list[tuple[int, int, int]]:
    """Shapes of levels 0..n (each the one before, halved and trimmed, as xarray's coarsen with ``boundary="trim"``)."""
    return [(shape[0], shape[1] >> k, shape[2] >> k) for k in range(n + 1)]


def level_chunks(chunks: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """A level's chunks: the map's, at most the level's shape (as dask and spatialdata clip them)."""
    return tuple(max(1, min(c, s)) for c, s in zip(chunks, shape))


def can_coarsen(shape: tuple[int, int, int], core: int, n: int) -> bool:
    """Whether a map ``(C, h, w)`` in tiles of ``core`` pixels coarsens tile by tile into ``n`` coarser levels.

    Tiles must be whole pixels of every level, and each level exactly half the one before:
    xarray's coarsen trims an odd row or column at the start (``side="right"``), which would move
    the coarser levels' pixels across tiles.
    """
    return all(v % 2**n == 0 for v in (core, *shape[1:]))


def coarsen(tile: np.ndarray) -> np.ndarray:
    """``(C, h, w)`` -> ``(C, h // 2, w // 2)``: the mean of each 2 x 2 pixels, as spatialdata's pyramid.

    spatialdata's call is ``multiscale_spatial_image``'s (``Methods.XARRAY_COARSEN``, its default
    for images) on a dask array: numpy's ``nansum`` over the two pixel axes of each 2 x 2 block,
    over 4. Without NaN, even sides and float32 that is ``(a00 + a01) + (a10 + a11)`` over 4, to
    the bit (``tests/test_pyramid.py``), 15x faster; other tiles take the same sum over a reshaped
    view (float16), or xarray's own call (NaN, odd sides, other dtypes).
    """
    c, h, w = tile.shape
    if h % 2 or w % 2 or tile.dtype.kind != "f" or np.isnan(tile).any():
        x = xr.DataArray(da.from_array(tile, chunks=tile.shape), dims=DIMS)
        y = x.coarsen({"y": 2, "x": 2}, boundary="trim", side="right").mean().astype(tile.dtype)
        return np.asarray(y.data.compute(scheduler="synchronous"))
    four = np.asarray(4, tile.dtype)
    if tile.dtype != np.float32:
        return np.sum(tile.reshape(c, h // 2, 2, w // 2, 2), axis=(2, 4), dtype=tile.dtype) / four
    top = tile[:, 0::2, 0::2] + tile[:, 0::2, 1::2]
    top += tile[:, 1::2, 0::2] + tile[:, 1::2, 1::2]
    top /= four
    return top


class MapLevels:
    """The map's levels ``[(C, h, w), (C, h // 2, w // 2), ...]`` (numpy or zarr arrays) filled tile by tile.

    ``core``: the tiles' side in level-0 pixels (tile ``(i, j)`` starts at ``(i * core, j * core)``);
    it and the map's sides are multiples of ``2**(len(levels) - 1)`` (:func:`can_coarsen`). Every
    tile of the grid is put once, a tile without a map as None (it reads 0); a coarser level's
    chunk is written when the last tile over it is put.
    Safe to put from several threads when level 0's chunks do not straddle tiles.
    """

    def __init__(self, levels: list, core: int):
        n = len(levels) - 1
        if not can_coarsen(levels[0].shape, core, n):
            raise ValueError(
                f"a map {levels[0].shape} in tiles of {core} px does not halve into whole pixels {n} times."
            )
        self.levels, self.core = levels, core
        self.dtype = np.dtype(levels[0].dtype)
        _, h, w = levels[0].shape
        # a coarser level's rows wait a chunk at a time (a numpy level: the whole level is one "chunk")
        self._chunk = [tuple(getattr(a, "chunks", a.shape))[1:] for a in levels]
        self._waiting: dict[tuple, list] = {}  # (level, chunk row, chunk col) -> [buffer, tiles still to come]
        self._count: dict[tuple, int] = {}  # (level, chunk row, chunk col) -> tiles over the chunk
        for i in range(-(-h // core)):
            for j in range(-(-w // core)):
                for k, (rows, cols) in self._spans(i, j):
                    for key in self._chunks_over(k, rows, cols):
                        self._count[key] = self._count.get(key, 0) + 1
        self._lock = threading.Lock()
        self._local = threading.local()  # each putting thread's buffers for a tile's (C, h, w) levels

    def put(self, y: int, x: int, tile: np.ndarray | torch.Tensor | None) -> None:
        """Tile ``(C, th, tw)`` at level-0 pixel ``(y, x)`` (None: a tile without a map); its coarser levels.

        ``tile``: numpy, or a CPU tensor. A float32 tensor laid out channels-last (the network's map,
        ``(th, tw, C)`` in memory) is made planar and coarsened by compiled loops
        (:func:`pixnet.infer._levels_cpu.planar_levels`) into buffers kept for the next tile.
        """
        planar = None
        if isinstance(tile, torch.Tensor):
            planar = self._planar_levels(tile)
            tile = tile.contiguous().numpy() if planar is None else planar[0]
        if tile is not None:
            tile = np.ascontiguousarray(tile, dtype=self.dtype)
            self.levels[0][:, y : y + tile.shape[1], x : x + tile.shape[2]] = tile
        for k, (rows, cols) in self._spans(y // self.core, x // self.core):
            if planar is not None:
                tile = planar[k]
            elif tile is not None:
                tile = coarsen(tile)
            for key in self._chunks_over(k, rows, cols):
                self._add(key, rows, cols, tile)

    def _planar_levels(self, tile: torch.Tensor) -> list[np.ndarray] | None:
        """Every level of a float32 CPU tile laid out channels-last, planar; None for other tiles and for NaN.

        NaN (and +inf with -inf, whose sum is NaN) go to :func:`coarsen`, which leaves them to xarray.
        """
        hwc = tile.permute(1, 2, 0)
        if (self.dtype != np.float32 or tile.dtype != torch.float32 or tile.device.type != "cpu"
                or hwc.stride(2) != 1 or torch.isnan(hwc.sum())):  # fmt: skip  # a sum: ~6x faster than isnan
            return None
        c, h, w = tile.shape
        buffers = self._local.__dict__.setdefault("buffers", {})
        levels = [kept(buffers, k, (c, h >> k, w >> k)).numpy() for k in range(len(self.levels))]
        planar_levels(hwc.numpy(), levels)
        return levels

    def __setitem__(self, key: tuple[slice, slice, slice], tile: np.ndarray) -> None:
        """``da.store``'s writes: a block of the map (all its channels, one tile) at ``key``."""
        self.put(key[1].start, key[2].start, tile)

    def close(self) -> None:
        """Write the chunks still waiting (of tiles never put: they read 0)."""
        for key in list(self._waiting):
            self._write(key, self._waiting.pop(key)[0])

    def _spans(self, i: int, j: int):
        """``(k, (r0, r1), (c0, c1))``: the pixels of tile ``(i, j)`` at each coarser level (none when empty)."""
        _, h, w = self.levels[0].shape
        for k in range(1, len(self.levels)):
            rows = ((i * self.core) >> k, min((i + 1) * self.core, h) >> k)
            cols = ((j * self.core) >> k, min((j + 1) * self.core, w) >> k)
            if rows[1] <= rows[0] or cols[1] <= cols[0]:
                return  # and at every coarser level
            yield k, (rows, cols)

    def _chunks_over(self, k: int, rows, cols):
        ch, cw = self._chunk[k]
        for r in range(rows[0] // ch, (rows[1] - 1) // ch + 1):
            for q in range(cols[0] // cw, (cols[1] - 1) // cw + 1):
                yield k, r, q

    def _add(self, key, rows, cols, tile) -> None:
        k, r, q = key
        ch, cw = self._chunk[k]
        c, h, w = self.levels[k].shape
        r0, c0 = r * ch, q * cw
        with self._lock:
            entry = self._waiting.get(key)
            if entry is None:
                shape = (c, min(ch, h - r0), min(cw, w - c0))
                entry = self._waiting[key] = [np.zeros(shape, self.dtype), self._count[key]]
            if tile is not None:
                a, b = max(rows[0], r0), min(rows[1], r0 + ch)
                u, v = max(cols[0], c0), min(cols[1], c0 + cw)
                part = tile[:, a - rows[0] : b - rows[0], u - cols[0] : v - cols[0]]
                entry[0][:, a - r0 : b - r0, u - c0 : v - c0] = part
            entry[1] -= 1
            whole = entry[1] == 0
            if whole:
                del self._waiting[key]
        if whole:
            self._write(key, entry[0])

    def _write(self, key, buffer: np.ndarray) -> None:
        k, r, q = key
        ch, cw = self._chunk[k]
        self.levels[k][:, r * ch : r * ch + buffer.shape[1], q * cw : q * cw + buffer.shape[2]] = buffer
