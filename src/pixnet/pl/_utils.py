"""Shared plotting pieces: figure layout, the H&E background, bins drawn on the slide."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import EllipseCollection, PolyCollection
from matplotlib.transforms import Affine2D
from spatialdata import SpatialData

from .. import _keys
from .._keys import ARRAY_COL, ARRAY_ROW, UNS_KEY, target_name
from ..data import image_levels
from ..data.grids import annotated_element, fitted_grid, grid_holds, table_bin_size
from ..data.image import element_to_cs
from ..data.slide import image_and_cs
from ..geometry import BinGrid


def panels(n: int, *, ncols: int, size: float, ax=None, nrows: int | None = None, layout: str | None = "compressed"):
    """A figure with ``n`` panels (or the given axes), as scanpy lays out one panel per key.

    ``layout="compressed"`` (matplotlib's) packs equal-aspect panels of a slide, colour bars and a
    title without the empty bands square cells leave; ``None`` for figures laid out by the caller.
    """
    if n == 0:
        raise ValueError("Nothing to draw: pass at least one gene.")
    if ax is not None:
        axes = np.atleast_1d(ax).ravel()
        if len(axes) < n:
            raise ValueError(f"{n} panels are needed but {len(axes)} axes were given.")
        return axes[0].figure, axes[:n]  # the ones drawn in (the others are the user's)
    nrows = nrows or int(np.ceil(n / ncols))
    ncols = min(ncols, n) if nrows == 1 else ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False, layout=layout)
    for a in axes.ravel()[n:]:
        a.set_visible(False)
    return fig, axes.ravel()[:n]


def finish(fig, axes, *, show: bool | None, save: str | Path | None):
    """Save (when asked), show (when asked, or by default in an interactive session), return the axes."""
    if save:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=150, bbox_inches="tight")
    if show or (show is None and not save and mpl.is_interactive()):
        plt.show()
    return axes if len(axes) > 1 else axes[0]


def check_slide(sdata) -> None:
    """Refuse what is not a SpatialData (e.g. evaluate's returned metrics: the figures read what predict stored)."""
    if not isinstance(sdata, SpatialData):
        raise TypeError(
            f"Expected the SpatialData the prediction was written into, got {type(sdata).__name__}: pass the slide "
            "(pixnet.tl.evaluate stores its per-gene PCC in the prediction's table for pixnet.pl.scores)."
        )


def prediction_table(sdata: SpatialData, *, bin_size, shapes, key, key_added: str) -> str:
    """The name of the table :func:`pixnet.tl.predict` wrote for these arguments."""
    check_slide(sdata)
    if key is not None:
        name = key
    elif bin_size is not None or shapes is not None:
        name = _keys.prediction_table(key_added, target_name(bin_size=bin_size, shapes=None if bin_size else shapes))
    else:
        raise ValueError("Pass bin_size=..., shapes=... or key=... (the table written by pixnet.tl.predict).")
    if name not in sdata.tables:
        raise KeyError(f"No table {name!r}: run pixnet.tl.predict(sdata, ...) first (tables: {sorted(sdata.tables)}).")
    return name


def prediction(sdata: SpatialData, *, bin_size, shapes, key, key_added: str):
    """The table :func:`pixnet.tl.predict` wrote for these arguments (:func:`prediction_table` names it)."""
    name = prediction_table(sdata, bin_size=bin_size, shapes=shapes, key=key, key_added=key_added)
    return sdata.tables[name]


def rows_label(table) -> str:
    """What a prediction's rows are, for a title: ``"8 µm bins"``, or the shapes' element name."""
    info = table.uns.get(UNS_KEY, {})
    if info.get("bin_size_um") is not None:
        return f"{float(info['bin_size_um']):g} µm bins"
    return str(info.get("shapes") or info.get("target") or "")


def values(table, genes, layer: str | None) -> np.ndarray:
    """Dense values of ``genes`` (columns) from ``X`` or a layer."""
    missing = [g for g in genes if g not in table.var_names]
    if missing:
        raise KeyError(f"Genes not in the table: {missing}. Available: {table.var_names[:8].tolist()}...")
    sub = table[:, list(genes)]
    x = sub.layers[layer] if layer else sub.X
    x = x.compute() if hasattr(x, "compute") else x
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, np.float32)


def slide_names(sdata: SpatialData, table=None) -> tuple[str | None, str]:
    """The H&E's element name (None if it cannot be told) and the coordinate system, as ``table``'s prediction used."""
    record = {} if table is None else table.uns.get(UNS_KEY, {})
    try:
        return image_and_cs(sdata, record=record)
    except (KeyError, ValueError):  # no image to tell: the figure goes without the H&E
        cs = record.get("coordinate_system") or sdata.attrs.get(UNS_KEY, {}).get("coordinate_system")
        return None, cs or "global"


def background(ax, sdata: SpatialData, table=None, *, max_px: int = 2000) -> None:
    """The H&E at a resolution fit for a figure, in the coordinate system (through the image's transformation).

    The image and coordinate system are those ``table``'s prediction used (else :mod:`pixnet.io`'s record, else the
    slide's ``*_full_image``); none drawn when no image can be told.
    """
    name, cs = slide_names(sdata, table)
    if name is None:
        return
    levels = image_levels(sdata.images[name])
    to_cs = element_to_cs(levels[0], cs, f"The image {name!r}")
    level = figure_level(levels, max_px)
    imshow_in_cs(ax, np.moveaxis(np.asarray(level.data[:3]), 0, -1), levels, to_cs)


def figure_level(levels: list, max_px: int):
    """The finest level of an image element whose longer side is at most ``max_px`` (else its coarsest)."""
    return next((lv for lv in levels if max(lv.sizes["y"], lv.sizes["x"]) <= max_px), levels[-1])


def imshow_in_cs(ax, arr: np.ndarray, levels: list, to_cs: np.ndarray, **kwargs):
    """``arr``, any level of an element, drawn where the element lies: level 0's pixel edges through ``to_cs``."""
    h, w = levels[0].sizes["y"], levels[0].sizes["x"]
    kwargs.setdefault("interpolation", "antialiased")
    return ax.imshow(arr, extent=(0, w, h, 0), transform=Affine2D(to_cs) + ax.transData, **kwargs)


def draw(ax, sdata: SpatialData, table, v: np.ndarray, *, cmap, vmin, vmax, alpha: float = 1.0):
    """Bins coloured by ``v``: a grid as one rotated image, other shapes as circles or polygons."""
    grid = table.uns.get(UNS_KEY, {}).get("grid")
    norm = mpl.colors.Normalize(vmin=vmin, vmax=vmax)
    g = BinGrid.from_dict(grid) if grid is not None and ARRAY_ROW in table.obs else None
    region = annotated_element(table)
    cs = slide_names(sdata, table)[1]
    if g is not None and region in sdata and not grid_holds(sdata, table, g, cs):
        # the elements were moved since the grid was recorded: the squares drawn where they lie now
        g = None if region in sdata.shapes else fitted_grid(sdata, table, g.bin_size_um, cs)
    if g is None and region in sdata.labels and ARRAY_ROW in table.obs:  # bins as labels (spatialdata-io's)
        g = fitted_grid(sdata, table, table_bin_size(table), cs)
    if g is not None:
        r, c = table.obs[ARRAY_ROW].to_numpy(), table.obs[ARRAY_COL].to_numpy()
        r0, c0 = r.min(), c.min()
        img = np.full((r.max() - r0 + 1, c.max() - c0 + 1), np.nan, np.float32)
        img[r - r0, c - c0] = v
        to_px = Affine2D(g.affine)
        art = ax.imshow(img, extent=(c0 - 0.5, c.max() + 0.5, r.max() + 0.5, r0 - 0.5), cmap=cmap, norm=norm,
                        transform=to_px + ax.transData, interpolation="nearest", alpha=alpha)  # fmt: skip
        corners = g.corners(np.array([r0, r0, r.max(), r.max()]), np.array([c0, c.max(), c0, c.max()])).reshape(-1, 2)
        lo, hi = corners.min(0), corners.max(0)
    else:
        art, lo, hi = _shapes(ax, sdata, table, v, cmap, norm, alpha)
    pad = 0.02 * (hi - lo).max()
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(hi[1] + pad, lo[1] - pad)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return art


def _shapes(ax, sdata, table, v, cmap, norm, alpha):
    from ..data import shapes_to_spots

    region = annotated_element(table)
    cs = slide_names(sdata, table)[1]
    instance_key = table.uns["spatialdata_attrs"]["instance_key"]
    gdf = sdata.shapes[region].loc[table.obs[instance_key].to_numpy()]
    spots = shapes_to_spots(gdf, element_to_cs(gdf, cs))
    if spots.kind == "circle":
        d = 2 * spots.size
        art = EllipseCollection(d, d, np.zeros(len(d)), units="xy", offsets=spots.centres,
                                offset_transform=ax.transData,
                                cmap=cmap, norm=norm, alpha=alpha)  # fmt: skip
    else:
        import shapely

        verts = [np.asarray(shapely.get_coordinates(p)) for p in spots.polygons]
        art = PolyCollection(verts, cmap=cmap, norm=norm, alpha=alpha)
    art.set_array(v)
    ax.add_collection(art)
    ext = spots.extent()[:, None]
    return art, (spots.centres - ext).min(0), (spots.centres + ext).max(0)


def limits(v: np.ndarray, vmax: str | float | None) -> tuple[float, float]:
    """Colour limits: ``"p99"`` is the 99th percentile, ``"max"`` the largest value, a number is taken as it is."""
    finite = v[np.isfinite(v)]
    vmax = "p100" if vmax == "max" else vmax
    if isinstance(vmax, str):
        try:
            q = float(vmax[1:]) if vmax.startswith("p") else None
        except ValueError:
            q = None
        if q is None or not 0 <= q <= 100:
            raise ValueError(f"vmax={vmax!r}: pass a number, 'max' or a percentile such as 'p99'.")
        hi = float(np.percentile(finite, q)) if len(finite) else 1.0
    else:
        hi = float(vmax) if vmax is not None else float(finite.max(initial=1.0))
    lo = float(min(0.0, finite.min(initial=0.0)))
    return lo, hi if hi > lo else lo + 1.0
