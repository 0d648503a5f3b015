"""Choose the genes a model predicts."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from .._arrays import in_memory

logger = logging.getLogger(__name__)


def select_genes(
    adata: ad.AnnData | Sequence[ad.AnnData], *, n_top: int = 250, genes: Sequence[str] | None = None
) -> list[str]:
    """The genes to model: ``genes`` as given (checked), or the ``n_top`` genes by mean count.

    The paper models the 250 genes with the highest mean expression; ties keep the table's order.
    Several tables (slides) that measured different genes are modelled on the genes they share,
    ranked by their mean over all bins of all tables.

    Parameters
    ----------
    adata
        Counts of bins or spots (raw counts in ``X``), or a list of such tables.
    n_top
        How many genes to take by mean count, when ``genes`` is not given.
    genes
        An explicit panel; every gene must be in ``adata.var_names``.

    Returns
    -------
    Gene names, in the order used for the model's output channels.

    Raises
    ------
    KeyError
        If a gene of ``genes`` is missing from a table.
    ValueError
        If the tables share fewer genes than ``n_top`` (and fewer than every table has).

    """
    if not isinstance(adata, ad.AnnData):
        return _select_shared(list(adata), n_top=n_top, genes=genes)
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


def _select_shared(tables: list[ad.AnnData], *, n_top: int, genes: Sequence[str] | None) -> list[str]:
    """:func:`select_genes` over several tables: the genes all of them measured."""
    if not tables:
        raise ValueError("No table to choose genes from.")
    if len(tables) == 1:
        return select_genes(tables[0], n_top=n_top, genes=genes)
    if genes is not None:
        for k, t in enumerate(tables):
            missing = [g for g in genes if g not in t.var_names]
            if missing:
                raise KeyError(
                    f"Slide {k} lacks {len(missing)} of the genes asked for: {missing[:10]}. "
                    "Pass genes that every slide measured."
                )
        return select_genes(tables[0], n_top=n_top, genes=genes)
    shared = tables[0].var_names
    for t in tables[1:]:
        shared = shared.intersection(t.var_names, sort=False)
    fewest = min(t.n_vars for t in tables)
    if len(shared) < min(n_top, fewest):
        sizes = ", ".join(str(t.n_vars) for t in tables)
        raise ValueError(
            f"The {len(tables)} slides share only {len(shared)} genes (they have {sizes}); {n_top} were asked for. "
            f"Pass n_genes={len(shared)} or fewer, genes=[...] from the shared ones, or check that the tables use "
            "the same gene names (symbols vs Ensembl ids)."
        )
    if len(shared) < fewest:
        logger.info("the %d slides share %d genes (of %s); modelling the shared ones", len(tables), len(shared),
                    ", ".join(str(t.n_vars) for t in tables))  # fmt: skip
    n = sum(t.n_obs for t in tables)
    if n == 0:
        raise ValueError("The tables have no bins; there is nothing to choose genes from.")
    sums = sum(np.asarray(in_memory(t[:, shared].X).sum(axis=0)).ravel() for t in tables)
    order = np.argsort(-np.asarray(sums) / n, kind="stable")[: min(n_top, len(shared))]
    return pd.Index(shared)[order].tolist()
