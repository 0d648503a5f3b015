"""PixNet's head: a 1x1 convolution to one channel per gene, resized to the map's stride."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

SOFTPLUS_CHUNK = 1 << 18  # values per block of softplus_: 1 MB buffers, which stay in the CPU's cache


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
            out = F.softplus(out) if out.requires_grad else softplus_(out)
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


def softplus_(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(x))`` in place, for inference: ``x`` (any shape) is overwritten and returned.

    On the CPU torch's softplus spends ~5 ns a value in ``log1p`` (a third of the network's time
    beyond the encoder at the default map). Here ``log1p(e)``, ``e = exp(-|x|)``, is
    ``log(u) - ((u - 1) - e) / u`` with ``u = 1 + e`` rounded (the compensated logarithm of
    Goldberg, "What every computer scientist should know about floating-point arithmetic", 1991,
    Theorem 4; ``(u - 1) - e`` is exact), in blocks that stay in the cache: ~1.7 ns a value. Its
    relative error against float64 measured 1.7e-7 at most over [-104, 104] (torch's softplus:
    1.2e-7); ``tests/test_model.py`` holds it under 2.5e-7. Elsewhere (a GPU, other dtypes, other
    layouts) it is torch's softplus.
    """
    flat = _flat(x)
    if flat is None or x.device.type != "cpu" or x.dtype != torch.float32:
        return x.copy_(F.softplus(x))
    n = max(1, min(SOFTPLUS_CHUNK, flat.numel()))
    e, u, r, c = torch.empty((4, n), dtype=x.dtype)
    for start in range(0, flat.numel(), n):
        v = flat[start : start + n]
        k = v.numel()
        ek, uk, rk, ck = e[:k], u[:k], r[:k], c[:k]
        torch.abs(v, out=ek).neg_().exp_()  # exp(-|x|), in (0, 1]
        torch.add(ek, 1, out=uk)
        torch.log(uk, out=rk)
        torch.sub(uk, 1, out=ck).sub_(ek)  # the rounding error of u, exactly
        rk.addcdiv_(ck, uk, value=-1)  # log1p(e)
        v.clamp_min_(0).add_(rk)  # softplus(x) = max(x, 0) + log1p(exp(-|x|))
    return x


def _flat(x: torch.Tensor) -> torch.Tensor | None:
    """A 1-d view of all of ``x``'s values in memory order, or None if its layout has gaps."""
    if x.is_contiguous():
        return x.view(-1)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).reshape(-1)  # a view: (B, H, W, C) is contiguous
    return None
