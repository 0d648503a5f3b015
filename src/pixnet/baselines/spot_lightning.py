"""The spot baseline's training step as a LightningModule."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from ..model.losses import log_normalize, pearson_per_gene
from .spot_net import SpotRegressor


class SpotLightning(L.LightningModule):
    """MSE on log-normalised expression, as ST-Net trains."""

    def __init__(self, net: SpotRegressor, *, lr: float, weight_decay: float):
        super().__init__()
        self.net, self.lr, self.weight_decay = net, lr, weight_decay
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _step(self, batch):
        n = len(self.net.config.genes)
        target = log_normalize(batch["counts"][:, :n], batch["totals"], self.net.config.target_sum)
        pred = self.net(batch["image"].float() / 255.0)
        return torch.mean((pred - target) ** 2), pred, target

    def training_step(self, batch, batch_idx):
        loss, _, _ = self._step(batch)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["image"]))
        return loss

    def validation_step(self, batch, batch_idx):
        loss, pred, target = self._step(batch)
        self._val.append((pred.detach().cpu(), target.detach().cpu()))
        self.log("val_loss", loss, prog_bar=True, batch_size=len(batch["image"]))

    def on_validation_epoch_end(self):
        if self._val:
            p = torch.cat([a for a, _ in self._val]).numpy()
            t = torch.cat([b for _, b in self._val]).numpy()
            self._val.clear()
            self.log("val_pcc", float(np.nanmean(pearson_per_gene(p, t))), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
