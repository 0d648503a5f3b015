"""PixNet's decoder: u-net stages that climb the encoder's pyramid, each with a learnable skip weight."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


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


class Decoder(nn.ModuleList):
    """The stages from the coarsest feature map to the finest kept one, ``channels`` finest first.

    A ``ModuleList`` of :class:`DecoderStage` (coarsest first), so that the weights keep their
    names (``stages.0...``) in the network that holds it.
    """

    def __init__(self, channels: list[int], config: ModelConfig):
        def hidden(c: int) -> int:
            cap = config.decoder_expansion
            return min(config.decoder_hidden, cap * c) if cap else config.decoder_hidden

        super().__init__(
            DecoderStage(channels[i + 1], channels[i], hidden(channels[i]), config.learnable_skip)
            for i in reversed(range(len(channels) - 1))
        )

    def forward(self, feats: list[torch.Tensor], crop: int = 0) -> torch.Tensor:
        """``feats`` ``[(B, c_i, H / r_i, W / r_i)]``, finest first -> ``(B, c_0, H / r_0 - 2 crop, W / r_0 - 2 crop)``.

        With ``crop``, the output lacks ``crop`` pixels on each side, and each stage is computed
        only over the window its kept pixels need (its 3x3 convolution's one pixel of context;
        the transposed convolution is local): the same values as the whole output cropped.
        """
        crops = self.crops(feats, crop)  # (window, kept) crop at each level, finest first
        d = _crop(feats[-1], crops[-1][1])
        for level, stage in zip(reversed(range(len(feats) - 1)), self):
            window, kept = crops[level]
            d = _crop(stage(d, _crop(feats[level], window)), kept - window)
        return d

    @staticmethod
    def crops(feats: list[torch.Tensor], crop: int) -> list[tuple[int, int]]:
        """For each level, finest first: the crop of the window computed and the crop kept (pixels per side).

        A level's window keeps one pixel of context beyond what is kept (``window <= kept - 1``),
        and is even so that it lies on the coarser level's pixels, which keep ``window / 2``.
        A level twice as large as the next (no odd size to align) is needed for that; from the
        first that is not, the coarser levels are computed whole.
        """
        out, kept = [], crop
        for level in range(len(feats)):
            window = 0
            aligned = level + 1 < len(feats) and all(
                a == 2 * b for a, b in zip(feats[level].shape[-2:], feats[level + 1].shape[-2:])
            )
            if aligned and kept >= 1:
                window = 2 * ((kept - 1) // 2)
            out.append((window, kept))
            kept = window // 2 if aligned else 0
        return out


def _crop(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` without ``k`` pixels on each side of its last two axes (a view)."""
    return x[..., k : x.shape[-2] - k, k : x.shape[-1] - k] if k else x
