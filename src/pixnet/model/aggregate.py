"""Aggregate a dense map into spots: a differentiable weighted sum (the weights come from :mod:`pixnet.geometry`)."""

from __future__ import annotations

import torch


def aggregate(
    maps: torch.Tensor,
    spot: torch.Tensor,
    pixel: torch.Tensor,
    weight: torch.Tensor,
    n_spots: int,
    *,
    mean: bool = False,
) -> torch.Tensor:
    """Weighted sum (or mean) of map pixels per spot; differentiable in ``maps``.

    ``maps`` is ``(B, C, H, W)``; ``pixel`` indexes the flattened ``(B, H, W)`` grid.
    Returns ``(n_spots, C)``.
    """
    b, c, h, w = maps.shape
    flat = maps.permute(0, 2, 3, 1).reshape(b * h * w, c)  # (B*H*W, C)
    out = torch.zeros(n_spots, c, dtype=maps.dtype, device=maps.device)
    out.index_add_(0, spot, flat[pixel] * weight[:, None].to(maps.dtype))  # (n_spots, C)
    if mean:
        area = torch.zeros(n_spots, dtype=maps.dtype, device=maps.device).index_add_(0, spot, weight.to(maps.dtype))
        out = out / area.clamp_min(1e-12)[:, None]
    return out
