"""What a table of predictions holds: X (the expected measurement), the counts and lognorm layers."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np

from .._keys import PREDICTED_TOTAL
from ..model.config import ModelConfig
from ..pp import Normalization, expected_log_normalized
from .mapimage import IN_MEMORY_LIMIT
from .progress import compute

TABLE_IN_MEMORY = 2**30  # bytes of X and layers above which a backed sdata's table stays lazy, read from its store
# A lazy table's chunks, the same in dask and in zarr (a dask block written over parts of several
# zarr chunks makes zarr read, decode and rewrite each of them, under one lock): 2 MB each; one
# gene's values are in 1/16 of them, a row block's (all genes) in one task's 33 MB.
TABLE_CHUNK = (32768, 16)


def expression_arrays(lam: da.Array, cfg: ModelConfig, layers, *, scratch: Path | None, progress: bool) -> tuple:
    """X, layers and obs columns from the spots' aggregates ``(n, C)``.

    They are computed here when they fit in memory. Otherwise they stay lazy: with a backed
    sdata the aggregates are computed once into ``scratch`` (so that X and each layer, written
    one after the other, do not aggregate again) and the table is written chunk by chunk.
    """
    n_genes = len(cfg.genes)
    size = lam.shape[0] * n_genes * 4 * (1 + len(layers))
    small = size < (TABLE_IN_MEMORY if scratch is not None else IN_MEMORY_LIMIT)
    if small:
        lam = compute(lam, "aggregating", progress)
    elif scratch is not None:
        compute(lam.rechunk(TABLE_CHUNK).to_zarr(str(scratch / "aggregates.zarr"), compute=False), "aggregating",
                progress)  # fmt: skip
        lam = da.from_zarr(str(scratch / "aggregates.zarr"))
    if cfg.semantics != "density":
        return lam, {"layers": {}}
    # in float64, so that a lazy table's totals (summed over chunks of channels) equal an in-memory one's
    genes, total = lam[:, :n_genes], compute(lam.sum(axis=1, dtype=np.float64), "totals", progress)
    x = _blockwise(expected_log_normalized, genes, total, cfg.target_sum, small)
    out = {"layers": {}, PREDICTED_TOTAL: np.asarray(total, np.float32)}
    if "counts" in layers:
        out["layers"]["counts"] = genes
    if "lognorm" in layers:
        out["layers"]["lognorm"] = _blockwise(_lognorm, genes, total, cfg.target_sum, small)
    return x, out


def _lognorm(genes, total, target_sum: float):
    return Normalization(target_sum=target_sum).apply(genes, total)


def _blockwise(fn, genes, total: np.ndarray, target_sum: float, small: bool):
    """``fn`` of every bin's genes and total; lazily for a stored table, a row block at a time, in its chunks."""
    if small:
        return fn(genes, total, target_sum=target_sum)
    rows = genes.rechunk((TABLE_CHUNK[0], -1))  # the expectation's per-bin part is computed once for all genes
    totals = da.from_array(total[:, None], chunks=(rows.chunks[0], 1))
    out = da.map_blocks(lambda g, t: fn(g, t[:, 0], target_sum=target_sum), rows, totals, dtype=np.float32)
    return out.rechunk(genes.chunks)
