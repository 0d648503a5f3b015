"""The spot-regression baseline's training and prediction (``method="spot"``)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data import SlideImage
from ..geometry import Spots
from ..model import PixNet
from .crops import SpotCrops, crop_spots


def spot_loaders(data, train_mask, val_mask, config, *, batch_size: int, seed: int, augment: bool, num_workers: int):
    """Crops of training and validation bins."""
    kw = {"size": config.spot_input_px, "context": config.spot_context, "seed": seed}
    train = SpotCrops(data, train_mask, augment=augment, **kw)
    loader = DataLoader(train, batch_size=batch_size * 8, shuffle=True, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    val = None
    if any(m.any() for m in val_mask):
        val = DataLoader(
            SpotCrops(data, val_mask, augment=False, **kw), batch_size=batch_size * 8, num_workers=num_workers
        )
    return loader, val


def spot_module(model: PixNet, *, lr: float, weight_decay: float):
    """The LightningModule that trains the baseline."""
    from .spot_lightning import SpotLightning

    return SpotLightning(model.module, lr=lr, weight_decay=weight_decay)


def train_spots(model: PixNet, data, train_mask, val_mask, *, lr: float, weight_decay: float, **opts):
    """What :func:`pixnet.tl.fit` trains for ``method="spot"``: crop loaders and the LightningModule."""
    loader, val_loader = spot_loaders(data, train_mask, val_mask, model.config, **opts)
    return loader, val_loader, spot_module(model, lr=lr, weight_decay=weight_decay)


@torch.no_grad()
def predict_spots(
    model: PixNet, image: SlideImage, spots_work: Spots, *, device: torch.device, chunk: int = 4096
) -> np.ndarray:
    """Log-normalised expression of each spot from its crop, ``(n, genes)``."""
    cfg = model.config
    net = model.module.to(device).eval()
    side = 2 * spots_work.extent() * cfg.spot_context
    out = np.empty((len(spots_work), len(cfg.genes)), np.float32)
    order = np.lexsort((spots_work.centres[:, 0], np.floor(spots_work.centres[:, 1] / 256)))
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        c, s = spots_work.centres[idx], side[idx]
        lo = np.floor((c - s[:, None] / 2).min(0)).astype(int) - 1
        hi = np.ceil((c + s[:, None] / 2).max(0)).astype(int) + 1
        region = image.read(lo[1], lo[0], hi[1] - lo[1], hi[0] - lo[0])
        crops = crop_spots(region, c, s, cfg.spot_input_px, origin=lo)
        for b in range(0, len(idx), 512):
            x = torch.from_numpy(crops[b : b + 512]).to(device).permute(0, 3, 1, 2).float() / 255.0
            out[idx[b : b + 512]] = net(x).float().cpu().numpy()
    return out
