"""Write elements into a SpatialData object, atomically into its zarr store when it is backed."""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import dask.array as da
import numpy as np
from anndata import AnnData
from spatialdata import SpatialData
from spatialdata.models import TableModel

from ..io._zarr import lazy_arrays
from . import expression
from .chunklinks import chunks_of, forget, layout_of, link_chunks
from .progress import compute
from .scratch import scratch_folder

ELEMENT_KINDS = {"labels": "labels", "shapes": "shapes"}
STRING_SLICE = 2**18  # obs names written at a time (a few MB): zarr encodes a string array whole otherwise


@contextlib.contextmanager
def scratch_dir(sdata: SpatialData):
    """A temporary folder beside a backed sdata's store (same disk, removed after), or None if not backed."""
    if not sdata.is_backed():
        yield None
        return
    path = scratch_folder(Path(sdata.path).parent, "scratch")
    try:
        yield path
    finally:
        forget(path)
        shutil.rmtree(path, ignore_errors=True)


def check_store(sdata: SpatialData) -> None:
    """Refuse a backed sdata whose store pixnet cannot write into: one in zarr format 2 (older spatialdata).

    pixnet writes its elements as zarr v3 (scratch chunk files linked into them): in a v2 store
    readers would not see them, and the prediction would be lost without a word.
    """
    if not sdata.is_backed():
        return
    import zarr

    path = Path(sdata.path)
    try:
        fmt = zarr.open_group(str(path), mode="r").metadata.zarr_format
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise FileNotFoundError(
            f"The store this SpatialData is backed by, {path}, is gone (moved or deleted): its elements read from it "
            "lazily. Read the slide from where the store is now: sdata = pixnet.io.read_zarr(new_path)."
        ) from None
    if fmt != 3:
        raise ValueError(
            f"{path} is a zarr v{fmt} store (an older spatialdata's format); pixnet writes its predictions as zarr v3, "
            f"which readers of a v{fmt} store would not see. Write the slide to a new store first: "
            "sdata.write('slide_v3.zarr'); sdata = pixnet.io.read_zarr('slide_v3.zarr')."
        )


def store_elements(sdata: SpatialData, names: dict, geometry, table, kind: str, progress: bool):
    """Add geometry and table to ``sdata``; write them to its store when it is backed.

    A table written from dask arrays (the one pass's scratch arrays, or a large prediction) is then
    read from the store: whole, when its ``X`` and layers take less than
    :data:`pixnet.infer.expression.TABLE_IN_MEMORY`; lazily otherwise.
    """
    replace_element(sdata, names["geometry"], geometry, kind, consolidate=False)  # the table's write consolidates
    replace_element(sdata, names["table"], table, "tables")
    table = sdata.tables[names["table"]]
    if sdata.is_backed() and isinstance(table.X, da.Array):  # read from the store, not from the scratch
        import zarr

        group = zarr.open_group(str(Path(sdata.path) / "tables" / names["table"]), mode="r")
        arrays = [group["X"], *(group["layers"][k] for k in table.layers)]
        if sum(a.nbytes for a in arrays) < expression.TABLE_IN_MEMORY:  # written once (its chunks linked), then loaded
            table.X = arrays[0][:]
            for k, a in zip(table.layers, arrays[1:]):
                table.layers[k] = a[:]
            return table
        table.X, layers = lazy_arrays(group)
        for k, v in layers.items():
            table.layers[k] = v
    return table


def replace_element(sdata: SpatialData, name: str, element, kind: str, *, consolidate: bool = True,
                    after: Callable[[Path], None] | None = None) -> None:  # fmt: skip
    """Put ``element`` in ``sdata`` under ``name``; in a backed store, atomically.

    The element is written whole beside the store, then moved into it with one directory rename:
    a process killed at any moment leaves the store readable, with the previous version of the
    element or the new one. ``consolidate``: update the store's consolidated metadata after.
    ``after``: called with the written element's folder before it is moved into the store.
    """
    if name in sdata:
        del sdata[name]
    if sdata.is_backed():
        _write_atomically(Path(sdata.path), name, element, kind, after)
    getattr(sdata, kind)[name] = element
    if sdata.is_backed() and consolidate:
        sdata.write_consolidated_metadata()


def _write_atomically(store: Path, name: str, element, kind: str, after=None) -> None:
    staging = scratch_folder(store.parent, name)
    try:
        if kind == "tables":
            _write_table(staging / "element.zarr", name, element)
        else:
            # the staging store's own consolidated metadata is never read: the store's is rewritten after the move
            SpatialData(**{kind: {name: element}}).write(staging / "element.zarr", consolidate_metadata=False)
        if after is not None:
            after(staging / "element.zarr" / kind / name)
        group = _require_group(store, kind)
        target = store / kind / name
        if target.exists():
            os.rename(target, staging / "previous")
        os.rename(staging / "element.zarr" / kind / name, target)
        if kind == "labels":  # listed once it is there: a kill in between leaves no name without its element
            _list_labels(group, store / kind)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _require_group(store: Path, kind: str):
    """The store's ``kind`` group (``labels``, ...), made if missing.

    A folder alone is no group: a store written without labels would hold a new labels element
    unseen by readers (spatialdata's read_zarr warned that the table annotates a missing element).
    """
    import zarr

    return zarr.open_group(str(store), mode="r+", use_consolidated=False).require_group(kind)


