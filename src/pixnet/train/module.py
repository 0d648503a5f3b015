"""The training step as a LightningModule: map, aggregate into bins, compare with the counts."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch

from ..model.aggregate import aggregate
from ..model.losses import log_normalize, mse_pcc, pcc_loss, pearson_per_gene, poisson
from ..model.network import PixNetModule


class PixNetLightning(L.LightningModule):
    """Train a :class:`PixNetModule` on batches of tiles (see :func:`pixnet.data.collate`).

    ``gene_weight`` weighs the Poisson loss per output (typically 1 / mean count). ``expectation``
    (density models): ``(lam, total) -> E[log1p(x / T * target_sum)]`` under Poisson counts,
    differentiable (:func:`pixnet.infer.expect.expected_log_normalized_grad`, which ``tl.fit``
    passes): the predicted value the loss's PCC and ``val_pcc`` compare with the measurement, as
    predict's ``X`` is. Without it, ``log1p(lam / total * target_sum)``, which a measurement's
    zeros pull away from: to follow the measured values' rise with a bin's total (fewer zeros),
    it raises the shares of the many low genes where the total is high and lowers those of the
    few largest channels (the most abundant genes, ``other_genes``), until they anti-correlate.
    """

    def __init__(
        self,
        net: PixNetModule,
        *,
        lr: float,
        weight_decay: float,
        gene_weight: torch.Tensor,
        freeze_encoder: bool = False,
        feature_cache=None,
        schedule: str = "constant",
        total_steps: int = 0,
        expectation=None,
    ):
        super().__init__()
        self.net, self.cfg = net, net.config
        self.lr, self.weight_decay = lr, weight_decay
        self.schedule, self.total_steps = schedule, total_steps
        self.expectation = expectation
        self.register_buffer("gene_weight", gene_weight.float())
        self._frozen = None
        if freeze_encoder:  # its pretrained part: no gradients, eval mode, outputs cached (a ViT's pyramid trains)
            from ..model.feature_cache import freeze

            self._frozen = freeze(self.net.encoder, feature_cache, skip_levels=self.net.first_level)
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, predicted and measured normalised expression of the batch's bins."""
        cfg, n_genes = self.cfg, len(self.cfg.genes)
        maps = self.net(batch["image"].float() / 255.0)  # (B, C, m, m)
        agg = aggregate(
            maps.float(), batch["spot"], batch["pixel"], batch["weight"], batch["n_spots"], mean=cfg.semantics == "mean"
        )  # (n, C)
        target = log_normalize(batch["counts"][:, :n_genes], batch["totals"], cfg.target_sum)  # (n, G)
        if cfg.semantics != "density":
            pred = agg
        elif self.expectation is not None:
            pred = self.expectation(agg[:, :n_genes], agg.sum(1))
        else:
            pred = log_normalize(agg[:, :n_genes], agg.sum(1), cfg.target_sum)
        if cfg.loss == "mse_pcc":
            loss = mse_pcc(pred, target, cfg.pcc_weight)
        else:
            loss = poisson(agg, batch["counts"], self.gene_weight)
            if cfg.total_weight:
                total = batch["counts"].sum(1, keepdim=True)
                loss = loss + cfg.total_weight * poisson(
                    agg.sum(1, keepdim=True), total, 1 / total.mean().clamp_min(1.0).reshape(1)
                )
            if cfg.loss == "poisson_pcc":
                loss = loss + cfg.pcc_weight * pcc_loss(pred, target)
        return loss, pred, target

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if batch["n_spots"] < 2:  # nothing to compare in this batch (tiles at the tissue's edge)
            return None
        loss, _, _ = self.step(batch)
        if not torch.isfinite(loss):
            raise ValueError(
                f"The training loss became {loss.item()} at step {self.global_step}. Lower the learning rate (lr=...), "
                "or check the image and counts for NaN or inf."
            )
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, pred, target = self.step(batch)
        self._val.append((pred.detach().float().cpu(), target.detach().float().cpu()))
        self.log("val_loss", loss, prog_bar=True, batch_size=len(batch["image"]))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        pred = torch.cat([p for p, _ in self._val]).numpy()
        target = torch.cat([t for _, t in self._val]).numpy()
        self._val.clear()
        self.log("val_pcc", float(np.nanmean(pearson_per_gene(pred, target))), prog_bar=True)

    def on_fit_end(self) -> None:
        if self._frozen is not None:  # the trained model predicts without the cache's hooks
            self._frozen.remove()

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.schedule == "constant" or self.total_steps < 2:
            return opt
        warm = max(1, self.total_steps // 20)

        def factor(step: int) -> float:  # linear warm-up, then cosine decay to 2% of lr
            if step < warm:
                return (step + 1) / warm
            t = min(1.0, (step - warm) / max(1, self.total_steps - warm))
            return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
