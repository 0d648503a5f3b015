"""PixNet's head: a 1x1 convolution to one channel per gene, resized to the map's stride."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


class GeneHead(nn.Conv2d):
    """Decoder output ``(B, c, H / r, W / r)`` -> map ``(B, C, H / s, W / s)``, ``s = config.map_stride``.

    In ``"density"`` mode the values are non-negative expected counts per map pixel (softplus),
    spread over the finer pixels when resized so that sums are kept; otherwise log-normalised
    expression. A ``Conv2d``, so that its weights keep their names (``head.weight``, ``head.bias``).
    """

    def __init__(self, channels: int, config: ModelConfig, stride: int):
        super().__init__(channels, config.n_outputs, 1)
        if stride % config.map_stride:
            raise ValueError(f"map_stride={config.map_stride} must divide the decoder's stride {stride}.")
        self.density = config.semantics == "density"
        self.factor = stride // config.map_stride

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        out = super().forward(d)  # (B, C, H / r, W / r)
        if self.density:
            out = F.softplus(out)
        if self.factor > 1:  # the paper's Resize; densities are spread so that sums are kept
            out = F.interpolate(out, scale_factor=self.factor, mode="bilinear", align_corners=False)
            if self.density:
                out = out / self.factor**2
        return out

    @torch.no_grad()
    def init_density(self, per_pixel: torch.Tensor) -> None:
        """Start at ``per_pixel`` expected counts per map pixel of each output (inverse softplus of the bias)."""
        target = per_pixel.clamp_min(1e-8) * self.factor**2
        # inverse softplus, written to stay finite for large counts per pixel (coarse maps)
        self.bias.copy_(target + torch.log(-torch.expm1(-target)))
        self.weight.mul_(0.1)
