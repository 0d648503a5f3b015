"""Square image crops around spots, for the spot-regression baseline."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..train.dataset import SlideData, _augment


def crop_spots(image: np.ndarray, centres: np.ndarray, side: np.ndarray, size: int, origin=(0, 0)) -> np.ndarray:
    """Axis-aligned crops of ``side`` pixels centred on each spot, resized to ``size`` x ``size``.

    ``image`` covers the pixels from ``origin``; outside it the crop is white.
    """
    pil = Image.fromarray(image)
    out = np.empty((len(centres), size, size, 3), np.uint8)
    for k, ((x, y), s) in enumerate(zip(centres - np.asarray(origin), side)):
        box = (x - s / 2, y - s / 2, x + s / 2, y + s / 2)
        out[k] = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=None))
    return out


class SpotCrops(Dataset):
    """One crop per spot (the spot and ``context`` times its size around it) with its counts."""

    def __init__(
        self, slides: list[SlideData], masks: list[np.ndarray], *, size: int, context: float, seed: int, augment: bool
    ):
        self.slides, self.size, self.context, self.seed, self.augment = slides, size, context, seed, augment
        self.index = [(s, i) for s, m in enumerate(masks) for i in np.flatnonzero(m)]
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict:
        s, i = self.index[k % len(self.index)]
        slide = self.slides[s]
        side = 2 * slide.extent[i : i + 1] * self.context
        img = crop_spots(slide.image, slide.spots.centres[i : i + 1], side, self.size)[0]
        if self.augment:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 131, int(k)]))
            img, _ = _augment(img, np.zeros(0, np.int64), 1, rng)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
            "counts": torch.from_numpy(slide.counts[i].toarray()[0]),
            "totals": torch.tensor(slide.totals[i]),
        }
