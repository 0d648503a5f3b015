"""The dense map over the H&E, low values fading to transparent."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap, Normalize
from spatialdata import SpatialData

from .._keys import UNS_KEY, map_image
from ..data import image_levels
from ..data.image import element_to_cs
from ._utils import background, check_slide, figure_level, finish, imshow_in_cs, limits, panels, slide_names


def map(
    sdata: SpatialData,
    genes: str | Sequence[str],
    *,
    key_added: str = "pixnet",
    cmap: str = "magma",
    alpha: float = 0.85,
    vmax: str | float = "p99",
    max_px: int = 2000,
    ncols: int = 3,
    panel_size: float = 5.0,
    ax=None,
    show: bool | None = None,
    save: str | Path | None = None,
):
    """The dense expression map of ``genes`` (``{key_added}_map``) over the H&E, one panel per gene.

    The colour map fades from transparent at 0 to ``alpha`` at a quarter of ``vmax``: the tissue
    shows where a gene is low, and the glass beside the tissue (predicted too, since the tiles
    reach it) is not covered by a dark slab. Drawn with matplotlib from the pyramid level of at
    most ``max_px`` pixels a side (spatialdata-plot 0.4 replaces a colour map's alpha with one
    value for images). The same element opens in spatialdata-plot and napari-spatialdata, channel by gene.

    Parameters
    ----------
    sdata
        The slide, after :func:`pixnet.tl.predict` with a dense model.
    genes
        Gene names (channels of the map).
    key_added
        The prediction's key: the map is ``{key_added}_map``.
    cmap, alpha, vmax
        Colour map, opacity of high values, upper colour limit (``"p99"``: each gene's 99th percentile).
    max_px
        Longest side of the map level drawn.
    ncols, panel_size
        Layout.
    ax, show, save
        As in scanpy: draw into ``ax``; show the figure; save it to this path.

    Returns
    -------
    The axes (one per gene).

    """
    check_slide(sdata)
    genes = [genes] if isinstance(genes, str) else list(genes)
    name = map_image(key_added)
    if name not in sdata.images:
        raise KeyError(f"No map {name!r}: run pixnet.tl.predict(sdata, ...) with a dense model first.")
    levels = image_levels(sdata.images[name])
    channels = list(levels[0].coords["c"].values)
    missing = [g for g in genes if g not in channels]
    if missing:
        raise KeyError(f"Genes not in the map: {missing}.")
    table = _made_with(sdata, name)
    cs = slide_names(sdata, table)[1]
    to_cs = element_to_cs(levels[0], cs, f"The map {name!r}")
    level = figure_level(levels, max_px)
    h, w = levels[0].sizes["y"], levels[0].sizes["x"]
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float) @ to_cs.T
    lo, hi = corners[:, :2].min(0), corners[:, :2].max(0)
    pad = 0.02 * (hi - lo).max()
    fig, axes = panels(len(genes), ncols=ncols, size=panel_size, ax=ax)
    for a, g in zip(axes, genes):
        background(a, sdata, table, max_px=max_px)
        v = np.asarray(level.sel(c=g).data, np.float32)
        norm = Normalize(*limits(v, vmax))
        art = imshow_in_cs(a, v, levels, to_cs, cmap=_fading(cmap, alpha), norm=norm)
        a.set_xlim(lo[0] - pad, hi[0] + pad)
        a.set_ylim(hi[1] + pad, lo[1] - pad)
        a.set_aspect("equal")
        a.set_axis_off()
        a.set_title(g, style="italic")  # gene names in italics, as the other figures
        # the colour bar under each panel, labelled with the map's units: beside it, its label ran into the next panel
        fig.colorbar(art, ax=a, location="bottom", shrink=0.8, pad=0.04, label=_units(sdata, name))
    if ax is None:  # a figure of its own says what the map is (the user's axes are theirs); its scale if known
        model = table.uns[UNS_KEY].get("model", {}) if table is not None else {}
        px = float(model.get("um_per_px", 0)) * float(model.get("map_stride", 0))
        fig.suptitle(f"dense map, {px:g} µm per pixel" if px > 0 else "dense map")
    return finish(fig, axes, show=show, save=save)


def _fading(cmap: str, alpha: float, ramp: float = 0.25) -> ListedColormap:
    """``cmap`` whose opacity rises from 0 at its low end to ``alpha`` at ``ramp`` of its range."""
    colors = plt.get_cmap(cmap)(np.linspace(0, 1, 256))
    colors[:, 3] = alpha * np.clip(np.linspace(0, 1, 256) / ramp, 0, 1)
    return ListedColormap(colors, name=f"{cmap}_fading")


def _made_with(sdata: SpatialData, name: str):
    """A prediction table made with the map ``name`` (its record: the model, image, coordinate system), or None.

    A table whose model made the map now (its fingerprint, recorded beside the map) before others that claim it:
    those may predate a map replaced by another model (``overwrite=True``).
    """
    made_by = sdata.attrs.get(UNS_KEY, {}).get("maps", {}).get(name, {}).get("model")
    claims = [t for t in sdata.tables.values() if t.uns.get(UNS_KEY, {}).get("map") == name]
    if made_by is None:  # a map from before the record
        return next(iter(claims), None)
    # a claim of another model's is stale; one with no record (made before it) may be the map's own
    fits = [t for t in claims if t.uns[UNS_KEY].get("map_model") in (made_by, None)]
    return next(iter(sorted(fits, key=lambda t: t.uns[UNS_KEY].get("map_model") != made_by)), None)


def _units(sdata: SpatialData, name: str) -> str:
    """What the map's values are, from the model that made it (as :func:`pixnet.tl.predict` documents them)."""
    table = _made_with(sdata, name)
    semantics = table.uns[UNS_KEY].get("model", {}).get("semantics") if table is not None else None
    if semantics == "density":
        return "expected counts per map pixel"
    if semantics == "sum":  # the paper's Eq. 5: a spot's value is the sum of the map over it
        return "log-normalised expression per map pixel (summed over a spot)"
    return "log-normalised expression" if semantics == "mean" else ""
