"""Open a SpatialData zarr store whose prediction tables may be larger than memory."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import spatialdata
import zarr
from spatialdata import SpatialData

IN_MEMORY_LIMIT = 2**30  # bytes of a table's X and layers above which they are read lazily
ROWS_PER_CHUNK = 65536  # rows of the dask chunks of a lazily read sparse matrix


def read_zarr(store: str | Path, *, in_memory_limit: int = IN_MEMORY_LIMIT) -> SpatialData:
    """Open a SpatialData zarr store, reading tables too large for memory lazily.

    :func:`spatialdata.read_zarr` reads every table into memory; a store that holds a whole-slide
    2 µm prediction (millions of bins x 250 genes, for ``X`` and each layer) would not fit. Here a
    table whose ``X`` and layers take more than ``in_memory_limit`` bytes gets them as dask arrays
    read from the store: dense ones (predictions) and CSR ones (the measured 2 µm counts of a
    whole slide, ~0.7 GB), in chunks of 65,536 rows. ``obs``, ``var``, ``obsm`` and ``uns``, and
    every other element, are read as spatialdata reads them. :func:`pixnet.tl.evaluate` streams
    such tables block by block; pixnet's other functions read them into memory when they need
    them whole.

    Parameters
    ----------
    store
        The ``.zarr`` folder (written by ``sdata.write`` or by pixnet into a backed sdata).
    in_memory_limit
        Bytes of ``X`` and layers above which a table is read lazily.

    Returns
    -------
    The SpatialData object, backed by ``store``.

    """
    store = Path(store).expanduser()
    if not (store / "zarr.json").is_file() and not (store / ".zgroup").is_file():
        raise FileNotFoundError(f"{store} is not a zarr store; write one with sdata.write('{store.name}').")
    tables = store / "tables"
    names = sorted(p.name for p in tables.iterdir() if p.is_dir()) if tables.is_dir() else []
    large = {n for n in names if _array_bytes(zarr.open_group(str(tables / n), mode="r")) > in_memory_limit}
    if not large:
        return spatialdata.read_zarr(store)
    sdata = spatialdata.read_zarr(store, selection=("images", "labels", "points", "shapes"))
    for name in names:
        sdata.tables[name] = lazy_table(tables / name) if name in large else _fix_attrs(ad.read_zarr(tables / name))
    return sdata


def _array_bytes(group: zarr.Group) -> int:
    """Bytes of a stored AnnData's X and layers (the values and indices of sparse ones)."""
    elems = [group["X"]] if "X" in group else []
    if "layers" in group:
        elems += [group["layers"][k] for k in group["layers"]]
    total = 0
    for e in elems:
        for a in [e] if isinstance(e, zarr.Array) else [e[k] for k in ("data", "indices") if k in e]:
            total += int(np.prod(a.shape)) * a.dtype.itemsize
    return total


def lazy_table(path: str | Path) -> ad.AnnData:
    """A stored AnnData with its ``X`` and layers as dask arrays read from ``path``."""
    group = zarr.open_group(str(path), mode="r")
    parts = {k: ad.io.read_elem(group[k]) for k in ("obs", "var", "obsm", "uns") if k in group}
    x, layers = lazy_arrays(group)
    return _fix_attrs(ad.AnnData(X=x, layers=layers, **parts))


def lazy_arrays(group: zarr.Group) -> tuple:
    """A stored AnnData's ``X`` and layers: dense and CSR ones as dask arrays read from the store, others in memory."""

    def read(elem):
        if isinstance(elem, zarr.Array):
            return ad.experimental.read_elem_lazy(elem)
        if elem.attrs.get("encoding-type") == "csr_matrix":
            return ad.experimental.read_elem_lazy(elem, chunks=(ROWS_PER_CHUNK, -1))
        return ad.io.read_elem(elem)

    layers = {k: read(group["layers"][k]) for k in group["layers"]} if "layers" in group else {}
    return (read(group["X"]) if "X" in group else None), layers


def _fix_attrs(table: ad.AnnData) -> ad.AnnData:
    """As spatialdata's reader does: table attributes omitted when None, ``region`` as a list."""
    attrs = table.uns.get("spatialdata_attrs")
    if attrs is not None:
        for key in ("region", "region_key", "instance_key"):
            attrs.setdefault(key, None)
        if isinstance(attrs["region"], np.ndarray):
            attrs["region"] = attrs["region"].tolist()
    return table
