"""Losses on spot aggregates (the paper's MSE + batch PCC, gene-weighted Poisson) and validation's per-gene PCC."""

from __future__ import annotations

import numpy as np
import torch


def log_normalize(counts: torch.Tensor, totals: torch.Tensor, target_sum: float) -> torch.Tensor:
    """``log1p(counts / totals * target_sum)``, 0 where the total is 0 (as scanpy leaves empty bins)."""
    scale = torch.where(totals > 0, target_sum / totals.clamp_min(1e-12), torch.zeros_like(totals))
    return torch.log1p(counts * scale[:, None])


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
    den = np.sqrt((p * p).sum(0) * (t * t).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (p * t).sum(0) / den, np.nan)
