"""``pixnet.tl.predict``: the dense map of a slide and its expression in any bins or shapes."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Literal

import anndata as ad
import dask.array as da
import numpy as np
import pandas as pd
import torch
from spatialdata import SpatialData
from spatialdata.models import TableModel

from .._arrays import table_of_checked_names
from .._keys import ON_IMAGE, REGION_KEY, UNS_KEY, prediction_names
from .._memory import trimmed
from .._version import __version__
from ..data import resolve_slide
from ..data.coverage import check_coverage
from ..infer.dense import aggregate_lazy, check_tiles, dense_map, map_region, occupied_blocks
from ..infer.expression import expression_arrays
from ..infer.fingerprint import fingerprint
from ..infer.geometry import geometry_element
from ..infer.mapimage import check_free, map_element
from ..infer.onepass import can_stream, one_pass
from ..infer.progress import _client, labelled
from ..infer.store import ELEMENT_KINDS, check_store, scratch_dir, store_elements
from ..infer.targets import resolve_target
from ..model import PixNet, method_of
from ..model.ensemble import ensemble
from ..model.tta import DihedralTTA
from ._models import find_model

logger = logging.getLogger(__name__)
LAYERS = ("counts", "lognorm")  # what predict can write besides X


def predict(
    sdata: SpatialData,
    *,
    model: PixNet | Sequence[PixNet] | None = None,
    bin_size: float | None = None,
    shapes: str | None = None,
    key_added: str = "pixnet",
    overwrite: bool = False,
    tile_px: int = 1024,
    context_px: int = 64,
    device: str | None = None,
    layers: tuple[Literal["counts", "lognorm"], ...] = ("counts", "lognorm"),
    map: bool | Literal["float32", "float16"] = True,
    image: str | None = None,
    slide_um_per_px: float | None = None,
    um_per_px: float | None = None,
    tta: int = 1,
    progress: bool = True,
) -> ad.AnnData:
    """Predict the expression of every bin (or shape) of a slide from its H&E image.

    The model's dense map is computed tile by tile (each tile sees ``context_px`` of image
    around it, so tiles join without seams) and aggregated into the bins with exact area
    weights, in one pass: each bin is summed while its tile is in memory, its values computed
    on the network's device and written, while the next tiles run. Three elements are written
    into ``sdata`` (and to its zarr store if it is backed):

    - ``{key_added}_map`` (unless ``map=False``): the map, a multiscale image whose channels are the genes (plus
      ``other_genes``, the expected counts of all other genes, in ``"density"`` models),
      placed on the slide's coordinate system so it overlays the H&E. Values are expected
      counts per map pixel (density models) or log-normalised expression. Only the tiles that
      the bins or shapes reach are computed; the map reads 0 elsewhere.
    - ``{key_added}_{target}_shapes`` (or ``_labels`` for 2 um bins): the bins or shapes.
    - ``{key_added}_{target}``: the table annotating them, where ``target`` is
      ``square_008um`` for ``bin_size=8`` or the shapes element's name.

    The table, in the units of :func:`pixnet.pp.log_normalize`, holds (for a backed sdata whose
    table would take more than 1 GB, as 2 um bins of a whole slide do, ``X`` and the layers are
    written to the store chunk by chunk and read back lazily, as dask arrays):

    - ``X``: the expected measured value ``E[log1p(x / T * 1e4)]`` under Poisson counting
      noise at the bin's size: the best guess of what the measurement reads, and the one to
      correlate with it;
    - ``layers["counts"]``: expected counts of each gene in the bin;
    - ``layers["lognorm"]``: ``log1p`` of the normalised expected counts (denoised expression);
    - ``obs["predicted_total_counts"]``: expected total counts over all genes.

    When ``bin_size`` matches a measured table (``square_008um``, read by :func:`pixnet.io.visium_hd`,
    by :func:`spatialdata_io.visium_hd` with squares, circles or labels, or read back from a store),
    the rows are exactly its bins, with the same ``obs_names`` in the same order. Other sizes get
    a new grid on the same array, over the measured tissue. Bins whose centre lies beyond the
    image are marked False in ``obs["pixnet_on_image"]`` with a warning; when most do, predict
    refuses (the image is not the one the bins were placed on).

    Parameters
    ----------
    sdata
        The slide.
    model
        A trained model; by default the one last fitted on ``sdata``. A list of dense models
        (e.g. the same ``fit`` with other seeds) predicts with the mean of their maps
        (:func:`pixnet.model.ensemble`); each member costs a forward pass.
    bin_size
        Predict square bins of this size (um).
    shapes
        Or predict into this shapes element (Visium spots, cell segmentation polygons). With
        neither, the spots that a spot-level reader recorded (:func:`pixnet.io.spots` and its
        layouts name them ``spots``).
    key_added
        Prefix of the written elements.
    overwrite
        Replace elements of the same names (otherwise an error). A map made by the same model
        with the same ``tile_px`` and ``context_px`` is reused without recomputing.
    tile_px, context_px
        Tile side and the context around it, in the model's input pixels (multiples of 32 and of
        the model's ``map_stride``).
    device
        ``"cuda"``, ``"cpu"``...; by default a GPU when there is one.
    layers
        Which layers to write besides ``X`` (each costs as much as ``X`` on disk).
    map
        Write the map image: ``True`` (float32), ``"float16"`` (half the disk; values to 5e-4
        relative, and to 3e-8 absolute below 6e-5, half precision's smallest normal number,
        where faint genes' expected counts per 2 um pixel often lie; a later predict that reuses
        the map reads those), or ``False`` (the table only: the fastest; the bins' values are the
        same, they never come from the stored map).
    image, slide_um_per_px
        The H&E image and its micrometres per pixel, if :mod:`pixnet.io` did not record them
        (the name :func:`pixnet.tl.fit` gives it; ``fit``'s ``um_per_px`` is the working resolution).
    um_per_px
        The older name of ``slide_um_per_px`` here, still accepted.
    tta
        Test-time augmentation: 1 (off), 4 or 8 dihedral views of each tile, each flipped back
        and averaged (:class:`pixnet.model.tta.DihedralTTA`). Costs that many forward passes;
        on HER2ST (leave one section out) 8 views raised PCC@M on every section, +0.004 on average.
    progress
        Show progress.

    Returns
    -------
    The prediction table (also in ``sdata.tables``).

    """
    t0 = time.perf_counter()
    if um_per_px is not None and slide_um_per_px is not None and um_per_px != slide_um_per_px:
        raise ValueError("Pass slide_um_per_px=... only (um_per_px is its older name in predict).")
    check_store(sdata)  # before anything reads from it: a store that is gone reads as zeros (an image without tissue)
    slide = resolve_slide(sdata, image=image, um_per_px=slide_um_per_px or um_per_px)
    model = model if model is not None else find_model(sdata)
    n_models = len(model) if isinstance(model, (list, tuple)) else 1
    model = ensemble(model) if isinstance(model, (list, tuple)) else model
    if not isinstance(model, PixNet):
        raise TypeError(f"model must be a pixnet.PixNet, got {type(model).__name__}.")
    target = resolve_target(slide, bin_size=bin_size, shapes=shapes)
    cov = slide.coverage(target.spots.centres, what="bins" if shapes is None else f"shapes of {shapes!r}")
    check_coverage(
        cov, action="predict", then=f"They are predicted from the blank beyond the image and marked False in the "
        f"prediction's obs[{ON_IMAGE!r}]; pixnet.tl.evaluate leaves them out."
    )  # fmt: skip
    cfg, method = model.config, method_of(model.config.method)
    if method.predict is None:
        check_tiles(tile_px, context_px, cfg.map_stride)
    layers = _check_layers(layers)
    model = _with_views(model, tta, method)
    names = prediction_names(key_added, target.name, labels=target.as_labels, dense=method.predict is None)
    if map not in (True, False, "float32", "float16"):
        raise ValueError(f"map must be True, False, 'float32' or 'float16', got {map!r}.")
    reuse_map = check_free(sdata, names, model, overwrite=overwrite, tiling=(tile_px, context_px))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with scratch_dir(sdata) as scratch, trimmed(), labelled(names["table"]):  # its bars name the table made
        if method.predict is not None:  # a baseline (pixnet.baselines): its own prediction, no map
            work = slide.working_image(cfg.um_per_px)
            x, extra = method.predict(model, work, target.spots.scaled(work.f), device=dev), {"layers": {}}
        else:
            opts = {"tile_px": tile_px, "context_px": context_px, "device": dev, "progress": progress}
            x, extra = _dense(sdata, slide, model, target, names["map"] if map else None, reuse_map, map, layers,
                              scratch, opts)  # fmt: skip
        if cov.n_off:
            extra[ON_IMAGE] = cov.on
        written = names.get("map") if map and method.predict is None else None  # map=False: none of this call's
        table, geom = _table(x, extra, slide, target, cfg, names, written, params={
            "bin_size_um": bin_size, "shapes": shapes, "tile_px": tile_px, "context_px": context_px, "tta": tta,
            "ensemble": n_models, "map_model": fingerprint(model) if written else None})  # fmt: skip
        kind = ELEMENT_KINDS["labels" if target.as_labels else "shapes"]
        table = store_elements(sdata, names, geom, table, kind, progress)
    logger.info("predicted %d spots x %d genes in %.1f s", table.n_obs, table.n_vars, time.perf_counter() - t0)
    return table


def _dense(sdata, slide, model, target, name, reuse_map, map_dtype, layers, scratch, opts: dict) -> tuple:
    """X and the extra columns of a dense model's prediction (its map written as ``name`` unless None).

    One pass over the tiles (:func:`pixnet.infer.onepass.one_pass`), unless a stored map made by the
    same model covers the spots, a dask.distributed client is active (the map's graph runs on its
    workers) or a spot is wider than a tile: then the map (stored, or computed as a dask graph) is
    aggregated into the spots (:func:`pixnet.infer.dense.aggregate_lazy`) and X made from the sums.
    """
    cfg = model.config
    work = slide.working_image(cfg.um_per_px)
    f_map = cfg.map_um_per_px / slide.um_per_px  # coordinate-system units per map pixel
    spots_map = target.spots.scaled(f_map)
    region = map_region(spots_map, work.shape, cfg.map_stride)
    core = opts["tile_px"] // cfg.map_stride
    if reuse_map is not None and _covers(reuse_map, region, spots_map):
        dmap, region = reuse_map["array"], reuse_map["region"]
    else:
        # Only the tiles that spots reach are computed: a whole slide's background costs nothing.
        busy = occupied_blocks(spots_map, region, core)
        rel = spots_map.scaled(1.0, (region[1], region[0]))
        streams = _client() is None and can_stream(rel, core, n_genes=len(cfg.genes), n_layers=len(layers),
                                                   backed=scratch is not None)  # fmt: skip
        if streams:
            # the pass needs only the spots in map pixels: the slide's copy goes (126 MB for 8M bins)
            del spots_map
            target.spots = None
            return one_pass(sdata, model, work, region, rel, busy, layers=layers, scratch=scratch, map_name=name,
                            map_dtype=map_dtype, f_map=f_map, cs=slide.cs, **opts)  # fmt: skip
        dmap = dense_map(model, work, region, tile_px=opts["tile_px"], context_px=opts["context_px"],
                         device=opts["device"], busy=busy)  # fmt: skip
        if name is not None:
            dmap = map_element(sdata, name, dmap, model, region, f_map, slide.cs, computed=(busy, core),
                               tiling=(opts["tile_px"], opts["context_px"]), progress=opts["progress"])  # fmt: skip
    spots_map = spots_map.scaled(1.0, (region[1], region[0]))  # one copy of the centres at a time
    lam = aggregate_lazy(dmap, spots_map, mean=cfg.semantics == "mean")
    return expression_arrays(lam, cfg, layers, scratch=scratch, progress=opts["progress"])


def _table(x, extra: dict, slide, target, cfg, names: dict, map_name, params: dict) -> tuple[ad.AnnData, object]:
    """The prediction table (TableModel) and the geometry element it annotates (``map_name``: its map, or None)."""
    geom, instance_key = geometry_element(target, slide)
    obs = pd.DataFrame(index=target.obs.index)
    obs[instance_key] = target.instance_ids()
    obs[REGION_KEY] = pd.Categorical.from_codes(np.zeros(len(obs), np.int8), [names["geometry"]])
    # the names are the measured table's, the shapes table's or a new grid's barcodes (unique as made)
    table = table_of_checked_names(X=x, obs=obs, layers=extra.pop("layers"))
    table.uns[UNS_KEY] = {
        "model": cfg.to_dict(), "map": map_name, "source_table": target.source_table, "target": target.name,
        **params, "normalization": {"target_sum": cfg.target_sum, "log1p": cfg.log1p}, "pixnet_version": __version__,
        "image": slide.image, "coordinate_system": slide.cs, "um_per_px": slide.um_per_px,
        "X": "expected log1p(counts / total * target_sum) under Poisson counting noise at this bin size",
    }  # fmt: skip
    if target.grid is not None:
        table.uns[UNS_KEY]["grid"] = target.grid.to_dict()
    # Parse checks the instance ids with a groupby over every obs column (+0.5 GB for 8M bins): the
    # other columns join after it. Arrays, not Series: no alignment on millions of names.
    table = TableModel.parse(table, region=names["geometry"], region_key=REGION_KEY, instance_key=instance_key)
    for i, (k, v) in enumerate(target.obs.items()):
        table.obs.insert(i, k, v.to_numpy(copy=True))  # a copy: target.obs may be the measured table's columns
    for k, v in extra.items():
        table.obs[k] = np.asarray(v)
    table.var_names = list(cfg.genes)
    table.obsm["spatial"] = np.asarray(target.spatial)
    return table, geom


def _check_layers(layers) -> tuple[str, ...]:
    """The layers asked for, as a tuple (a single name is one layer); unknown names refused."""
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    unknown = [k for k in layers if k not in LAYERS]
    if unknown:
        raise ValueError(f"Unknown layers {unknown}: layers is a tuple of {LAYERS} (or () for X only).")
    return layers


def _with_views(model: PixNet, tta: int, method) -> PixNet:
    """The model whose network averages ``tta`` dihedral views (the user's model is left as it is)."""
    if tta == 1:
        return model
    if tta not in (4, 8):
        raise ValueError(f"tta must be 1 (off), 4 or 8 views, got {tta!r}.")
    if method.predict is not None:
        raise ValueError(f"tta applies to dense maps; the {model.config.method!r} baseline has none. Use tta=1.")
    return PixNet(model.config, DihedralTTA(model.module, views=tta), model.training)


def _covers(stored: dict, region: tuple[int, int, int, int], spots_map) -> bool:
    """Whether a stored map holds every map pixel these spots need (its region and its computed blocks)."""
    sy, sx, sh, sw = stored["region"]
    y, x, h, w = region
    if not (sy <= y and sx <= x and y + h <= sy + sh and x + w <= sx + sw):
        return False
    if stored.get("computed") is None:
        return True
    computed = np.asarray(stored["computed"], bool)
    return bool(computed[occupied_blocks(spots_map, stored["region"], stored["core"])].all())


__all__ = ["predict", "da"]
