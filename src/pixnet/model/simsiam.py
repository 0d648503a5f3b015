"""SimSiam: self-supervised pretraining of an encoder from unlabelled tiles (pure torch).

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021 (arXiv:2011.10566).
Two augmented views of each tile go through the encoder and a projection MLP (``z``); a
prediction MLP (``p``) of one view is pulled towards the *stop-gradient* projection of the
other: ``L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2`` with ``D`` the negative cosine similarity
(the paper's Algorithm 1). No negatives and no momentum encoder, so small batches work and the
code stays short. The projector (3 layers, BN, last BN without affine) and the predictor
(bottleneck of a quarter of the width) follow Sec. 3 of the paper and facebookresearch/simsiam's
``builder.py``, at a smaller width (512 rather than 2048) to suit CPUs.

The views' augmentations are those of histology SSL (flips and right-angle rotations are exact
symmetries of a slide; stain jitter in optical density replaces colour jitter; random resized
crop and blur as in the paper).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SimSiam(nn.Module):
    """Encoder (a feature pyramid) + projector + predictor; :meth:`loss` of two views ``(B, 3, H, W)``."""

    def __init__(self, encoder: nn.Module, *, dim: int = 512, pred_dim: int = 128):
        super().__init__()
        self.encoder = encoder
        c = encoder.feature_info.channels()[-1]
        self.projector = nn.Sequential(
            nn.Linear(c, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim, affine=False),
        )  # fmt: skip
        self.predictor = nn.Sequential(
            nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim), nn.ReLU(inplace=True),
            nn.Linear(pred_dim, dim),
        )  # fmt: skip
        mean, std = encoder.feature_info[0].get("mean"), encoder.feature_info[0].get("std")
        self.register_buffer("mean", torch.tensor(mean or (0.485, 0.456, 0.406)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std or (0.229, 0.224, 0.225)).view(1, 3, 1, 1))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] ``(B, 3, H, W)`` -> projections ``(B, dim)`` (global average of the coarsest level)."""
        feats = self.encoder((x - self.mean) / self.std)[-1]
        return self.projector(feats.mean((-2, -1)))

    def loss(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """SimSiam's symmetric negative cosine loss (in [-1, 1]; -1 is perfect agreement)."""
        z1, z2 = self.embed(x1), self.embed(x2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        d = lambda p, z: -F.cosine_similarity(p, z.detach(), dim=-1).mean()
        return d(p1, z2) / 2 + d(p2, z1) / 2


def augment(tiles: torch.Tensor, generator: torch.Generator, *, out: int, min_scale: float = 0.4) -> torch.Tensor:
    """One random view of each tile: ``(B, 3, H, W)`` uint8 -> ``(B, 3, out, out)`` float in [0, 1].

    Random resized crop (area ``min_scale``..1, aspect 3/4..4/3), a flip and right-angle rotation,
    stain jitter in optical density (per-channel scale and shift), and Gaussian blur half the time.
    """
    b, _, h, w = tiles.shape
    g = generator
    x = tiles.float() / 255.0
    views = []
    for i in range(b):
        area = h * w * (min_scale + (1 - min_scale) * torch.rand(1, generator=g).item())
        ratio = torch.exp(torch.empty(1).uniform_(-0.2877, 0.2877, generator=g)).item()
        ch, cw = min(h, round((area / ratio) ** 0.5)), min(w, round((area * ratio) ** 0.5))
        y0 = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        x0 = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        v = F.interpolate(x[i : i + 1, :, y0 : y0 + ch, x0 : x0 + cw], size=(out, out), mode="bilinear",
                          align_corners=False, antialias=True)  # fmt: skip
        if torch.rand(1, generator=g) < 0.5:
            v = v.flip(-1)
        v = torch.rot90(v, int(torch.randint(0, 4, (1,), generator=g)), dims=(-2, -1))
        views.append(v)
    v = torch.cat(views)
    od = -torch.log((v * 255 + 1) / 256)
    scale = torch.exp(0.1 * torch.randn(b, 3, 1, 1, generator=g))
    shift = 0.03 * torch.randn(b, 3, 1, 1, generator=g)
    v = ((256 * torch.exp(-(od * scale + shift)) - 1) / 255).clamp(0, 1)
    blur = torch.rand(b, generator=g) < 0.5
    if blur.any():
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
        kernel = (k[:, None] * k[None]).expand(3, 1, 5, 5).to(v)
        v[blur] = F.conv2d(F.pad(v[blur], (2, 2, 2, 2), mode="reflect"), kernel, groups=3)
    return v
