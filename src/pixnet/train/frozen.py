"""Training with a frozen encoder: a finite pool of tile-augmentations whose features are cached."""

from __future__ import annotations

import logging
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from ..model.feature_cache import FeatureCache

logger = logging.getLogger(__name__)


class CycledTiles(Dataset):
    """``dataset[k % period]``: epochs cycle through ``period`` fixed tile-augmentations.

    Training tiles are otherwise drawn afresh every epoch (index ``epoch * n + i``), so no tile
    would ever be seen twice and a cache of frozen features would never hit.
    """

    def __init__(self, dataset: Dataset, period: int):
        self.dataset, self.period = dataset, int(period)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, k: int):
        return self.dataset[k % self.period]


def make_cache(feature_cache: str | Path | None, gb: float) -> FeatureCache | None:
    """``"memory"``, a folder for a disk cache, or ``None`` (no cache)."""
    if feature_cache is None:
        return None
    if gb <= 0:
        raise ValueError(f"feature_cache_gb must be positive, got {gb}.")
    directory = None if str(feature_cache) == "memory" else Path(feature_cache)
    return FeatureCache(max_bytes=int(gb * 2**30), directory=directory)


def cycle_loader(loader: DataLoader, views: int) -> DataLoader:
    """The same loader over ``views`` epochs' worth of distinct tiles, repeated."""
    if views < 1:
        raise ValueError(f"frozen_views must be at least 1, got {views}.")
    period = views * len(loader.dataset)
    logger.info("frozen encoder: epochs cycle through %d tile-augmentations (%d views)", period, views)
    return DataLoader(
        CycledTiles(loader.dataset, period), batch_size=loader.batch_size, sampler=loader.sampler,
        collate_fn=loader.collate_fn, num_workers=loader.num_workers,
    )  # fmt: skip
