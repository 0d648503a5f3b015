"""The dense map as a multiscale image element of the slide, computed once and stored."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import dask.array as da
import numpy as np
from spatialdata import SpatialData
from spatialdata.models import Image2DModel
from spatialdata.transformations import Scale, Sequence, Translation

from .._keys import OTHER_CHANNEL, UNS_KEY
from ..data import image_levels
from ..model import PixNet
from .chunklinks import forget, from_scratch, is_scratch, layout_of, link_chunks, scratch_array
from .fingerprint import fingerprint
from .progress import _client, compute
from .pyramid import DIMS, MapLevels, can_coarsen, level_chunks, level_shapes, scale_factors
from .scratch import scratch_folder
from .store import replace_element

IN_MEMORY_LIMIT = 4 * 2**30  # bytes of map kept in memory when the sdata is not backed


def level0(element) -> da.Array:
    """The full-resolution level of an image element, as a dask array."""
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
    sdata,
    name: str,
    dmap: da.Array,
    model: PixNet,
    region,
    f_map: float,
    cs: str,
    *,
    computed,
    tiling,
    progress: bool,
) -> da.Array:
    """Compute the map, add it to ``sdata`` as a multiscale image, and return its level 0 (lazy).

    ``computed``: ``(busy, core)``, the blocks of side ``core`` that were computed (the others
    are 0), recorded so that the map is reused only for spots inside them; ``tiling``:
    ``(tile_px, context_px)`` it was computed with (:func:`publish_map`).
    """
    chunks = map_chunks(dmap.chunks, dmap.shape[0])
    if sdata.is_backed():
        # The levels are computed once into a scratch store, and the element made from them.
        scratch = scratch_folder(Path(sdata.path).parent, name)
        try:
            # the pyramid made tile by tile too (dmap's blocks are the tiles), where they are computed in this
            # process: a dask.distributed worker would put them into its own copy of the MapLevels
            if _client() is None:
                levels = scratch_levels(scratch, dmap.shape, chunks, dmap.dtype, computed[1])
            else:
                levels = [scratch_level0(scratch, dmap.shape, chunks, dmap.dtype)]
            if len(levels) > 1:
                pyramid = MapLevels(levels, computed[1])
                compute(da.store(dmap, pyramid, lock=True, compute=False), "computing map", progress)
                pyramid.close()
            else:
                compute(da.store(dmap.rechunk(chunks), levels[0], lock=False, compute=False), "computing map", progress)
            levels = [from_scratch(a) for a in levels]
            publish_map(sdata, name, levels, model, region, f_map, cs, computed=computed, tiling=tiling, chunks=chunks)
        finally:
            forget(scratch)
            shutil.rmtree(scratch, ignore_errors=True)
    else:
        check_map_size(dmap.size * 4)
        arr = compute(dmap, "computing map", progress)
        publish_map(sdata, name, arr, model, region, f_map, cs, computed=computed, tiling=tiling, chunks=chunks)
    return level0(sdata.images[name])


def scratch_level0(folder: Path, shape, chunks, dtype):
    """An empty zarr array in ``folder`` laid out as the map's stored level 0, so its chunk files can be linked."""
    return scratch_array(folder / "level0.zarr", shape, level_chunks(chunks, shape), dtype, dims=DIMS)


def scratch_levels(folder: Path, shape, chunks, dtype, core: int) -> list:
    """Empty zarr arrays in ``folder`` laid out as the map's stored levels, so their chunk files can be linked.

    Level 0 alone when tiles of ``core`` pixels do not coarsen into whole pixels of every level
    (spatialdata then makes the pyramid from it).
    """
    n = len(scale_factors(shape))
    if not can_coarsen(shape, core, n):
        return [scratch_level0(folder, shape, chunks, dtype)]
    return [scratch_array(folder / f"level{k}.zarr", s, level_chunks(chunks, s), dtype, dims=DIMS)
            for k, s in enumerate(level_shapes(shape, n))]  # fmt: skip


def check_map_size(size: int) -> None:
    """Refuse a map of ``size`` bytes that would be held in memory (the sdata is not backed) above the limit."""
    if size > IN_MEMORY_LIMIT:
        raise ValueError(
            f"The map of this slide takes {size / 2**30:.1f} GB; write the SpatialData to zarr first "
            "(sdata.write('slide.zarr')) so that pixnet streams the map and the predictions to disk."
        )


