"""Write predict's results into a SpatialData object, streaming to its zarr store when it is backed."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
from anndata import AnnData
from geopandas import GeoDataFrame
from spatialdata import SpatialData
from spatialdata.models import Image2DModel, ShapesModel
from spatialdata.transformations import Identity, Scale, Sequence, Translation

from .._keys import INSTANCE_KEY, LABELS_INSTANCE_KEY, UNS_KEY
from ..data import image_levels
from ..io._zarr import lazy_arrays
from ..io.visium_hd import _labels
from ..model import PixNet
from ..model.config import ModelConfig
from ..pp import expected_log_normalized
from .progress import compute

logger = logging.getLogger(__name__)

ELEMENT_KINDS = {"labels": "labels", "shapes": "shapes"}
IN_MEMORY_LIMIT = 4 * 2**30  # bytes of map or table kept in memory when the sdata is not backed
TABLE_IN_MEMORY = 2**30  # bytes of X and layers above which a backed sdata's table stays lazy, read from its store
# A lazy table's chunks, the same in dask and in zarr (a dask block written over parts of several
# zarr chunks makes zarr read, decode and rewrite each of them, under one lock): 2 MB each; one
# gene's values are in 1/16 of them, a row block's (all genes) in one task's 33 MB.
TABLE_CHUNK = (32768, 16)
OTHER_CHANNEL = "other_genes"
STRING_SLICE = 2**18  # obs names written at a time (a few MB): zarr encodes a string array whole otherwise


def fingerprint(model: PixNet) -> str:
    """Hash of a model's config and weights: a stored map is reused only for the very same model."""
    h = hashlib.sha1(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for k, v in sorted(model.module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def check_free(sdata: SpatialData, names: dict, model: PixNet, *, overwrite: bool) -> dict | None:
    """Refuse to replace elements unless ``overwrite``; return a reusable map made by the same model."""
    for kind in ("table", "geometry"):
        if names[kind] in sdata and not overwrite:
            raise ValueError(
                f"{names[kind]!r} already exists in the SpatialData object; pass overwrite=True or another key_added."
            )
    name = names.get("map")
    if name is None or name not in sdata:
        return None
    info = sdata.attrs.get(UNS_KEY, {}).get("maps", {}).get(name, {})
    if info.get("model") == fingerprint(model):
        return {"array": _level0(sdata.images[name]), **info, "region": tuple(info["region"])}
    if not overwrite:
        raise ValueError(f"{name!r} exists and was made by another model; pass overwrite=True or another key_added.")
    return None


@contextlib.contextmanager
def scratch_dir(sdata: SpatialData):
    """A temporary folder beside a backed sdata's store (same disk, removed after), or None if not backed."""
    if not sdata.is_backed():
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix=".pixnet-scratch-", dir=Path(sdata.path).parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _level0(element) -> da.Array:
    data = image_levels(element)[0].data
    return data if isinstance(data, da.Array) else da.from_array(data, chunks=(data.shape[0], 512, 512))


def map_chunks(blocks: tuple[tuple[int, ...], ...], n_channels: int) -> tuple[int, int, int]:
    """Zarr chunks of the map ``(c, y, x)`` given its dask blocks (one per network tile).

    Chunks tile the blocks: each computed block is written at once, none waits for a neighbour.
    Rows of chunks are short (<= 64): aggregation reads the map in horizontal strips of bins.
    """
    core = blocks[1][0]
    if len(blocks[1]) == 1:  # a map within one tile: any height will do (a divisor of a prime height is 1)
        rows = min(64, core)
    else:
        rows = next(d for d in range(min(64, core), 0, -1) if core % d == 0)
    return min(16, n_channels), rows, min(512, max(blocks[2]))


def map_element(
    sdata, name: str, dmap: da.Array, model: PixNet, region, f_map: float, cs: str, *, computed, progress: bool
) -> da.Array:
    """Compute the map, add it to ``sdata`` as a multiscale image, and return its level 0 (lazy).

    ``computed``: ``(busy, core)``, the blocks of side ``core`` that were computed (the others
    are 0), recorded so that the map is reused only for spots inside them.
    """
    cfg = model.config
    channels = list(cfg.genes) + ([OTHER_CHANNEL] if cfg.semantics == "density" else [])
    y0, x0 = region[0], region[1]
    to_cs = Sequence([Translation([x0, y0], axes=("x", "y")), Scale([f_map, f_map], axes=("x", "y"))])
    scales = [2] * int(np.clip(np.log2(max(1, min(dmap.shape[1:]) / 64)), 0, 4))  # down to ~64 px
    size = dmap.size * 4
    chunks = map_chunks(dmap.chunks, len(channels))
    if sdata.is_backed():
        # Level 0 is computed once into a scratch store; the pyramid and the element are made from it.
        scratch = Path(tempfile.mkdtemp(prefix=f".pixnet-{name}-", dir=Path(sdata.path).parent))
        try:
            compute(
                dmap.rechunk(chunks).to_zarr(str(scratch / "level0.zarr"), compute=False), "computing map", progress
            )
            level0 = da.from_zarr(str(scratch / "level0.zarr"))
            el = Image2DModel.parse(level0, dims=("c", "y", "x"), c_coords=channels, scale_factors=scales or None,
                                    transformations={cs: to_cs}, chunks=chunks)  # fmt: skip
            _replace(sdata, name, el, "images")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        from spatialdata import read_zarr

        sdata.images[name] = read_zarr(sdata.path, selection=("images",)).images[name]
    else:
        if size > IN_MEMORY_LIMIT:
            raise ValueError(
                f"The map of this slide takes {size / 2**30:.1f} GB; write the SpatialData to zarr first "
                "(sdata.write('slide.zarr')) so that pixnet streams the map and the predictions to disk."
            )
        arr = compute(dmap, "computing map", progress)
        el = Image2DModel.parse(arr, dims=("c", "y", "x"), c_coords=channels, scale_factors=scales or None,
                                transformations={cs: to_cs}, chunks=chunks)  # fmt: skip
        sdata.images[name] = el
    maps = dict(sdata.attrs.get(UNS_KEY, {}).get("maps", {}))
    busy, core = computed
    maps[name] = {
        "model": fingerprint(model), "region": [int(v) for v in region], "core": int(core),
        "computed": np.asarray(busy, bool).tolist(),
    }  # fmt: skip
    sdata.attrs[UNS_KEY] = {**sdata.attrs.get(UNS_KEY, {}), "maps": maps}
    return _level0(sdata.images[name])


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
    out = {"layers": {}, "predicted_total_counts": np.asarray(total, np.float32)}
    if "counts" in layers:
        out["layers"]["counts"] = genes
    if "lognorm" in layers:
        out["layers"]["lognorm"] = _blockwise(_lognorm, genes, total, cfg.target_sum, small)
    return x, out


def _lognorm(genes, total, target_sum: float):
    return np.log1p(genes / np.maximum(np.asarray(total).reshape(-1, 1), 1e-12) * target_sum).astype(np.float32)


def _blockwise(fn, genes, total: np.ndarray, target_sum: float, small: bool):
    """``fn`` of every bin's genes and total; lazily for a stored table, a row block at a time, in its chunks."""
    if small:
        return fn(genes, total, target_sum=target_sum)
    rows = genes.rechunk((TABLE_CHUNK[0], -1))  # the expectation's per-bin part is computed once for all genes
    totals = da.from_array(total[:, None], chunks=(rows.chunks[0], 1))
    out = da.map_blocks(lambda g, t: fn(g, t[:, 0], target_sum=target_sum), rows, totals, dtype=np.float32)
    return out.rechunk(genes.chunks)


def geometry_element(target, slide, as_labels: bool):
    """The element the prediction table annotates, and the table's instance key."""
    if target.geometry is not None:
        return target.geometry, "instance_id"
    rows, cols = target.obs["array_row"].to_numpy(), target.obs["array_col"].to_numpy()
    if as_labels:
        return _labels(target.grid, rows, cols, {slide.cs: Identity()}), LABELS_INSTANCE_KEY
    gdf = GeoDataFrame(geometry=target.grid.polygons(rows, cols), index=np.arange(len(rows)))
    return ShapesModel.parse(gdf, transformations={slide.cs: Identity()}), INSTANCE_KEY


def store_elements(sdata: SpatialData, names: dict, geometry, table, kind: str, progress: bool):
    """Add geometry and table to ``sdata``; write them to its store when it is backed."""
    _replace(sdata, names["geometry"], geometry, kind)
    _replace(sdata, names["table"], table, "tables")
    table = sdata.tables[names["table"]]
    if sdata.is_backed() and isinstance(table.X, da.Array):  # read lazily from the store, not from the scratch
        import zarr

        table.X, layers = lazy_arrays(zarr.open_group(str(Path(sdata.path) / "tables" / names["table"]), mode="r"))
        for k, v in layers.items():
            table.layers[k] = v
    return table


def _replace(sdata: SpatialData, name: str, element, kind: str) -> None:
    """Put ``element`` in ``sdata`` under ``name``; in a backed store, atomically.

    The element is written whole beside the store, then moved into it with one directory rename:
    a process killed at any moment leaves the store readable, with the previous version of the
    element or the new one.
    """
    if name in sdata:
        del sdata[name]
    if sdata.is_backed():
        _write_atomically(Path(sdata.path), name, element, kind)
    getattr(sdata, kind)[name] = element
    if sdata.is_backed():
        sdata.write_consolidated_metadata()


def _write_atomically(store: Path, name: str, element, kind: str) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".pixnet-{name}-", dir=store.parent))
    try:
        if kind == "tables":
            _write_table(staging / "element.zarr", name, element)
        else:
            SpatialData(**{kind: {name: element}}).write(staging / "element.zarr")
        target = store / kind / name
        target.parent.mkdir(exist_ok=True)
        if target.exists():
            os.rename(target, staging / "previous")
        os.rename(staging / "element.zarr" / kind / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_table(path: Path, name: str, table: AnnData) -> None:
    """Write a table as spatialdata does, but its long string arrays (obs names) a slice at a time.

    spatialdata writes a small stand-in (its group attributes and zarr format), then anndata
    writes the table over it. Written whole, zarr converts and encodes a string array at once:
    +0.8 GB for the 8M obs names of a slide's 2 um bins, against a few MB in slices.
    """
    import zarr
    from anndata.experimental import write_dispatched

    with warnings.catch_warnings():  # a lone table annotates shapes that live in the store, not here
        warnings.simplefilter("ignore", UserWarning)
        SpatialData(tables={name: table[:1].copy()}).write(path)
    group = zarr.open_group(str(path / "tables"), mode="r+")
    attrs = dict(group[name].attrs)
    write_dispatched(group, name, table, callback=_write_elem)
    group[name].attrs.update(attrs)


def _write_elem(func, store, key, elem, *, dataset_kwargs, iospec) -> None:
    """Anndata write callback: a dask array in zarr chunks equal to its blocks; a long string array in slices.

    A 1-d string array longer than a slice is created empty, then filled slice by slice.
    """
    if isinstance(elem, da.Array) and iospec.encoding_type == "array":
        # created empty, then filled without anndata's lock: each block is its own zarr chunk, so blocks
        # are encoded and written in parallel, none waiting in memory for the lock
        func(store, key, elem[:0], dataset_kwargs={**dataset_kwargs, "chunks": elem.chunksize})
        array = store[key]
        array.resize(elem.shape)
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
