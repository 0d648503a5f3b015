"""An ensemble of dense models: one map, the mean of the members' maps.

Networks fitted from different seeds (or on different slides) make different errors on a new
section; the mean of their maps is a better estimate of the expression than any one of them
(the usual deep-ensemble average, Lakshminarayanan et al., NeurIPS 2017). Because a spot's
value is the aggregate of the map inside it, averaging the maps averages every spot's expected
counts, at any bin size. Each member costs a full forward per tile.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .network import forward_cropped
from .pixnet import PixNet

#: What the members must share: the meaning, units and grid of their maps.
SHARED = ("genes", "method", "semantics", "map_stride", "um_per_px", "target_sum", "log1p")


class MeanOfMaps(nn.Module):
    """The mean of ``nets``' maps: ``(B, 3, H, W) -> (B, C, H / s, W / s)``, each net with the same ``C`` and ``s``."""

    def __init__(self, nets: Sequence[nn.Module]):
        super().__init__()
        self.nets = nn.ModuleList(nets)
        # in the state dict, so a stored map is reused only by the very same ensemble
        self.register_buffer("n_members", torch.tensor(len(self.nets)), persistent=True)

    def forward(self, x: torch.Tensor, crop: int = 0) -> torch.Tensor:
        """``crop``: map pixels left out on each side, as :meth:`PixNetModule.forward`."""
        out = forward_cropped(self.nets[0], x, crop)
        for net in self.nets[1:]:
            out = out + forward_cropped(net, x, crop)
        return out / len(self.nets)


def ensemble(models: Sequence[PixNet]) -> PixNet:
    """One model whose map is the mean of the ``models``' maps (for :func:`pixnet.tl.predict`).

    Parameters
    ----------
    models
        Dense PixNet models (``method="dense"``) with the same genes in the same order, map
        semantics, working resolution (``um_per_px``), map stride and normalisation; their
        encoders and training may differ (typically: the same ``fit`` call with other ``seed``).

    Returns
    -------
    A :class:`PixNet` with the first member's configuration and the members' networks; its
    ``training["members"]`` holds each member's training record. It predicts; it is not saved
    (save the members and ensemble them again after loading).

    Raises
    ------
    ValueError
        Fewer than one model, a spot baseline, or members whose maps differ in what they mean.
    TypeError
        A member that is not a :class:`PixNet`.

    """
    models = list(models)
    if not models:
        raise ValueError("An ensemble needs at least one model; pass a list of fitted PixNet models.")
    for i, m in enumerate(models):
        if not isinstance(m, PixNet):
            raise TypeError(f"model {i} of the ensemble is a {type(m).__name__}, not a pixnet.PixNet.")
        if m.config.method != "dense":
            raise ValueError(f"model {i} is the {m.config.method!r} baseline: only dense PixNet maps can be averaged.")
    if len(models) == 1:
        return models[0]
    first = models[0].config
    for i, m in enumerate(models[1:], start=1):
        for name in SHARED:
            if getattr(m.config, name) != getattr(first, name):
                a, b = getattr(m.config, name), getattr(first, name)
                what = "genes (or their order)" if name == "genes" else f"{name} ({a!r} vs {b!r})"
                raise ValueError(
                    f"model {i} differs from model 0 in {what}: ensemble members must make the same map. "
                    "Fit them with the same arguments except seed (and the same genes=...)."
                )
    training = {"params": {**models[0].training.get("params", {}), "ensemble": len(models)},
                "history": models[0].history, "members": [m.training for m in models]}  # fmt: skip
    return PixNet(first, MeanOfMaps([m.module for m in models]), training)


__all__ = ["MeanOfMaps", "ensemble"]
