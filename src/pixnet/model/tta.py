"""Test-time augmentation of a dense network: the map averaged over the dihedral views of its input.

H&E tissue has no preferred orientation, and training augments with flips and quarter turns,
so the network's map of a flipped tile, flipped back, is an equally good estimate of the same
map; averaging the views removes the part of the error that depends on orientation (as
segmentation networks commonly do at inference). Each view costs a full forward.
"""

from __future__ import annotations

import torch
from torch import nn

from .network import forward_cropped

#: ``(quarter turns, flip along width)`` of the views, the identity first.
DIHEDRAL = ((0, False), (1, False), (2, False), (3, False), (0, True), (1, True), (2, True), (3, True))
FLIPS = ((0, False), (2, False), (0, True), (2, True))  # identity, half turn, both flips: any aspect ratio


class DihedralTTA(nn.Module):
    """``net`` averaged over ``views`` of its input: ``(B, 3, H, W) -> (B, C, H / s, W / s)``.

    Parameters
    ----------
    net
        A network whose output is a map aligned with its input (stride ``s``; ``H`` and ``W``
        multiples of ``s``).
    views
        4 (flips: identity, both axes, half turn) or 8 (the dihedral group; quarter turns need
        square inputs, non-square inputs fall back to the 4 flips).

    """

    def __init__(self, net: nn.Module, views: int = 8):
        super().__init__()
        if views not in (4, 8):
            raise ValueError(f"views must be 4 or 8 (got {views}).")
        self.net, self.views = net, views
        # in the state dict, so that a map made with 4 views is never taken for one made with 8
        self.register_buffer("n_views", torch.tensor(views), persistent=True)

    def forward(self, x: torch.Tensor, crop: int = 0) -> torch.Tensor:
        """``crop``: map pixels left out on each side, as :meth:`PixNetModule.forward` (it commutes with the views)."""
        square = x.shape[-1] == x.shape[-2]
        views = DIHEDRAL if self.views == 8 and square else FLIPS
        out = None
        for k, flip in views:
            v = torch.rot90(x, k, dims=(-2, -1))
            v = v.flip(-1) if flip else v
            v = v.contiguous(memory_format=torch.channels_last) if x.is_contiguous(
                memory_format=torch.channels_last) else v.contiguous()  # fmt: skip
            y = forward_cropped(self.net, v, crop)
            y = y.flip(-1) if flip else y  # undo in reverse order: flip, then turn back
            y = torch.rot90(y, -k, dims=(-2, -1))
            out = y if out is None else out + y
        return out / len(views)


__all__ = ["DihedralTTA", "DIHEDRAL", "FLIPS"]
