"""Expression over the slide: predicted (``expression``) and measured next to predicted (``compare``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from spatialdata import SpatialData

from .._arrays import in_memory
from .._keys import UNS_KEY
from ..data.bins import check_counts
from ..data.pairs import paired_rows, scored_values
from ..model.losses import pearson_per_gene
from ..pp import Normalization
from ._utils import background, draw, finish, limits, panels, prediction, prediction_table, rows_label, values


def expression(
    sdata: SpatialData,
    genes: str | Sequence[str],
    *,
    bin_size: float | None = None,
    shapes: str | None = None,
    key: str | None = None,
    key_added: str = "pixnet",
    layer: str | None = None,
    on_image: bool = True,
    cmap: str = "magma",
    vmax: str | float = "p99",
    alpha: float = 0.85,
    ncols: int = 4,
    panel_size: float = 4.0,
    ax=None,
    show: bool | None = None,
    save: str | Path | None = None,
):
    """Predicted expression of ``genes`` over the slide, one panel per gene.

    Reads the table :func:`pixnet.tl.predict` wrote (``{key_added}_square_008um`` for
    ``bin_size=8``, or ``key``). Grid bins are drawn as the rotated squares they are.

    Parameters
    ----------
    sdata
        The slide, after :func:`pixnet.tl.predict`.
    genes
        Gene names.
    bin_size, shapes, key, key_added
        Which prediction to show.
    layer
        ``None`` for ``X`` (the expected measured value), ``"lognorm"`` or ``"counts"``.
    on_image
        Draw over the H&E.
    cmap, vmax, alpha
        Colour map, upper colour limit (``"p99"``: 99th percentile of each gene) and opacity.
    ncols, panel_size
        Layout.
    ax, show, save
        As in scanpy: draw into ``ax``; show the figure; save it to this path.

    Returns
    -------
    The axes (one per gene).

    """
    genes = [genes] if isinstance(genes, str) else list(genes)
    table = prediction(sdata, bin_size=bin_size, shapes=shapes, key=key, key_added=key_added)
    v = values(table, genes, layer)
    fig, axes = panels(len(genes), ncols=ncols, size=panel_size, ax=ax)
    unit = {"counts": "expected counts", "lognorm": "log-normalised"}.get(layer or "", "predicted log-normalised")
    for a, g, col in zip(axes, genes, v.T):
        if on_image:
            background(a, sdata, table)
        vmin, vmx = limits(col, vmax)
        art = draw(a, sdata, table, col, cmap=cmap, vmin=vmin, vmax=vmx, alpha=alpha if on_image else 1.0)
        a.set_title(g, style="italic")
        fig.colorbar(art, ax=a, shrink=0.7, label=unit)
    if ax is None:  # a figure of its own says which prediction it shows (the user's axes are theirs to title)
        fig.suptitle(f"predicted, {rows_label(table)}")
    return finish(fig, axes, show=show, save=save)


def compare(
    sdata: SpatialData,
    genes: str | Sequence[str],
    *,
    bin_size: float | None = None,
    shapes: str | None = None,
    key: str | None = None,
    key_added: str = "pixnet",
    table: str | None = None,
    layer: str | None = None,
    cmap: str = "magma",
    vmax: str | float = "p99",
    panel_size: float = 3.5,
    show: bool | None = None,
    save: str | Path | None = None,
):
    """Measured (top) and predicted (bottom) expression of each gene, on the same colour scale, with its PCC.

    Measured counts are normalised as the predictions are (``log1p(x / total * 1e4)``). The PCC
    is the gene's Pearson correlation across bins.

    Returns
    -------
    Axes, shape ``(2, n_genes)``.

    """
    genes = [genes] if isinstance(genes, str) else list(genes)
    pred_name = prediction_table(sdata, bin_size=bin_size, shapes=shapes, key=key, key_added=key_added)
    pred = sdata.tables[pred_name]
    meas_name = table or pred.uns.get(UNS_KEY, {}).get("source_table")
    if meas_name is None or meas_name not in sdata.tables:
        raise KeyError("No measured table for this prediction; pass table=... (a table of measured counts).")
    scored_values(pred, layer)
    check_counts(sdata.tables[meas_name], str(meas_name))
    # the rows pixnet.tl.evaluate scores (paired by name and place, on the image): the PCC shown is the one it reports
    rows = paired_rows(sdata, pred_name, str(meas_name))
    meas, pred = sdata.tables[meas_name][rows], pred[rows]
    norm = Normalization(**pred.uns.get(UNS_KEY, {}).get("normalization", {}))
    totals = np.asarray(in_memory(meas.X).sum(axis=1)).ravel()
    m = norm.apply(values(meas, genes, None), totals)
    p = values(pred, genes, layer)
    fig, axes = panels(2 * len(genes), ncols=len(genes), nrows=2, size=panel_size)
    fig.set_size_inches(1.3 * panel_size * len(genes), 2.1 * panel_size)
    axes = axes.reshape(2, len(genes))
    pcc = pearson_per_gene(p, m)
    for j, g in enumerate(genes):
        lo, hi = limits(np.concatenate([m[:, j], p[:, j]]), vmax)
        draw(axes[0, j], sdata, meas, m[:, j], cmap=cmap, vmin=lo, vmax=hi)
        art = draw(axes[1, j], sdata, pred, p[:, j], cmap=cmap, vmin=lo, vmax=hi)
        r = pcc[j]
        axes[0, j].set_title(f"{g}\nmeasured", style="italic")
        axes[1, j].set_title(f"{g}\npredicted, PCC {r:.2f}", style="italic")
        fig.colorbar(art, ax=axes[:, j], shrink=0.6, label="log-normalised")
    fig.suptitle(f"measured (top) and predicted (bottom), {rows_label(pred)}")
    finish(fig, axes.ravel(), show=show, save=save)
    return axes
