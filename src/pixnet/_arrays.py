"""Tables whose arrays were read lazily (dask) by :func:`pixnet.io.read_zarr`, in memory where needed whole."""

from __future__ import annotations

import dask.array as da


def in_memory(x):
    """``x`` in memory (numpy or scipy.sparse): a dask array is computed, anything else returned as it is."""
    return x.compute() if isinstance(x, da.Array) else x
