"""Accuracy per gene, and training curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator
from spatialdata import SpatialData

from ..model import PixNet
from ._utils import finish, panels, prediction, rows_label

LOSS_NAMES = {"poisson": "Poisson", "poisson_pcc": "Poisson + PCC", "mse_pcc": "MSE + PCC"}


def scores(
    sdata: SpatialData,
    *,
    bin_size: float | None = None,
    shapes: str | None = None,
    key: str | None = None,
    key_added: str = "pixnet",
    n_top: int = 10,
    show: bool | None = None,
    save: str | Path | None = None,
):
    """Distribution of per-gene PCC (from :func:`pixnet.tl.evaluate`) and the best and worst genes."""
    table = prediction(sdata, bin_size=bin_size, shapes=shapes, key=key, key_added=key_added)
    if "pcc" not in table.var:
        raise KeyError("No per-gene PCC in this table: run pixnet.tl.evaluate(sdata, ...) first.")
    pcc = table.var["pcc"].dropna().sort_values()
    fig, axes = panels(2, ncols=2, size=4.5, layout=None)
    counts, _, _ = axes[0].hist(pcc.to_numpy(), bins=30, color="0.4")
    axes[0].set_ylim(0, max(counts.max(), 1) * 1.45)  # headroom: the legend sits above the bars
    # distinct colours, the mean drawn first and widest: when the median equals the mean, both lines still show
    marks = (("PCC@M (mean)", pcc.mean(), "-", "C3", 2.5), ("PCC@S (median)", pcc.median(), "--", "C1", 1.5),
             ("PCC@F (first quartile)", pcc.quantile(0.25), ":", "C0", 1.5))  # fmt: skip
    for label, q, ls, color, lw in marks:
        axes[0].axvline(q, color=color, ls=ls, lw=lw, label=f"{label} {q:.3f}")
    lines, labels = axes[0].get_legend_handles_labels()
    # F, S, M: low to high; above the bars, on a light box so that no line crosses the text
    axes[0].legend(lines[::-1], labels[::-1], fontsize=8, loc="upper left", framealpha=0.9, edgecolor="none")
    axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))  # a count of genes
    axes[0].set(xlabel="PCC across bins", ylabel="genes", title=f"per-gene PCC, {rows_label(table)}")
    ends = (
        np.concatenate([pcc.iloc[:n_top].to_numpy(), pcc.iloc[-n_top:].to_numpy()])
        if len(pcc) > 2 * n_top
        else pcc.to_numpy()
    )
    names = list(pcc.index[:n_top]) + list(pcc.index[-n_top:]) if len(pcc) > 2 * n_top else list(pcc.index)
    axes[1].barh(range(len(ends)), ends, color=["C0" if v >= 0 else "C3" for v in ends])
    axes[1].set_yticks(range(len(ends)), names, fontsize=7, style="italic")
    axes[1].set(xlabel="PCC", title=f"worst and best {n_top} genes")
    fig.tight_layout()
    return finish(fig, axes, show=show, save=save)


def training(model: PixNet, *, show: bool | None = None, save: str | Path | None = None):
    """Training loss, validation loss and validation PCC per epoch; the epoch the model kept is marked.

    The loss is named as :class:`~pixnet.model.ModelConfig` ``loss`` says; epochs count from 1,
    as fit's log does. Returns the axes (one without validation, ``fit(val_fraction=0)``).
    """
    h = model.history
    if not h:
        raise ValueError("This model has no training history (it was not trained with pixnet.tl.fit).")
    epochs = [r["epoch"] + 1 for r in h]  # from 1, as the log and the progress bar count them
    validated = any(np.isfinite(r.get("val_pcc", np.nan)) for r in h)  # fit(val_fraction=0): no validation
    fig, axes = panels(2 if validated else 1, ncols=2, size=4.0, layout=None)
    for key, label in (("train_loss", "train"), ("val_loss", "validation"))[: 2 if validated else 1]:
        ys = [r.get(key, np.nan) for r in h]
        axes[0].plot(epochs, ys, marker="o", ms=3, label=label)
    loss = LOSS_NAMES.get(model.config.loss, model.config.loss)
    axes[0].set(xlabel="epoch", ylabel=f"loss ({loss})", title="loss" if validated else "training loss (no validation)")
    if validated:
        axes[1].plot(epochs, [r.get("val_pcc", np.nan) for r in h], marker="o", ms=3, color="C2")
        axes[1].set(xlabel="epoch", ylabel="PCC@M", title="validation PCC")
    best = model.training.get("params", {}).get("best_epoch")
    if validated and best is not None:  # the weights the model holds: fit keeps the epoch of best validation PCC
        for a in axes:
            a.axvline(best + 1, color="0.5", ls=":", lw=1, label=f"kept: epoch {best + 1} (best validation PCC)")
    axes[0].legend(frameon=False)
    for a in axes:
        a.set_xlim(0.5, max(epochs) + 0.5)  # whole epochs on the axis, one epoch's run too
        a.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    fig.tight_layout()
    return finish(fig, axes, show=show, save=save)
