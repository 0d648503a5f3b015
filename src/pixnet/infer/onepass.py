"""Predict in one pass over the tiles: the network, the bins' sums, X and the layers, the map, the writes.

:func:`one_pass` drives :func:`pixnet.infer.stream.stream_tiles` and hands each tile's results to
a :class:`pixnet.infer.sink.Sink`: the rows' ``X`` and layers are computed with torch on the
network's device and written as soon as a block of rows is whole, the map (when asked for) is
written tile by tile, and nothing is read back to be aggregated. Its values are those of the
map-then-aggregate path (:func:`pixnet.infer.dense.aggregate_lazy` on the stored map, then
:func:`pixnet.infer.expression.expression_arrays`), which predict keeps for a reused map, a
dask.distributed cluster and bins wider than a tile (``tests/test_stream.py`` compares them).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._keys import PREDICTED_TOTAL
from .._memory import resident
from ..data import SlideImage
from ..geometry import Spots
from ..model import PixNet
from . import expression
from .chunklinks import forget, from_scratch
from .dense import _splits
from .expect import outputs
from .mapimage import IN_MEMORY_LIMIT, check_map_size, map_chunks, publish_map, scratch_levels
from .progress import describe
from .pyramid import MapLevels
from .scratch import scratch_folder
from .sink import Sink
from .stream import footprint, stream_tiles

logger = logging.getLogger(__name__)
MAP_DTYPES = {True: np.float32, "float32": np.float32, "float16": np.float16}


def can_stream(spots: Spots, core: int, *, n_genes: int, n_layers: int, backed: bool) -> bool:
    """Whether :func:`one_pass` can predict these spots (map pixels): each fits in a tile, the table in its place."""
    size = len(spots) * n_genes * 4 * (1 + n_layers)
    return footprint(spots) <= core and (backed or size < IN_MEMORY_LIMIT)


def one_pass(
    sdata,
    model: PixNet,
    work: SlideImage,
    region: tuple[int, int, int, int],
    spots: Spots,
    busy: np.ndarray,
    *,
    tile_px: int,
    context_px: int,
    device: torch.device,
    layers,
    scratch: Path | None,
    map_name: str | None,
    map_dtype,
    f_map: float,
    cs: str,
    progress: bool,
) -> tuple:
    """``(X, extra)`` as :func:`pixnet.infer.expression.expression_arrays` gives them; writes the map if ``map_name``.

    ``spots`` are in map pixels relative to ``region``'s origin. ``X`` and the layers are numpy
    arrays, or, with a backed sdata (``scratch`` given), dask arrays read from zarr arrays in
    ``scratch`` (chunks :data:`~pixnet.infer.expression.TABLE_CHUNK`), whose chunk files the table's
    write links rather than copies (:mod:`pixnet.infer.chunklinks`).
    """
    cfg = model.config
    n, n_genes, c_out = len(spots), len(cfg.genes), cfg.n_outputs
    density = cfg.semantics == "density"
    layers = tuple(layers) if density else ()
    widths = {"X": n_genes if density else c_out, **({"total": 0} if density else {}), **dict.fromkeys(layers, n_genes)}
    # With a backed sdata the rows go to scratch arrays as the pass makes them (the page cache, not this process's
    # memory: the 8 um table's X, 0.5 GB for a whole slide, used to grow beside the network's working set), and the
    # table's write links their chunk files (pixnet.infer.store reads a table under TABLE_IN_MEMORY back after it)
    stored = scratch is not None
    rows, cols = expression.TABLE_CHUNK

    buffers: dict = {}  # X's and lognorm's, reused block after block (the writer thread calls make, one at a time)

    def make(lam: torch.Tensor) -> dict:
        return outputs(lam, n_genes=n_genes, target_sum=cfg.target_sum, density=density, layers=layers, into=buffers)

    core = tile_px // cfg.map_stride
    h, w = region[2], region[3]
    map_dir = map_levels = None
    if map_name is not None:
        dtype = MAP_DTYPES[map_dtype]
        chunks = map_chunks(((c_out,), _splits(h, core), _splits(w, core)), c_out)
        if sdata.is_backed():  # its pyramid made in the pass too (pixnet.infer.pyramid)
            map_dir = scratch_folder(Path(sdata.path).parent, map_name)
            map_levels = MapLevels(scratch_levels(map_dir, (c_out, h, w), chunks, dtype, core), core)
        else:
            check_map_size(c_out * h * w * np.dtype(dtype).itemsize)
            map_levels = MapLevels([np.zeros((c_out, h, w), dtype)], core)
    try:
        sink = Sink(n, widths, make, rows=rows, cols=cols, device=device, store=scratch if stored else None,
                    map_levels=map_levels)  # fmt: skip
        computed = np.zeros_like(busy)
        tiles = stream_tiles(model, work, region, spots, tile_px=tile_px, context_px=context_px, device=device,
                             busy=busy, mean=cfg.semantics == "mean")  # fmt: skip
        try:
            with resident(), torch.no_grad():  # the network's activations reused tile after tile (not faulted in)
                bar = tqdm(tiles, total=busy.size, desc=describe("predicting"), disable=not progress, leave=False)
                for i, j, core_map, idx, sums in bar:
                    computed[i, j] = core_map is not None
                    sink.put_map(i * core, j * core, core_map)
                    if sums is not None:
                        sink.put_rows(idx, sums)
            out = sink.close()
        except BaseException:
            sink.abort()
            raise
        if map_name is not None:
            levels = out["map"].levels
            if map_dir is not None:
                levels = [from_scratch(a) for a in levels]  # their chunk files are linked
            publish_map(sdata, map_name, levels, model, region, f_map, cs, computed=(computed, core),
                        tiling=(tile_px, context_px), chunks=chunks)  # fmt: skip
    finally:
        if map_dir is not None:
            forget(map_dir)
            shutil.rmtree(map_dir, ignore_errors=True)

    def table_array(a):
        return from_scratch(a) if stored else a

    x = table_array(out["X"])
    extra = {"layers": {k: table_array(out[k]) for k in layers}}
    if density:
        extra[PREDICTED_TOTAL] = np.asarray(out["total"][:], np.float32)
    return x, extra
