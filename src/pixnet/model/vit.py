"""Vision transformers as u-net encoders: a simple feature pyramid from intermediate blocks.

A ViT keeps one token grid at its patch stride through all its blocks. As ViTDet's *simple
feature pyramid* (Li, Mao, Girshick, He, "Exploring Plain Vision Transformer Backbones for Object
Detection", ECCV 2022, Fig. 2c / Sec. 3) the grid is brought to strides 4, 8, 16 and 32 with
transposed convolutions (x2, x4) and max-pooling (/2); as DPT and UNETR do, each stride takes the
tokens of a different block (depth/4, depth/2, 3 depth/4, depth: early blocks for fine levels).
The result exposes the ``feature_info`` (channels, reductions) of timm's ``features_only`` CNNs,
so PixNet's decoder builds from it unchanged.

The position embedding is interpolated to the tile's grid (timm ``dynamic_img_size=True``), so a
tile of any multiple of 32 pixels works. A patch size that is not a power of two (14 for UNI2,
H-optimus, Virchow) is handled by resizing the input by ``patch / 16`` first: the grid then has
one token per 16 input pixels and the pyramid's strides stay powers of two.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

#: Strides of the pyramid, in input pixels.
STRIDES = (4, 8, 16, 32)


def is_vit(model: nn.Module) -> bool:
    """Whether a timm model is a plain vision transformer (patch embedding, blocks, intermediates)."""
    return all(hasattr(model, a) for a in ("patch_embed", "blocks", "forward_intermediates"))


class FeatureInfo:
    """The subset of timm's ``FeatureInfo`` the decoder reads: ``channels()``, ``reduction()``, ``[i]``."""

    def __init__(self, channels: list[int], reductions: list[int]):
        pairs = enumerate(zip(channels, reductions))
        self.info = [{"num_chs": c, "reduction": r, "module": f"pyramid.{i}"} for i, (c, r) in pairs]

    def channels(self) -> list[int]:
        return [d["num_chs"] for d in self.info]

    def reduction(self) -> list[int]:
        return [d["reduction"] for d in self.info]

    def __getitem__(self, i: int) -> dict:
        return self.info[i]

    def __len__(self) -> int:
        return len(self.info)


class ViTTrunk(nn.Module):
    """The pretrained part: image ``(B, 3, H, W)`` -> token grids ``[(B, D, H / 16, W / 16)]`` of chosen blocks.

    Its output is what a frozen encoder caches.
    """

    def __init__(self, vit: nn.Module, blocks: list[int]):
        super().__init__()
        self.vit = vit
        self.blocks = sorted(set(blocks))
        patch = vit.patch_embed.patch_size
        self.patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        self.stride = 2 ** round(math.log2(self.patch))  # token stride in input pixels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"Tiles of {h} x {w} px are not multiples of the ViT's token stride {self.stride}.")
        if len(x) == 0:  # all tiles of the batch were cached (see feature_cache): nothing to run
            return [x.new_zeros(0, self.vit.embed_dim, h // self.stride, w // self.stride) for _ in self.blocks]
        if self.patch != self.stride:  # one token per `stride` input pixels
            size = (h // self.stride * self.patch, w // self.stride * self.patch)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.vit.forward_intermediates(x, indices=self.blocks, intermediates_only=True, output_fmt="NCHW")


def _level(dim: int, out: int, scale: float) -> nn.Sequential:
    """Tokens at stride s -> features at stride s / scale (ViTDet: deconv for x2, x4; max-pool for /2)."""
    layers: list[nn.Module] = [LayerNorm2d(dim)]
    c = dim
    while scale > 1:
        layers.append(nn.ConvTranspose2d(c, c // 2, kernel_size=2, stride=2))
        c //= 2
        scale /= 2
        if scale > 1:
            layers += [LayerNorm2d(c), nn.GELU()]
    while scale < 1:
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        scale *= 2
    layers += [nn.Conv2d(c, out, kernel_size=1, bias=False), LayerNorm2d(out)]
    return nn.Sequential(*layers)


class ViTPyramid(nn.Module):
    """A timm ViT (built with ``dynamic_img_size=True``) as a 4-level feature pyramid.

    Input ``(B, 3, H, W)``, ``H`` and ``W`` multiples of 32; output ``[(B, c_i, H / r_i, W / r_i)]``
    for ``r_i`` in :data:`STRIDES`, with ``c_i = (D/4, D/2, D, D)`` for embedding width ``D``.
    ``backbone`` (:class:`ViTTrunk`) is the pretrained part; ``pyramid`` is new and always trained.
    """

    def __init__(self, vit: nn.Module):
        super().__init__()
        depth, dim = len(vit.blocks), int(vit.embed_dim)
        picks = [max(0, round(depth * k / 4) - 1) for k in (1, 2, 3, 4)]
        self.backbone = ViTTrunk(vit, picks)
        self.take = [self.backbone.blocks.index(p) for p in picks]  # level -> position in the trunk's output
        channels = [max(8, dim // 4), max(8, dim // 2), dim, dim]
        s = self.backbone.stride
        self.pyramid = nn.ModuleList(_level(dim, c, s / r) for c, r in zip(channels, STRIDES))
        self.feature_info = FeatureInfo(channels, list(STRIDES))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tokens = self.backbone(x)
        return [level(tokens[i]) for level, i in zip(self.pyramid, self.take)]
