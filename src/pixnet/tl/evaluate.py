"""``pixnet.tl.evaluate``: the paper's metrics between predicted and measured expression."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse
from spatialdata import SpatialData

from .._keys import UNS_KEY, prediction_table, target_name
from ..data.bins import check_counts
from ..data.pairs import paired_rows, scored_values
from ..model.losses import pearson_from_sums
from ..pp import Normalization

logger = logging.getLogger(__name__)


CHUNK = 65536  # bins per block: evaluation streams through tables of millions of bins


def metrics(pred: np.ndarray, measured: np.ndarray, genes: list[str] | None = None) -> tuple[pd.Series, pd.DataFrame]:
    """MSE, MAE and PCC@F/S/M between two bins x genes matrices in the same units.

    PCC@F, PCC@S and PCC@M are the first quartile, median and mean over genes of each gene's
    Pearson correlation across bins. A gene that is constant on either side has no
    correlation: it is left out of the PCC summaries and counted in ``n_constant_genes``.

    Returns
    -------
    The summary, and a per-gene table with ``pcc`` and ``constant``.

    """
    pred, measured = np.asarray(pred), np.asarray(measured)
    if pred.shape != measured.shape:
        raise ValueError(f"Predicted {pred.shape} and measured {measured.shape} shapes differ.")
    moments = _Moments()
    for s in range(0, pred.shape[0], CHUNK):
        moments.add(pred[s : s + CHUNK], measured[s : s + CHUNK])
    return moments.summary(genes)


class _Moments:
    """Per-gene sums of a prediction and a measurement, accumulated block by block.

    Values are shifted by the first row (exact for constant genes, and free of the cancellation
    of raw one-pass sums), so the correlations equal the two-pass formula's to rounding.
    """

    def __init__(self):
        self.n, self.shift = 0, None

    def add(self, pred: np.ndarray, measured: np.ndarray) -> None:
        pred, measured = np.asarray(pred, np.float64), np.asarray(measured, np.float64)
        if not (np.isfinite(pred).all() and np.isfinite(measured).all()):
            raise ValueError("Predicted or measured values contain NaN or inf.")
        if len(pred) == 0:
            return
        if self.shift is None:
            self.shift = (pred[0].copy(), measured[0].copy())
            self.sums = np.zeros((5, pred.shape[1]))  # p, m, pp, mm, pm
            self.se = self.ae = 0.0
        d = pred - measured
        self.se += float((d * d).sum())
        self.ae += float(np.abs(d).sum())
        p, m = pred - self.shift[0], measured - self.shift[1]
        self.sums += np.stack([p.sum(0), m.sum(0), (p * p).sum(0), (m * m).sum(0), (p * m).sum(0)])
        self.n += len(pred)

    def summary(self, genes) -> tuple[pd.Series, pd.DataFrame]:
        if self.n < 2:
            raise ValueError("At least two bins are needed to correlate predictions with measurements.")
        pcc = pearson_from_sums(self.n, *self.sums)
        constant = np.isnan(pcc)
        valid = pcc[~constant]
        size = self.n * len(pcc)
        summary = pd.Series(
            {
                "MSE": self.se / size,
                "MAE": self.ae / size,
                "PCC@F": float(np.percentile(valid, 25)) if len(valid) else np.nan,
                "PCC@S": float(np.median(valid)) if len(valid) else np.nan,
                "PCC@M": float(np.mean(valid)) if len(valid) else np.nan,
                "n_bins": int(self.n),
                "n_genes": len(pcc),
                "n_constant_genes": int(constant.sum()),
            }
        )
        return summary, pd.DataFrame({"pcc": pcc, "constant": constant}, index=genes)


def evaluate(
    sdata: SpatialData,
    *,
    bin_size: float | None = None,
    shapes: str | None = None,
    table: str | None = None,
    key_added: str = "pixnet",
    layer: str | None = None,
) -> pd.Series:
    """Compare :func:`pixnet.tl.predict`'s table with the measured one: MSE, MAE, PCC@F, PCC@S, PCC@M.

    Measured counts are normalised as the model's predictions are (each bin by its total over
    all genes, ``log1p(x / total * 1e4)``); bins are matched by ``obs_names``, and each pair is
    checked to be the same place (centres within a quarter of a bin) before anything is scored.
    Bins that :func:`pixnet.tl.predict` marked as off the image (``obs["pixnet_on_image"]``) are
    left out, with a warning.

    Parameters
    ----------
    sdata
        The slide, with a measured table and the prediction table.
    bin_size, shapes
        Which prediction: ``{key_added}_square_008um`` for ``bin_size=8``, ``{key_added}_{shapes}``;
        by default the spots a spot-level reader recorded (``spots``).
    table
        The measured table (default: ``square_008um``, or the table annotating ``shapes``).
    key_added
        The prefix given to :func:`pixnet.tl.predict`.
    layer
        Compare this layer of the prediction (``"lognorm"``) instead of ``X``: the layers on the
        measurement's log-normalised scale (``"counts"``, expected counts, is refused).

    Raises
    ------
    KeyError
        No such prediction, measured table or layer.
    ValueError
        A layer not on the measured scale; a measured table that is not counts (normalised or
        log-transformed by scanpy); bins the two tables name alike that lie in different places.

    Returns
    -------
    The metrics; the per-gene PCC is also stored in the prediction table's ``var["pcc"]`` and the
    summary in its ``uns["pixnet"]["evaluation"]``.

    """
    if bin_size is None and shapes is None:  # the spots a reader recorded (pixnet.io.spots and its layouts)
        shapes = sdata.attrs.get(UNS_KEY, {}).get("shapes")
    if bin_size is None and shapes is None:
        raise ValueError("Pass bin_size=... or shapes=... (what was given to pixnet.tl.predict).")
    target = target_name(bin_size=bin_size, shapes=None if bin_size is not None else shapes)
    pred_name = prediction_table(key_added, target)
    if pred_name not in sdata.tables:
        raise KeyError(
            f"No prediction table {pred_name!r}: "
            f"run pixnet.tl.predict(sdata, ...) first (with key_added={key_added!r})."
        )
    pred = sdata.tables[pred_name]
    meas_name = table or pred.uns.get(UNS_KEY, {}).get("source_table") or (target if target in sdata.tables else None)
    if meas_name is None or meas_name not in sdata.tables:
        raise KeyError(f"No measured table for {target!r}; pass table=... (the table of measured counts).")
    meas_name = str(meas_name)  # spatialdata-io keys some tables with an enum, which anndata cannot write in uns
    measured = sdata.tables[meas_name]
    scored_values(pred, layer)
    check_counts(measured, meas_name)
    rows = paired_rows(sdata, pred_name, meas_name)
    summary, per_gene = compare(pred, measured, layer=layer, rows=rows)
    pred.var["pcc"] = per_gene["pcc"].to_numpy()
    pred.uns.setdefault(UNS_KEY, {})["evaluation"] = {**summary.to_dict(), "measured": meas_name, "layer": layer or "X"}
    return summary.rename(pred_name)


def compare(
    pred: ad.AnnData, measured: ad.AnnData, *, layer: str | None = None, rows: pd.Index | None = None
) -> tuple[pd.Series, pd.DataFrame]:
    """Metrics between a prediction table and a table of measured counts, matched by bins and genes.

    ``rows``: the ``obs_names`` to score (default: every name the two tables share).
    """
    genes = [g for g in pred.var_names if g in measured.var_names]
    missing = len(pred.var_names) - len(genes)
    if not genes:
        raise KeyError("The measured table shares no gene with the prediction.")
    if missing:
        logger.warning("%d predicted genes are not in the measured table and are skipped.", missing)
    common = pred.obs_names.intersection(measured.obs_names, sort=False) if rows is None else rows
    if len(common) < 2:
        raise ValueError(
            "Predicted and measured tables share fewer than 2 bins (obs_names); were they made for the same bins?"
        )
    norm = Normalization(**pred.uns.get(UNS_KEY, {}).get("normalization", {}))
    rows_p, rows_m = pred.obs_names.get_indexer(common), measured.obs_names.get_indexer(common)
    cols_p, cols_m = pred.var_names.get_indexer(genes), measured.var_names.get_indexer(genes)
    values = scored_values(pred, layer)
    moments = _Moments()
    for s in range(0, len(common), CHUNK):  # block by block: a 2 um table may not fit in memory
        x = _take_rows(measured.X, rows_m[s : s + CHUNK])
        totals = np.asarray(x.sum(axis=1)).ravel()
        counts = x[:, cols_m]
        truth = norm.apply(counts.toarray() if sparse.issparse(counts) else np.asarray(counts), totals)
        moments.add(_take_rows(values, rows_p[s : s + CHUNK])[:, cols_p], truth)
    summary, per_gene = moments.summary(genes)
    constant = per_gene.index[per_gene["constant"]].tolist()
    if constant:
        logger.warning(
            "%d genes are constant in the prediction or the measurement (no PCC): %s", len(constant), constant[:10]
        )
    per_gene = per_gene.reindex(pred.var_names)
    return summary, per_gene


def _take_rows(arr, rows: np.ndarray) -> np.ndarray:
    """``arr[rows]`` in memory, from numpy, scipy or dask (a contiguous run of rows is a slice)."""
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows) and (np.diff(rows) == 1).all():
        rows = slice(int(rows[0]), int(rows[-1]) + 1)
    out = arr[rows]
    return out.compute() if hasattr(out, "compute") else out
