"""The demo the README runs: a synthetic Visium HD slide, fitted on 16 um bins, predicted at 8 and 2 um."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

DEMO_GENES = ["ERBB2", "FASN", "PTPRC", "COL1A1", "ADIPOQ", "CD68"]


def run_demo(out: Path, *, size_um: float = 1000.0, epochs: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Make the slide, fit, predict, evaluate; write figures, scores (per gene too) and the model to ``out``.

    Returns the scores at 8 and 2 um (rows) as evaluate gives them (columns PCC@F/S/M, MSE, MAE).
    """
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from . import datasets, io, pl, tl
    from ._keys import DEFAULT_KEY_ADDED, bin_table_name, prediction_table

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    path = datasets.visium_hd_demo(out / "visium_hd_demo", size_um=size_um, rotation_deg=1.0)
    sdata = io.visium_hd(path)
    logger.info("%s", sdata)
    for b in (2, 8, 16):
        t = sdata.tables[bin_table_name(b)]
        median = int(pd.Series(t.X.sum(1).A1).median())
        logger.info("%2d um bins: %7d bins x %d genes, median %d UMIs per bin", b, t.n_obs, t.n_vars, median)
    _total_counts_figure(sdata, out / "01_he_total_counts_8um.png")

    n_vars, epochs = sdata.tables[bin_table_name(16)].n_vars, epochs or 8
    logger.info("fitting on the 16 um bins, %d epochs: the %d genes of highest mean count of the %d measured "
                "(fit's n_genes=250, as the paper)", epochs, min(250, n_vars), n_vars)  # fmt: skip
    model = tl.fit(sdata, bin_size=16, epochs=epochs, progress=progress, model_dir=out / "model", overwrite=True)
    logger.info("%s", model)
    genes = [g for g in DEMO_GENES if g in model.genes][:4] or model.genes[:4]
    scores, gene_pcc = {}, {}
    for b in (8, 2):
        tl.predict(sdata, bin_size=b, progress=progress)
        scores[f"{b} um"] = tl.evaluate(sdata, bin_size=b)
        gene_pcc[f"{b} um"] = sdata.tables[prediction_table(DEFAULT_KEY_ADDED, bin_table_name(b))].var["pcc"]
    table = pd.DataFrame(scores).T[["PCC@F", "PCC@S", "PCC@M", "MSE", "MAE"]]

    pl.compare(sdata, genes, bin_size=8, save=out / "02_measured_vs_predicted_8um.png", show=False)
    pl.expression(sdata, genes, bin_size=2, save=out / "03_predicted_2um.png", show=False)
    pl.map(sdata, genes[:3], save=out / "04_dense_map.png", show=False)
    pl.scores(sdata, bin_size=8, save=out / "05_gene_scores_8um.png", show=False)
    pl.training(model, save=out / "06_training.png", show=False)
    plt.close("all")
    table.to_csv(out / "scores.csv")
    pd.DataFrame(gene_pcc).sort_values("8 um").rename_axis("gene").to_csv(out / "gene_scores.csv")  # worst first
    logger.info("done in %.0f s", time.perf_counter() - t0)
    return table


def _total_counts_figure(sdata, path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    from ._keys import bin_table_name
    from .pl._utils import background, draw

    t = sdata.tables[bin_table_name(8)]
    fig, ax = plt.subplots(figsize=(7, 6))
    background(ax, sdata)
    total = np.asarray(t.X.sum(1)).ravel()
    art = draw(ax, sdata, t, total, cmap="viridis", vmin=0, vmax=float(np.percentile(total, 99)), alpha=0.6)
    fig.colorbar(art, ax=ax, shrink=0.7, label="total counts per 8 µm bin")
    ax.set_title("H&E with 8 µm bins (synthetic Visium HD)")
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
