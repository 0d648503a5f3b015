"""Choose the genes a model predicts."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np

from .._arrays import in_memory


def select_genes(adata: ad.AnnData, *, n_top: int = 250, genes: Sequence[str] | None = None) -> list[str]:
    """The genes to model: ``genes`` as given (checked), or the ``n_top`` genes by mean count.

    The paper models the 250 genes with the highest mean expression; ties keep the table's order.

    Parameters
    ----------
    adata
        Counts of bins or spots (raw counts in ``X``).
    n_top
        How many genes to take by mean count, when ``genes`` is not given.
    genes
        An explicit panel; every gene must be in ``adata.var_names``.

    Returns
    -------
    Gene names, in the order used for the model's output channels.

    """
    if genes is not None:
        genes = [str(g) for g in genes]
        if not genes:
            raise ValueError("genes is empty; pass at least one gene name or leave genes=None to take the top genes.")
        missing = [g for g in genes if g not in adata.var_names]
        if missing:
            raise KeyError(
                f"{len(missing)} genes are not in the table: {missing[:10]}. "
                "Check spelling (var_names are gene symbols)."
            )
        if len(set(genes)) != len(genes):
            raise ValueError("genes lists some names twice; pass each gene once.")
        return genes
    if n_top < 1:
        raise ValueError(f"n_top must be at least 1, got {n_top}.")
    if adata.n_obs == 0:
        raise ValueError("The table has no bins; there is nothing to choose genes from.")
    mean = np.asarray(in_memory(adata.X).mean(axis=0)).ravel()
    order = np.argsort(-mean, kind="stable")[: min(n_top, adata.n_vars)]
    return adata.var_names[order].tolist()
