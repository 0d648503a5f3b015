"""The map tile by tile, each tile's bins aggregated while it is in memory: one pass over the slide.

Tiles (blocks of ``core`` map pixels, as :func:`pixnet.infer.dense.dense_map` cuts them) run in
row-major order. Each bin belongs to exactly one tile: the one holding the bottom-right corner
of its bounding box. Its footprint then lies in that tile's core, the last ``m`` rows of the
tile row above and the last ``m`` columns of the tile to its left, where ``m`` (map pixels) is
the widest footprint: the pass keeps those rows and columns (two strips of ``C x m x width``)
and sums each bin over exactly the map that :func:`~pixnet.infer.dense.aggregate_lazy` reads
from the stitched map, with the same area weights. Bins wider than a tile's core cannot be
placed so: :func:`footprint` says so and predict takes the map-then-aggregate path for them.

The image read and the bins' weights of the next tiles are prepared on a thread while the
network runs; what the caller does with each tile's sums (and core map) is its ``sink``.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy import sparse

from ..data import SlideImage
from ..geometry import Spots
from ..model import PixNet
from .dense import _splits, check_tiles, inference_net, tile_map, window_weights

logger = logging.getLogger(__name__)


def footprint(spots: Spots) -> int:
    """``m``: map pixels a bin's weights can span, at most (rows or columns)."""
    return int(np.ceil(2 * float(np.max(spots.extent(), initial=0.0)))) + 2


