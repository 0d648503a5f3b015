"""PixNet's network, wired as segmentation-models-pytorch wires one: encoder -> decoder -> head."""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from .config import ModelConfig
from .decoder import Decoder
from .encoder import build_encoder
from .head import GeneHead


class PixNetModule(nn.Module):
    """Image tiles ``(B, 3, H, W)`` in [0, 1] -> map ``(B, C, H / s, W / s)``, ``s = config.map_stride``.

    The encoder (any timm backbone, :func:`~pixnet.model.build_encoder`) gives a feature
    pyramid; the :class:`~pixnet.model.decoder.Decoder` climbs it to the finest level whose
    stride is at most ``map_stride`` (the paper: L - 1 stages); the
    :class:`~pixnet.model.head.GeneHead` maps it to one channel per gene. In ``"density"`` mode
    the map holds non-negative expected counts per map pixel for each gene, plus one channel for
    all other genes (so bin totals are predicted too); in the paper's ``"sum"`` and ``"mean"``
    modes it holds log-normalised expression.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config.encoder, weights=config.encoder_weights, spec=config.encoder_spec)
        info = self.encoder.feature_info
        channels, reductions = info.channels(), info.reduction()
        finer = [i for i, r in enumerate(reductions) if r <= config.map_stride]
        self.first_level = finer[-1] if finer else 0
        channels, reductions = channels[self.first_level :], reductions[self.first_level :]
        self.register_buffer("mean", torch.tensor(info[0].get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(info[0].get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1))
        self.stages = Decoder(channels, config)
        self.first_stride = reductions[0]
        if self.first_stride % config.map_stride:
            raise ValueError(f"map_stride={config.map_stride} must divide the encoder's strides {info.reduction()}.")
        self.head = GeneHead(channels[0], config, self.first_stride)

    def init_density(self, per_pixel: torch.Tensor) -> None:
        """Start the density head at the observed mean counts per map pixel of each output."""
        if self.config.semantics == "density":
            self.head.init_density(per_pixel)

    def forward(self, image: torch.Tensor, crop: int = 0) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, C, H / s - 2 crop, W / s - 2 crop)``.

        ``crop``: map pixels left out on each side (a tile's context, at inference). The decoder
        and head then run only where the kept pixels need them (:meth:`Decoder.forward`): the same
        values as the whole map cropped, for less work.
        """
        x = (image - self.mean) / self.std
        feats = self.encoder(x)[self.first_level :]  # [(B, c_i, H / r_i, W / r_i)], finest first
        f = self.head.factor
        # the head's resize (factor > 1) reads one decoder pixel beyond those it fills
        k = max(0, crop // f - 1) if f > 1 else crop
        out = self.head(self.stages(feats, crop=k))  # (B, C, H / s - 2 k f, W / s - 2 k f)
        rest = crop - k * f
        return out[..., rest : out.shape[-2] - rest, rest : out.shape[-1] - rest] if rest else out

    @property
    def receptive_margin(self) -> int:
        """Input pixels of context that make a pixel's prediction (nearly) independent of the tile edge."""
        return int(math.ceil(self.encoder.feature_info.reduction()[-1] * 2))


def forward_cropped(net: nn.Module, x: torch.Tensor, crop: int) -> torch.Tensor:
    """``net(x)`` without ``crop`` map pixels on each side: computed only there by a network that takes ``crop``.

    Any other module (a user's network, a test's) runs whole and its map is cropped.
    """
    if crop and "crop" in inspect.signature(net.forward).parameters:
        return net(x, crop=crop)
    out = net(x)
    return out[..., crop : out.shape[-2] - crop, crop : out.shape[-1] - crop] if crop else out
