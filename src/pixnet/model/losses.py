"""Losses on spot aggregates (the paper's MSE + batch PCC, gene-weighted Poisson) and validation's per-gene PCC."""

from __future__ import annotations

import numpy as np
import torch


def log_normalize(counts, totals, target_sum: float, *, log1p: bool = True, out: torch.Tensor | None = None):
    """``log1p(counts / totals * target_sum)``, 0 where the total is 0 (as scanpy leaves empty bins).

    pixnet's one normalisation: of torch tensors (differentiable, for the losses) and of numpy
    arrays (in float64, for measurements and predictions: :class:`pixnet.pp.Normalization`).
    ``counts`` is ``(bins, genes)``, ``totals`` ``(bins,)``, each bin's count over all genes.
    ``out``: a tensor of ``counts``' shape to write into, in place (torch only; not differentiable).
    """
    if isinstance(counts, torch.Tensor):
        scale = torch.where(totals > 0, target_sum / totals.clamp_min(1e-12), torch.zeros_like(totals))
        if out is not None:
            torch.mul(counts, scale[:, None], out=out)
            return out.log1p_() if log1p else out
        out = counts * scale[:, None]
        return torch.log1p(out) if log1p else out
    totals = np.asarray(totals, np.float64).reshape(-1)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    out = np.asarray(counts, np.float64) * scale[:, None]
    return np.log1p(out) if log1p else out


def pcc_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 - mean over genes of the Pearson correlation across the spots of the batch."""
    p = pred - pred.mean(0, keepdim=True)
    t = target - target.mean(0, keepdim=True)
    r = (p * t).sum(0) / (p.norm(dim=0) * t.norm(dim=0) + eps)  # (genes,)
    return 1 - r.mean()


def mse_pcc(pred: torch.Tensor, target: torch.Tensor, pcc_weight: float = 0.5) -> torch.Tensor:
    """The paper's loss: MSE + lambda * (1 - batch PCC), on normalised values."""
    return torch.mean((pred - target) ** 2) + pcc_weight * pcc_loss(pred, target)


def poisson(rate: torch.Tensor, counts: torch.Tensor, gene_weight: torch.Tensor) -> torch.Tensor:
    """Poisson deviance per spot and gene, weighted per gene so that rare genes count as much as abundant ones.

    ``gene_weight`` is typically 1 / mean count of each gene per spot; the deviance (0 at a
    perfect fit) keeps the loss's scale readable.
    """
    rate = rate.clamp_min(1e-8)
    # counts * log(counts / rate), written so that zero counts give zero gradient (xlogy's is 0/0 there).
    log_ratio = torch.where(
        counts > 0, counts * (torch.log(counts.clamp_min(1e-8)) - torch.log(rate)), torch.zeros_like(rate)
    )
    dev = rate - counts + log_ratio  # (spots, genes), >= 0
    return (dev * gene_weight[None, :]).mean()


def pearson_per_gene(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column across rows; NaN where either side is constant."""
    p = pred - pred.mean(0)
    t = target - target.mean(0)
    return pearson_from_sums(len(p), p.sum(0), t.sum(0), (p * p).sum(0), (t * t).sum(0), (p * t).sum(0))


def pearson_from_sums(n: int, sp, st, spp, stt, spt) -> np.ndarray:
    """Per-gene Pearson correlation from the sums of ``p``, ``t``, ``p*p``, ``t*t``, ``p*t`` over ``n`` rows.

    pixnet's one Pearson: :func:`pearson_per_gene` (one block) and :func:`pixnet.tl.metrics`
    (sums accumulated block by block) both end here. NaN where either side is constant.
    """
    vp, vt = spp - sp * sp / n, stt - st * st / n
    den = np.sqrt(np.maximum(vp, 0) * np.maximum(vt, 0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (spt - sp * st / n) / den, np.nan)