def publish_map(sdata, name: str, levels, model: PixNet, region, f_map: float, cs: str, *,
                computed, tiling, chunks) -> None:  # fmt: skip
    """Add a computed map to ``sdata`` as the multiscale image ``name`` (written when backed).

    ``levels``: its level 0 ``(C, h, w)`` (spatialdata makes the coarser ones), or a list of all
    its levels as :class:`pixnet.infer.pyramid.MapLevels` made them. ``computed``: ``(busy, core)``,
    the blocks of side ``core`` that were computed (the others read 0), recorded so that the map
    is reused only for spots inside them. ``tiling``: ``(tile_px, context_px)`` it was computed
    with, recorded so that it is reused only for the same (the context changes a map's values).
    """
    levels = list(levels) if isinstance(levels, list | tuple) else [levels]
    cfg = model.config
    channels = list(cfg.genes) + ([OTHER_CHANNEL] if cfg.semantics == "density" else [])
    y0, x0 = region[0], region[1]
    to_cs = Sequence([Translation([x0, y0], axes=("x", "y")), Scale([f_map, f_map], axes=("x", "y"))])
    scales = scale_factors(levels[0].shape)
    parse = functools.partial(Image2DModel.parse, dims=DIMS, scale_factors=scales or None,
                              transformations={cs: to_cs}, chunks=chunks)  # fmt: skip
    if not sdata.is_backed():
        sdata.images[name] = parse(levels[0], c_coords=channels)
    elif all(map(is_scratch, levels)) and scales:
        # The levels are the scratch arrays already written: spatialdata writes the element with zeros in
        # their place (zarr writes no chunk of zeros) and the scratch chunk files are linked in before it
        # is moved into the store. No map pixel is written twice.
        el = _stand_in(levels, channels, whole=len(levels) == len(scales) + 1, parse=parse)
        after = functools.partial(_fill_levels, levels, channels, name)
        replace_element(sdata, name, el, "images", after=after)
    else:
        replace_element(sdata, name, parse(levels[0], c_coords=channels), "images")
    if sdata.is_backed():
        from spatialdata import read_zarr

        sdata.images[name] = read_zarr(sdata.path, selection=("images",)).images[name]
    maps = dict(sdata.attrs.get(UNS_KEY, {}).get("maps", {}))
    busy, core = computed
    maps[name] = {
        "model": fingerprint(model), "region": [int(v) for v in region], "core": int(core),
        "computed": np.asarray(busy, bool).tolist(), "tiling": [int(v) for v in tiling],
    }  # fmt: skip
    sdata.attrs[UNS_KEY] = {**sdata.attrs.get(UNS_KEY, {}), "maps": maps}


def _stand_in(levels: list, channels: list, *, whole: bool, parse):
    """The map's element with zeros in place of the stored ``levels`` (written by :func:`_fill_levels`).

    ``whole``: all the levels are given: the stand-in then holds one chunk of channels (zarr
    compares every chunk of zeros with its fill value, ~7 s a GB) and :func:`_fill_levels`
    widens its arrays and writes the channel names. Else level 0 alone is stood in for and the
    coarser levels are made from it.
    """
    if whole:
        n = levels[0].chunksize[0]
        zeros = da.zeros((n, *levels[0].shape[1:]), dtype=levels[0].dtype, chunks=levels[0].chunksize)
        el = parse(zeros, c_coords=channels[:n])
    else:
        el = parse(levels[0], c_coords=channels)
    for k, level in enumerate(levels):
        node = el[f"scale{k}"]["image"]
        n = node.shape[0]
        chunks = (min(n, level.chunksize[0]), *level.chunksize[1:])
        el[f"scale{k}"]["image"] = node.copy(data=da.zeros((n, *level.shape[1:]), dtype=level.dtype, chunks=chunks))
    return el


def _fill_levels(levels: list, channels: list, name: str, element: Path) -> None:
    """Link the scratch chunk files of ``levels`` into the written element's levels (``s0``, ``s1``, ...), or copy them.

    Each level's array (the stand-in's, which holds no chunk) is made again as the scratch
    array's twin: all the map's channels, the scratch array's codecs. When the stand-in held
    fewer channels, the map's channel names are then written (spatialdata's ``write_channel_names``).
    """
    import zarr

    narrow = False
    for k, level in enumerate(levels):
        path = str(element / f"s{k}")
        old = zarr.open_array(path, mode="r")
        narrow |= old.shape != level.shape
        dest = zarr.create_array(path, shape=level.shape, chunks=old.chunks, dtype=old.dtype, fill_value=old.fill_value,
                                 dimension_names=old.metadata.dimension_names, attributes=old.attrs.asdict(),
                                 overwrite=True, **layout_of(level))  # fmt: skip
        if not link_chunks(level, dest):
            compute(da.store(level, dest, lock=False, compute=False), "writing map", progress=False)
    if narrow:
        names = SpatialData(images={name: Image2DModel.parse(da.zeros((len(channels), 1, 1)), dims=DIMS,
                                                               c_coords=channels)})  # fmt: skip
        names.path = element.parents[1]
        names.write_channel_names(name)


def check_free(sdata: SpatialData, names: dict, model: PixNet, *, overwrite: bool, tiling) -> dict | None:
    """Refuse to replace elements unless ``overwrite``; return a reusable map: the same model's, the same ``tiling``.

    ``tiling``: ``(tile_px, context_px)``. A map of the same model made with other tiles is
    replaced with ``overwrite``, else refused (its values differ with the context).
    """
    for kind in ("table", "geometry"):
        if names[kind] in sdata and not overwrite:
            raise ValueError(
                f"{names[kind]!r} already exists in the SpatialData object; pass overwrite=True or another key_added."
            )
    name = names.get("map")
    if name is None or name not in sdata:
        return None
    info = sdata.attrs.get(UNS_KEY, {}).get("maps", {}).get(name, {})
    same = info.get("model") == fingerprint(model)
    if same and info.get("tiling") == [int(v) for v in tiling]:
        return {"array": level0(sdata.images[name]), **info, "region": tuple(info["region"])}
    if same and not overwrite:
        raise ValueError(
            f"{name!r} exists, made by this model with tile_px, context_px = {info.get('tiling', 'unrecorded')}; "
            "pass those to reuse it, overwrite=True to make it again, or another key_added."
        )
    if not overwrite:
        raise ValueError(f"{name!r} exists and was made by another model; pass overwrite=True or another key_added.")
    return None
