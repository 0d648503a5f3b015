"""The spot-regression baseline (ST-Net-like): a CNN from each spot's image crop to its expression."""

from __future__ import annotations

import lightning as L
import timm
import torch
from torch import nn

from .config import ModelConfig
from .encoder import load_checkpoint
from .losses import log_normalize


class SpotRegressor(nn.Module):
    """Crops ``(B, 3, S, S)`` in [0, 1] -> log-normalised expression ``(B, genes)``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        weights = config.encoder_weights
        pretrained = isinstance(weights, str) and weights.lower() == "imagenet"
        self.net = timm.create_model(config.encoder, pretrained=pretrained, num_classes=len(config.genes))
        if weights is not None and not pretrained:
            load_checkpoint(self.net, weights, min_fraction=0.8)
        cfg = self.net.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.net((crops - self.mean) / self.std)  # (B, G)


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
        from .lightning import pearson_per_gene

        if self._val:
            p = torch.cat([a for a, _ in self._val]).numpy()
            t = torch.cat([b for _, b in self._val]).numpy()
            self._val.clear()
            import numpy as np

            self.log("val_pcc", float(np.nanmean(pearson_per_gene(p, t))), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
