"""PixNet's network: encoder pyramid, u-net decoder with learnable skip weights, 1x1 gene head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .encoder import build_encoder


class DFFN(nn.Module):
    """Depthwise feed-forward block: 1x1 expand, 3x3 depthwise, GELU, 1x1 project, residual.

    BatchNorm (a per-pixel affine map at inference) rather than a spatial norm, so that a
    pixel's prediction does not depend on how the slide was cut into tiles.
    """

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.expand = nn.Conv2d(channels, hidden, 1)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.project = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(F.gelu(self.dw(self.expand(self.norm(x)))))


class DecoderStage(nn.Module):
    """``D_l = DFFN(Dconv(D_{l-1}) + delta_l * F_{L-l})``."""

    def __init__(self, c_in: int, c_skip: int, hidden: int, learnable_skip: bool = True):
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_skip, kernel_size=2, stride=2)
        self.delta = nn.Parameter(torch.ones(1), requires_grad=learnable_skip)
        self.ffn = DFFN(c_skip, hidden)

    def forward(self, d: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up(d)  # (B, c_skip, 2h, 2w)
        if up.shape[-2:] != skip.shape[-2:]:  # odd sizes: align to the skip connection
            up = F.interpolate(up, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.ffn(up + self.delta * skip)


class PixNetModule(nn.Module):
    """Image tiles ``(B, 3, H, W)`` in [0, 1] -> map ``(B, C, H / s, W / s)``, ``s = config.map_stride``.

    In ``"density"`` mode the map holds non-negative expected counts per map pixel for each
    gene, plus one channel for all other genes (so bin totals are predicted too); in the
    paper's ``"sum"`` and ``"mean"`` modes it holds log-normalised expression.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config.encoder, weights=config.encoder_weights, spec=config.encoder_spec)
        info = self.encoder.feature_info
        channels, reductions = info.channels(), info.reduction()
        # The decoder climbs to the finest level whose stride is at most map_stride (the paper: L - 1 stages).
        finer = [i for i, r in enumerate(reductions) if r <= config.map_stride]
        self.first_level = finer[-1] if finer else 0
        channels, reductions = channels[self.first_level :], reductions[self.first_level :]
        self.register_buffer("mean", torch.tensor(info[0].get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(info[0].get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1))

        def hidden(c: int) -> int:
            return (
                min(config.decoder_hidden, config.decoder_expansion * c)
                if config.decoder_expansion
                else config.decoder_hidden
            )

        self.stages = nn.ModuleList(
            DecoderStage(channels[i + 1], channels[i], hidden(channels[i]), config.learnable_skip)
            for i in reversed(range(len(channels) - 1))
        )
        self.first_stride = reductions[0]
        self.head = nn.Conv2d(channels[0], config.n_outputs, 1)
        if self.first_stride % config.map_stride:
            raise ValueError(f"map_stride={config.map_stride} must divide the encoder's strides {info.reduction()}.")

    def init_density(self, per_pixel: torch.Tensor) -> None:
        """Start the density head at the observed mean counts per map pixel of each output."""
        if self.config.semantics != "density":
            return
        with torch.no_grad():
            target = per_pixel.clamp_min(1e-8) * (self.first_stride / self.config.map_stride) ** 2
            # inverse softplus, written to stay finite for large counts per pixel (coarse maps)
            self.head.bias.copy_(target + torch.log(-torch.expm1(-target)))
            self.head.weight.mul_(0.1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - self.mean) / self.std
        feats = self.encoder(x)[self.first_level :]  # [(B, c_i, H / r_i, W / r_i)], finest first
        d = feats[-1]
        for stage, skip in zip(self.stages, reversed(feats[:-1])):
            d = stage(d, skip)  # (B, c_skip, H / r, W / r)
        out = self.head(d)  # (B, C, H / r_0, W / r_0)
        if self.config.semantics == "density":
            out = F.softplus(out)
        factor = self.first_stride // self.config.map_stride
        if factor > 1:  # the paper's Resize; densities are spread so that sums are kept
            out = F.interpolate(out, scale_factor=factor, mode="bilinear", align_corners=False)
            if self.config.semantics == "density":
                out = out / factor**2
        return out

    @property
    def receptive_margin(self) -> int:
        """Input pixels of context that make a pixel's prediction (nearly) independent of the tile edge."""
        return int(math.ceil(self.encoder.feature_info.reduction()[-1] * 2))
