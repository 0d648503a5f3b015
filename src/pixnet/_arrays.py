"""Tables: arrays read lazily (dask) by :func:`pixnet.io.read_zarr` in memory where needed whole; tables made anew."""

from __future__ import annotations

import anndata as ad
import dask.array as da


def in_memory(x):
    """``x`` in memory (numpy or scipy.sparse): a dask array is computed, anything else returned as it is."""
    return x.compute() if isinstance(x, da.Array) else x


def table_of_checked_names(**parts) -> ad.AnnData:
    """``anndata.AnnData(**parts)`` whose obs names come from a table anndata has checked, or are unique as made.

    anndata checks that the names are unique on every ``AnnData(...)`` (a fresh hash table: 15 s
    for a whole slide's 8.2M 2 um bins); a table made from another's names need not pay it again.
    """
    with ad.settings.override(check_uniqueness=False):
        return ad.AnnData(**parts)