def assign(spots: Spots, shape: tuple[int, int], core: int) -> tuple[np.ndarray, np.ndarray]:
    """``(order, starts)``: spot indices grouped by tile (row-major) and where each tile's group starts.

    ``spots`` are in the map's pixels relative to the map's origin; ``shape`` is the map's ``(h, w)``.
    Tile ``t`` (``t = i * cols + j``) owns ``order[starts[t]:starts[t + 1]]``, in their table order.
    """
    rows, cols = -(-shape[0] // core), -(-shape[1] // core)
    e = spots.extent()
    bx = np.clip(np.floor((spots.centres[:, 0] + e) / core), 0, cols - 1).astype(np.int64)
    by = np.clip(np.floor((spots.centres[:, 1] + e) / core), 0, rows - 1).astype(np.int64)
    tile = by * cols + bx
    order = np.argsort(tile, kind="stable")
    starts = np.searchsorted(tile[order], np.arange(rows * cols + 1))
    return order.astype(np.int32) if len(order) < 2**31 else order, starts  # kept through the pass: half as big


def stream_tiles(
    model: PixNet,
    image: SlideImage,
    region: tuple[int, int, int, int],
    spots: Spots,
    *,
    tile_px: int,
    context_px: int,
    device: torch.device,
    busy: np.ndarray,
    mean: bool,
    supersample: int = 4,
):
    """Yield, tile by tile, ``(i, j, core, idx, sums)``.

    ``core``: the tile's map ``(C, h, w)`` (a float32 tensor on ``device``), None for a tile
    without bins (its map reads 0); ``idx``: the tile's spots (indices into ``spots``, which are in
    map pixels relative to ``region``'s origin); ``sums``: their sums (or means) ``(len(idx), C)``,
    float32 on ``device``. Every spot is in exactly one tile's ``idx``.
    """
    s, cfg = model.config.map_stride, model.config
    check_tiles(tile_px, context_px, s)
    y0, x0, h, w = region
    core, c = tile_px // s, context_px // s
    m = footprint(spots)
    if m > core:
        raise ValueError(f"spots span {m} map pixels, more than a tile's {core}: use the map-then-aggregate path.")
    if spots.polygons is not None and not isinstance(spots.polygons, np.ndarray):
        spots = Spots(spots.kind, spots.centres, spots.size, spots.angle, np.asarray(spots.polygons))
    order, starts = assign(spots, (h, w), core)
    ys, xs = np.cumsum((0, *_splits(h, core))), np.cumsum((0, *_splits(w, core)))
    n_rows, n_cols = len(ys) - 1, len(xs) - 1
    n_out = cfg.n_outputs
    net = inference_net(model, device)
    side = tile_px + 2 * context_px

    def prepare(i: int, j: int):
        """The tile's image (or None) and its spots' weights over its window; on the helper thread."""
        idx = order[starts[i * n_cols + j] : starts[i * n_cols + j + 1]]
        run = bool(busy[i, j]) or len(idx) > 0
        tile = None
        if run:
            tile = np.array(image.read((y0 + ys[i]) * s - context_px, (x0 + xs[j]) * s - context_px, side, side))
        weights = None
        if len(idx):
            shape = (m + ys[i + 1] - ys[i], m + xs[j + 1] - xs[j])
            weights = window_weights(spots.subset(idx), (xs[j] - m, ys[i] - m), shape, mean, supersample)
        return idx, tile, weights

    # The window is kept channels-last ((h, w, C) in memory), as the network's output is (channels_last):
    # its copy into the window and the weights' product read contiguous rows of C values, not a
    # transposed copy of the tile each. One buffer serves every tile (fresh pages cost a fault each).
    strip_prev = torch.zeros((m, w + m, n_out), device=device)  # bottom m rows of the tile row above; m columns of pad
    strip_next = torch.zeros_like(strip_prev)
    buf = torch.empty(((m + core) * (m + core) * n_out,), device=device)
    tiles = [(i, j) for i in range(n_rows) for j in range(n_cols)]
    with ThreadPoolExecutor(1) as pool:
        pending = [pool.submit(prepare, *t) for t in tiles[:2]]
        for k, (i, j) in enumerate(tiles):
            idx, tile, weights = pending.pop(0).result()
            if k + 2 < len(tiles):
                pending.append(pool.submit(prepare, *tiles[k + 2]))
            th, tw = ys[i + 1] - ys[i], xs[j + 1] - xs[j]
            if j == 0:
                left = torch.zeros((th, m, n_out), device=device)
            if tile is None and weights is None and th >= m and tw >= m:  # background: its map and halos read 0
                left = torch.zeros((th, m, n_out), device=device)
                strip_next[:, xs[j] + m : xs[j] + m + tw] = 0
                if j == n_cols - 1:
                    strip_prev, strip_next = strip_next, strip_prev
                yield i, j, None, idx, None
                continue
            out = None
            if tile is not None:
                out = tile_map(net, tile, device, c)[:, :th, :tw]  # (C, th, tw)
            window = buf[: (m + th) * (m + tw) * n_out].view(m + th, m + tw, n_out)
            window[:m] = strip_prev[:, xs[j] : xs[j] + m + tw]
            window[m:, :m] = left[:th]
            window[m:, m:] = out.permute(1, 2, 0) if out is not None else 0
            sums = _apply(weights, window) if weights is not None else None
            # what the next tiles read of this window: its last m columns (the tile to the right), its last
            # m rows (the tile row below); the window's edges are whole map columns and rows, halos included
            left = window[m:, tw:].clone()
            strip_next[:, xs[j] + m : xs[j] + m + tw] = window[th:, m:]
            if j == n_cols - 1:
                strip_prev, strip_next = strip_next, strip_prev
            yield i, j, out, idx, sums


def _apply(weights: sparse.csr_matrix, window: torch.Tensor) -> torch.Tensor:
    """``(n, C)`` sums of the window ``(h, w, C)`` (contiguous) under the weights, on the window's device."""
    h, w, c = window.shape
    if window.device.type == "cpu":  # the same sums, in the same order, as pixnet.infer.dense._apply's
        return torch.from_numpy(np.asarray(weights @ window.reshape(h * w, c).numpy(), np.float32))
    return _apply_torch(weights, window)


def _apply_torch(weights: sparse.csr_matrix, window: torch.Tensor) -> torch.Tensor:
    """:func:`_apply` by torch's sparse product, on any device (a GPU's; tested on the CPU against scipy's)."""
    h, w, c = window.shape
    wt = weights.astype(np.float32)
    with warnings.catch_warnings():  # torch's "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        t = torch.sparse_csr_tensor(torch.from_numpy(wt.indptr).long(), torch.from_numpy(wt.indices).long(),
                                    torch.from_numpy(wt.data), size=wt.shape, device=window.device)  # fmt: skip
    return (t @ window.reshape(h * w, c)).float()