def _list_labels(group, folder: Path) -> None:
    """List every labels element in ``folder`` in the group's ``ome.labels``, as OME-NGFF readers (napari) find them.

    The names listed stay in their order, less those whose element is gone (spatialdata's delete_element_from_disk
    leaves them); those missing (the new one, or any a bare folder held) join them.
    """
    ome = dict(group.attrs.get("ome", {}))
    present = sorted(p.name for p in folder.iterdir() if (p / "zarr.json").is_file() or (p / ".zattrs").is_file())
    kept = [n for n in ome.get("labels", []) if n in present]
    labels = kept + [n for n in present if n not in kept]
    if labels != ome.get("labels"):
        group.attrs["ome"] = {**ome, "labels": labels}


def _write_table(path: Path, name: str, table: AnnData) -> None:
    """Write a table as spatialdata does, but its long string arrays (obs names) a slice at a time.

    spatialdata writes a small stand-in (its group attributes and zarr format: :func:`_stand_in`),
    then anndata writes the table over it. Written whole, zarr converts and encodes a string array at once:
    +0.8 GB for the 8M obs names of a slide's 2 um bins, against a few MB in slices.
    """
    import zarr
    from anndata.experimental import write_dispatched

    with warnings.catch_warnings():  # a lone table annotates shapes that live in the store, not here
        warnings.simplefilter("ignore", UserWarning)
        SpatialData(tables={name: _stand_in(table)}).write(path, consolidate_metadata=False)
    group = zarr.open_group(str(path / "tables"), mode="r+")
    attrs = dict(group[name].attrs)
    with unsharded():
        write_dispatched(group, name, table, callback=_write_elem)
    group[name].attrs.update(attrs)


def unsharded():
    """Keep anndata's zarr v3 arrays unsharded, as now (the scratch arrays' layout: their chunk files are linked).

    Said explicitly: left unset, anndata warns on every array that sharding will become its default.
    """
    import anndata

    if not hasattr(anndata.settings, "auto_shard_zarr_v3"):  # anndata before that setting: unsharded, silent
        return contextlib.nullcontext()
    return anndata.settings.override(auto_shard_zarr_v3=False)


def _stand_in(table: AnnData) -> AnnData:
    """One row of the table with only what spatialdata validates and annotates (its keys): written, then replaced.

    The table's own ``uns`` is left out: each of its scalars is a zarr array, written once, by anndata, after.
    """
    keys = table.uns.get(TableModel.ATTRS_KEY)
    if keys is None:  # a table that annotates no element: spatialdata writes no keys
        return AnnData(obs=table.obs.iloc[:1, :0].copy())
    cols = [c for c in (keys.get(TableModel.REGION_KEY_KEY), keys.get(TableModel.INSTANCE_KEY)) if c is not None]
    return AnnData(obs=table.obs[cols].iloc[:1].copy(), uns={TableModel.ATTRS_KEY: dict(keys)})


def _write_elem(func, store, key, elem, *, dataset_kwargs, iospec) -> None:
    """Anndata write callback: a dask array in zarr chunks equal to its blocks; a long string array in slices.

    A dask array that reads a scratch zarr array of the same layout gets its chunk files linked
    (:func:`pixnet.infer.chunklinks.link_chunks`).

    A 1-d string array longer than a slice is created empty, then filled slice by slice.
    """
    if isinstance(elem, da.Array) and iospec.encoding_type == "array":
        # created empty, then filled without anndata's lock: each block is its own zarr chunk, so blocks
        # are encoded and written in parallel, none waiting in memory for the lock
        func(store, key, elem[:0], dataset_kwargs={**dataset_kwargs, "chunks": chunks_of(elem), **layout_of(elem)})
        array = store[key]
        array.resize(elem.shape)
        if link_chunks(elem, array):  # the one pass's scratch array: its chunk files, linked, not written again
            return
        compute(da.store(elem, array, lock=False, compute=False), "writing " + key, progress=False)
        return
    n = len(elem) if isinstance(elem, np.ndarray) and elem.ndim == 1 else 0
    if iospec.encoding_type != "string-array" or n <= STRING_SLICE:
        func(store, key, elem, dataset_kwargs=dataset_kwargs)
        return
    func(store, key, elem[:0], dataset_kwargs={**dataset_kwargs, "chunks": (STRING_SLICE,)})
    array = store[key]
    array.resize((n,))
    for start in range(0, n, STRING_SLICE):
        array[start : start + STRING_SLICE] = elem[start : start + STRING_SLICE]
