"""The paper's normalisation (each bin by its total, then log1p), shared by measurement and prediction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import anndata as ad
import numpy as np
from scipy import sparse

from .._arrays import in_memory, table_of_checked_names
from .._keys import UNS_KEY
from ..model.losses import log_normalize as _log_normalize


@dataclass(frozen=True)
class Normalization:
    """How counts become the values that are compared: ``log1p(counts / total * target_sum)``.

    ``total`` is the bin's count over *all* genes of the panel, not only the modelled ones,
    as :func:`scanpy.pp.normalize_total` computes it. Bins with no counts stay 0.
    """

    target_sum: float = 1e4
    log1p: bool = True

    def apply(self, counts: np.ndarray, totals: np.ndarray) -> np.ndarray:
        """Normalise dense ``counts`` (bins x genes) by ``totals`` (bins)."""
        return _log_normalize(counts, totals, self.target_sum, log1p=self.log1p).astype(np.float32)

    def to_dict(self) -> dict:
        """Plain form for ``uns`` and model configs."""
        return asdict(self)


def log_normalize(
    adata: ad.AnnData, *, genes: Sequence[str] | None = None, normalization: Normalization | None = None
) -> ad.AnnData:
    """A new AnnData of the normalised expression of ``genes`` (default: all), for comparison and training.

    ``X`` holds ``log1p(counts / total * target_sum)``, ``layers["counts"]`` the counts,
    ``obs["total_counts"]`` each bin's total over all genes, and ``uns["pixnet"]["normalization"]``
    the parameters, so that predictions and measurements are put in the same units.
    """
    norm = normalization or Normalization()
    x = in_memory(adata.X)
    totals = np.asarray(x.sum(axis=1)).ravel()
    idx = np.arange(adata.n_vars) if genes is None else adata.var_names.get_indexer(list(genes))
    if (idx < 0).any():
        missing = [g for g, i in zip(genes, idx) if i < 0]
        raise KeyError(f"Genes not in the table: {missing[:10]}.")
    sub = x[:, idx]
    counts = sub.toarray() if sparse.issparse(sub) else np.asarray(sub)
    out = table_of_checked_names(
        X=norm.apply(counts, totals),
        obs=adata.obs.copy(),
        var=adata.var.iloc[idx].copy(),
        obsm=dict(adata.obsm),
    )
    out.layers["counts"] = counts.astype(np.float32)
    out.obs["total_counts"] = totals.astype(np.float32)
    out.uns[UNS_KEY] = {**dict(adata.uns.get(UNS_KEY, {})), "normalization": norm.to_dict()}
    return out
