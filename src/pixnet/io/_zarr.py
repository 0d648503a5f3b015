"""Open a SpatialData zarr store whose prediction tables may be larger than memory."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import spatialdata
import zarr
from spatialdata import SpatialData

IN_MEMORY_LIMIT = 2**30  # bytes of a table's dense X and layers above which they are read lazily


def read_zarr(store: str | Path, *, in_memory_limit: int = IN_MEMORY_LIMIT) -> SpatialData:
    """Open a SpatialData zarr store, reading tables too large for memory lazily.

    :func:`spatialdata.read_zarr` reads every table into memory; a store that holds a whole-slide
    2 µm prediction (millions of bins x 250 genes, for ``X`` and each layer) would not fit. Here a
    table whose dense ``X`` and layers take more than ``in_memory_limit`` bytes gets them as dask
    arrays read from the store (``obs``, ``var``, ``obsm`` and ``uns`` are read as usual); sparse
    matrices, such as measured counts, and every other element are read as spatialdata reads them.

    Parameters
    ----------
    store
        The ``.zarr`` folder (written by ``sdata.write`` or by pixnet into a backed sdata).
    in_memory_limit
        Bytes of dense ``X`` and layers above which a table is read lazily.

    Returns
    -------
    The SpatialData object, backed by ``store``.

    """
    store = Path(store).expanduser()
    if not (store / "zarr.json").is_file() and not (store / ".zgroup").is_file():
        raise FileNotFoundError(f"{store} is not a zarr store; write one with sdata.write('{store.name}').")
    tables = store / "tables"
    names = sorted(p.name for p in tables.iterdir() if p.is_dir()) if tables.is_dir() else []
    large = {n for n in names if _dense_bytes(zarr.open_group(str(tables / n), mode="r")) > in_memory_limit}
    if not large:
        return spatialdata.read_zarr(store)
    sdata = spatialdata.read_zarr(store, selection=("images", "labels", "points", "shapes"))
    for name in names:
        sdata.tables[name] = lazy_table(tables / name) if name in large else _fix_attrs(ad.read_zarr(tables / name))
    return sdata


def _dense_bytes(group: zarr.Group) -> int:
    """Bytes of the dense arrays among a stored AnnData's X and layers."""
    arrays = [group["X"]] if "X" in group else []
    if "layers" in group:
        arrays += [group["layers"][k] for k in group["layers"]]
    return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in arrays if isinstance(a, zarr.Array))


def lazy_table(path: str | Path) -> ad.AnnData:
    """A stored AnnData with its dense ``X`` and layers as dask arrays read from ``path``."""
    group = zarr.open_group(str(path), mode="r")
    parts = {k: ad.io.read_elem(group[k]) for k in ("obs", "var", "obsm", "uns") if k in group}
    x, layers = lazy_arrays(group)
    return _fix_attrs(ad.AnnData(X=x, layers=layers, **parts))


def lazy_arrays(group: zarr.Group) -> tuple:
    """A stored AnnData's ``X`` and layers: dense arrays as dask arrays read from the store, the rest in memory."""

    def read(elem):
        return ad.experimental.read_elem_lazy(elem) if isinstance(elem, zarr.Array) else ad.io.read_elem(elem)

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
