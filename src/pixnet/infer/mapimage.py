"""The dense map as a multiscale image element of the slide, computed once and stored."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import dask.array as da
import numpy as np
from spatialdata import SpatialData
from spatialdata.models import Image2DModel
from spatialdata.transformations import Scale, Sequence, Translation

from .._keys import OTHER_CHANNEL, UNS_KEY
from ..data import image_levels
from ..model import PixNet
from .chunklinks import forget, from_scratch, is_scratch, link_chunks, scratch_array
from .fingerprint import fingerprint
from .progress import compute
from .store import replace_element

IN_MEMORY_LIMIT = 4 * 2**30  # bytes of map kept in memory when the sdata is not backed
DIMS = ("c", "y", "x")


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
    sdata, name: str, dmap: da.Array, model: PixNet, region, f_map: float, cs: str, *, computed, progress: bool
) -> da.Array:
    """Compute the map, add it to ``sdata`` as a multiscale image, and return its level 0 (lazy).

    ``computed``: ``(busy, core)``, the blocks of side ``core`` that were computed (the others
    are 0), recorded so that the map is reused only for spots inside them.
    """
    chunks = map_chunks(dmap.chunks, dmap.shape[0])
    if sdata.is_backed():
        # Level 0 is computed once into a scratch store; the pyramid and the element are made from it.
        scratch = Path(tempfile.mkdtemp(prefix=f".pixnet-{name}-", dir=Path(sdata.path).parent))
        try:
            level = scratch_level0(scratch, dmap.shape, chunks, dmap.dtype)
            compute(da.store(dmap.rechunk(chunks), level, lock=False, compute=False), "computing map", progress)
            publish_map(sdata, name, from_scratch(level), model, region, f_map, cs, computed=computed, chunks=chunks)
        finally:
            forget(scratch)
            shutil.rmtree(scratch, ignore_errors=True)
    else:
        check_map_size(dmap.size * 4)
        arr = compute(dmap, "computing map", progress)
        publish_map(sdata, name, arr, model, region, f_map, cs, computed=computed, chunks=chunks)
    return level0(sdata.images[name])


def scratch_level0(folder: Path, shape, chunks, dtype):
    """An empty zarr array in ``folder`` laid out as the map's stored level 0, so its chunk files can be linked."""
    return scratch_array(folder / "level0.zarr", shape, chunks, dtype, dims=DIMS)


def check_map_size(size: int) -> None:
    """Refuse a map of ``size`` bytes that would be held in memory (the sdata is not backed) above the limit."""
    if size > IN_MEMORY_LIMIT:
        raise ValueError(
            f"The map of this slide takes {size / 2**30:.1f} GB; write the SpatialData to zarr first "
            "(sdata.write('slide.zarr')) so that pixnet streams the map and the predictions to disk."
        )


def publish_map(sdata, name: str, level: da.Array | np.ndarray, model: PixNet, region, f_map: float, cs: str, *,
                computed, chunks) -> None:  # fmt: skip
    """Add a computed level 0 ``(C, h, w)`` to ``sdata`` as the multiscale map image ``name`` (written when backed).

    ``computed``: ``(busy, core)``, the blocks of side ``core`` that were computed (the others
    read 0), recorded so that the map is reused only for spots inside them.
    """
    cfg = model.config
    channels = list(cfg.genes) + ([OTHER_CHANNEL] if cfg.semantics == "density" else [])
    y0, x0 = region[0], region[1]
    to_cs = Sequence([Translation([x0, y0], axes=("x", "y")), Scale([f_map, f_map], axes=("x", "y"))])
    scales = [2] * int(np.clip(np.log2(max(1, min(level.shape[1:]) / 64)), 0, 4))  # down to ~64 px
    el = Image2DModel.parse(level, dims=DIMS, c_coords=channels, scale_factors=scales or None,
                            transformations={cs: to_cs}, chunks=chunks)  # fmt: skip
    if sdata.is_backed():
        after = None
        if is_scratch(level) and scales:
            # Level 0 is the scratch array already written: the element is written with zeros in its place
            # (zarr writes no chunk of zeros) and the scratch chunk files are linked in before it is moved into
            # the store; the coarser levels are made from the scratch array. No map pixel is written twice.
            node = el["scale0"]["image"]
            el["scale0"]["image"] = node.copy(data=da.zeros(level.shape, dtype=level.dtype, chunks=node.data.chunks))
            after = functools.partial(_fill_level0, level)
        replace_element(sdata, name, el, "images", after=after)
        from spatialdata import read_zarr

        sdata.images[name] = read_zarr(sdata.path, selection=("images",)).images[name]
    else:
        sdata.images[name] = el
    maps = dict(sdata.attrs.get(UNS_KEY, {}).get("maps", {}))
    busy, core = computed
    maps[name] = {
        "model": fingerprint(model), "region": [int(v) for v in region], "core": int(core),
        "computed": np.asarray(busy, bool).tolist(),
    }  # fmt: skip
    sdata.attrs[UNS_KEY] = {**sdata.attrs.get(UNS_KEY, {}), "maps": maps}


def _fill_level0(level: da.Array, element: Path) -> None:
    """Link ``level``'s scratch chunk files into the written element's level 0 (``s0``), or copy them."""
    import zarr

    dest = zarr.open_array(str(element / "s0"), mode="r+")
    if not link_chunks(level, dest):
        compute(da.store(level, dest, lock=False, compute=False), "writing map", progress=False)


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
        return {"array": level0(sdata.images[name]), **info, "region": tuple(info["region"])}
    if not overwrite:
        raise ValueError(f"{name!r} exists and was made by another model; pass overwrite=True or another key_added.")
    return None
