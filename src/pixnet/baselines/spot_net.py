"""The spot-regression baseline (ST-Net-like): a CNN from each spot's image crop to its expression."""

from __future__ import annotations

import timm
import torch
from torch import nn

from ..model.config import ModelConfig
from ..model.encoder import load_checkpoint


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
