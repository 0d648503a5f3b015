"""The dense map of a slide as a lazy dask array, and its aggregation into spots, chunk by chunk.

The map is cut into blocks of ``tile_px`` input pixels; each block runs the network on the
block plus ``context_px`` of image around it and keeps the centre (U-Net's overlap-tile
strategy), so no map pixel is predicted near a tile border and blocks join without seams.
Memory is bounded by a block; the same graph runs on a dask.distributed cluster.
"""

from __future__ import annotations

import copy
import threading

import dask
import dask.array as da
import numpy as np
import torch
from scipy import sparse

from .._memory import trim
from ..data import SlideImage
from ..geometry import Spots
from ..model import PixNet, forward_cropped
from ._cover_cpu import spot_weights as compiled_weights
from .pyramid import SIDE


def map_region(
    spots_map: Spots, image_shape: tuple[int, int], stride: int, margin: int = 2
) -> tuple[int, int, int, int]:
    """``(y0, x0, h, w)`` in map pixels covering every spot plus ``margin``, within the image where it can.

    ``h`` and ``w`` are multiples of :data:`pixnet.infer.pyramid.SIDE` (the map's pyramid then
    halves exactly, level by level), grown past the spots, then past the image's far edge only
    when the image is smaller.
    """
    if len(spots_map) == 0:
        raise ValueError("There are no spots to predict into.")
    ext = spots_map.extent()[:, None]
    lo = np.floor((spots_map.centres - ext).min(0)).astype(int) - margin
    hi = np.ceil((spots_map.centres + ext).max(0)).astype(int) + margin
    limit = np.array([image_shape[1], image_shape[0]]) // stride + 1
    lo, hi = np.maximum(lo, 0), np.minimum(hi, limit)
    if (hi <= lo).any():
        raise ValueError("The spots to predict lie outside the image; check that they share its coordinate system.")
    size = -(-(hi - lo) // SIDE) * SIDE
    lo = np.maximum(np.minimum(lo, limit - size), 0)
    return int(lo[1]), int(lo[0]), int(size[1]), int(size[0])


def check_tiles(tile_px, context_px, map_stride: int) -> None:
    """Refuse a tile side or context (model input pixels) the network cannot cut a map from exactly.

    Both are whole numbers, multiples of 32 (the encoder's coarsest stride) and of the model's
    ``map_stride`` (else the map's pixels shift with the context); the side is at least 32, the context 0 or more.
    """

    def whole(v) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if not (whole(tile_px) and whole(context_px)) or tile_px < 32 or context_px < 0:
        raise ValueError(
            f"tile_px must be a whole number >= 32 and context_px one >= 0 (got {tile_px!r}, {context_px!r})."
        )
    if tile_px % 32 or context_px % 32 or tile_px % map_stride or context_px % map_stride:
        raise ValueError(
            f"tile_px and context_px must be multiples of 32 and of the model's map_stride ({map_stride}) "
            f"(got {tile_px}, {context_px})."
        )


def dense_map(
    model: PixNet,
    image: SlideImage,
    region: tuple[int, int, int, int],
    *,
    tile_px: int,
    context_px: int,
    device: torch.device,
    busy: np.ndarray | None = None,
) -> da.Array:
    """The map over ``region`` (map pixels), ``(C, h, w)`` float32, one dask block per tile.

    Blocks where ``busy`` (see :func:`occupied_blocks`) is False are not computed: they read 0.
    """
    s = model.config.map_stride
    check_tiles(tile_px, context_px, s)
    y0, x0, h, w = region
    core = tile_px // s
    chunks = ((model.config.n_outputs,), _splits(h, core), _splits(w, core))
    net = inference_net(model, device)
    n_out = model.config.n_outputs

    def block(block_info=None) -> np.ndarray:
        (_, _), (by0, by1), (bx0, bx1) = block_info[None]["array-location"]
        if busy is not None and not busy[block_info[None]["chunk-location"][1:]]:
            return np.zeros((n_out, by1 - by0, bx1 - bx0), np.float32)
        iy, ix = (y0 + by0) * s - context_px, (x0 + bx0) * s - context_px
        tile = image.read(iy, ix, tile_px + 2 * context_px, tile_px + 2 * context_px)  # (T, T, 3) uint8
        out = tile_map(net, tile, device, context_px // s).cpu().numpy()  # (C, tile_px / s, tile_px / s)
        return np.ascontiguousarray(out[:, : by1 - by0, : bx1 - bx0])

    return da.map_blocks(block, chunks=chunks, dtype=np.float32, meta=np.zeros((0, 0, 0), np.float32))


_FORWARD = threading.Lock()


def inference_net(model: PixNet, device: torch.device) -> torch.nn.Module:
    """A copy of ``model``'s network on ``device``, in eval mode and channels-last; the user's model is left as it is.

    Channels-last is mkldnn's and cuDNN's fast convolution layout (1.5x on CPU).
    """
    return copy.deepcopy(model.module).to(device, memory_format=torch.channels_last).eval()


def tile_map(net: torch.nn.Module, tile: np.ndarray, device: torch.device, crop: int) -> torch.Tensor:
    """One ``(T, T, 3)`` uint8 tile through the network: ``(C, T / s - 2 crop, T / s - 2 crop)`` float32 on its device.

    The context's ``crop`` map pixels on each side are left out: the decoder and head run only on the core.

    One tile at a time per process: torch already spreads a forward over every core (or the
    GPU), so concurrent forwards from dask's threads only oversubscribe the cores and multiply
    the activation memory; reading and writing tiles still overlap with it.
    """
    x = torch.from_numpy(np.require(tile, requirements="W")).to(device).permute(2, 0, 1)[None].float() / 255.0
    x = x.contiguous(memory_format=torch.channels_last)  # (1, 3, T, T)
    with _FORWARD, torch.inference_mode():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = forward_cropped(net, x, crop)[0].float()
        trim()  # the activations were freed in this thread's arena: give them back before the next tile
    return out


def occupied_blocks(spots: Spots, region: tuple[int, int, int, int], core: int) -> np.ndarray:
    """``(rows, cols)`` of map blocks of side ``core`` over ``region``: True where a spot's bounding box reaches."""
    y0, x0, h, w = region
    n = np.array([-(-w // core), -(-h // core)])  # blocks along x, y
    e = spots.extent()[:, None]
    lo = np.clip(np.floor((spots.centres - e - (x0, y0)) / core).astype(np.int64), 0, n - 1)
    hi = np.clip(np.floor((spots.centres + e - (x0, y0)) / core).astype(np.int64), 0, n - 1)
    busy = np.zeros((n[1], n[0]), bool)
    span = int((hi - lo).max(initial=0))
    for dy in range(span + 1):  # spots are smaller than a block: span is 1, rarely more
        for dx in range(span + 1):
            busy[np.minimum(lo[:, 1] + dy, hi[:, 1]), np.minimum(lo[:, 0] + dx, hi[:, 0])] = True
    return busy


def _splits(n: int, size: int) -> tuple[int, ...]:
    return tuple([size] * (n // size) + ([n % size] if n % size else []))


def aggregate_lazy(dmap: da.Array, spots: Spots, *, mean: bool, supersample: int = 4, chunk: int = 65536) -> da.Array:
    """``(n, C)`` sums (or means) of ``dmap`` over ``spots`` (in the map's pixels), lazily, chunk by chunk.

    Spots are processed in a spatially coherent order (as given when already sorted by row,
    as Visium HD tables are) so each chunk reads one strip of the map. A strip's area weights
    are computed once and applied to the map's channel groups one at a time: a task holds a
    few channels of the strip, not all of them (250 genes x a whole-slide strip is ~100 MB).
    """
    n, c = len(spots), dmap.shape[0]
    order = _coherent_order(spots.centres)
    ext = spots.extent()
    groups = _channel_groups(dmap)
    parts = []
    for start in range(0, n, chunk):
        # a slice keeps views of the spots in the graph, not copies (8M bins of 2 um: 200 MB a copy)
        idx = order[start : start + chunk] if order is not None else slice(start, min(n, start + chunk))
        sub = spots.subset(idx)
        e = ext[idx][:, None]
        lo = np.maximum(np.floor((sub.centres - e).min(0)).astype(int) - 1, 0)
        hi = np.minimum(np.ceil((sub.centres + e).max(0)).astype(int) + 2, (dmap.shape[2], dmap.shape[1]))
        shape = (int(hi[1] - lo[1]), int(hi[0] - lo[0]))
        weights = dask.delayed(window_weights)(sub, tuple(lo), shape, mean, supersample)
        window = dmap[:, lo[1] : hi[1], lo[0] : hi[0]]
        cols = [
            da.from_delayed(dask.delayed(_apply)(weights, window[c0:c1]), shape=(len(sub), c1 - c0), dtype=np.float32)
            for c0, c1 in groups
        ]
        parts.append(da.concatenate(cols, axis=1))
    out = da.concatenate(parts) if parts else da.zeros((0, c), dtype=np.float32)
    if order is not None:
        out = out[np.argsort(order)]
    return out


def _channel_groups(dmap: da.Array, most: int = 16) -> list[tuple[int, int]]:
    """Channel ranges that follow the map's chunks, at most ``most`` channels each."""
    bounds = np.cumsum((0, *dmap.chunks[0]))
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        out += [(int(s), int(min(s + most, b))) for s in range(a, b, most)]
    return out


def _coherent_order(centres: np.ndarray, band: float = 64.0) -> np.ndarray | None:
    """None if spots already come in horizontal bands; else a band-major order."""
    key = np.floor(centres[:, 1] / band)
    if len(key) < 2 or (np.diff(key) >= 0).all():
        return None
    return np.lexsort((centres[:, 0], key))


def window_weights(spots: Spots, origin, shape: tuple[int, int], mean: bool, supersample: int) -> sparse.csr_matrix:
    """``(n, h * w)`` area weights of the spots over the window at ``origin`` (map pixels, ``(x, y)``).

    Rows are divided by the spot's area for means. A window may reach beyond the map's top and
    left edge (negative ``origin``, as the one pass's windows do): pixels there get no weight.
    """
    s, p, wt = compiled_weights(spots.scaled(1.0, origin), shape, supersample=supersample)
    iy, ix = np.divmod(p, shape[1])
    keep = (iy + origin[1] >= 0) & (ix + origin[0] >= 0)
    weights = sparse.csr_matrix((wt[keep], (s[keep], p[keep])), shape=(len(spots), shape[0] * shape[1]))
    if mean:
        area = np.asarray(weights.sum(1)).ravel()
        weights = sparse.diags(1.0 / np.maximum(area, 1e-12)).astype(np.float32) @ weights
    return weights


def _apply(weights: sparse.csr_matrix, window: np.ndarray) -> np.ndarray:
    c, h, w = window.shape
    return np.asarray(weights @ window.reshape(c, h * w).T, np.float32)  # (n, c)
