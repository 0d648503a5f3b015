"""The dense map over the H&E, through spatialdata-plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from spatialdata import SpatialData

from .._keys import UNS_KEY, map_image
from ..data import image_levels
from ._utils import finish, panels


def map(
    sdata: SpatialData,
    genes: str | Sequence[str],
    *,
    key_added: str = "pixnet",
    cmap: str = "magma",
    alpha: float = 0.7,
    ncols: int = 3,
    panel_size: float = 5.0,
    ax=None,
    show: bool | None = None,
    save: str | Path | None = None,
):
    """The dense expression map of ``genes`` (``{key_added}_map``) overlaid on the H&E with spatialdata-plot.

    The same element opens in napari-spatialdata, channel by gene.

    Returns
    -------
    The axes (one per gene).

    """
    import spatialdata_plot  # noqa: F401 - registers the .pl accessor

    genes = [genes] if isinstance(genes, str) else list(genes)
    name = map_image(key_added)
    if name not in sdata.images:
        raise KeyError(f"No map {name!r}: run pixnet.tl.predict(sdata, ...) with a dense model first.")
    channels = list(image_levels(sdata.images[name])[0].coords["c"].values)
    missing = [g for g in genes if g not in channels]
    if missing:
        raise KeyError(f"Genes not in the map: {missing}.")
    attrs = sdata.attrs.get(UNS_KEY, {})
    cs = attrs.get("coordinate_system", "global")
    # the colour bar under each panel, labelled with the map's units: beside it, its label ran into the next panel
    bar = {"loc": "bottom", "label": _units(sdata, name)}
    fig, axes = panels(len(genes), ncols=ncols, size=panel_size, ax=ax)
    for a, g in zip(axes, genes):
        pl = sdata.pl
        if attrs.get("image") in sdata.images:
            pl = pl.render_images(attrs["image"]).pl
        pl = pl.render_images(name, channel=g, cmap=cmap, alpha=alpha, colorbar_params=bar).pl
        pl.show(ax=a, coordinate_systems=cs, title=g)
        a.set_axis_off()
    return finish(fig, axes, show=show, save=save)


def _units(sdata: SpatialData, name: str) -> str:
    """What the map's values are, from the model that made it (as :func:`pixnet.tl.predict` documents them)."""
    tables = [t for t in sdata.tables.values() if t.uns.get(UNS_KEY, {}).get("map") == name]
    semantics = tables[0].uns[UNS_KEY].get("model", {}).get("semantics") if tables else None
    if semantics == "density":
        return "expected counts per map pixel"
    if semantics == "sum":  # the paper's Eq. 5: a spot's value is the sum of the map over it
        return "log-normalised expression per map pixel (summed over a spot)"
    return "log-normalised expression" if semantics == "mean" else ""
