"""What a training run is fed: slides on the working grid, tile loaders, the module its density head starts from."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data import table_counts
from ..model import ModelConfig, PixNetModule
from .dataset import EpochSampler, SlideData, TileSpec, TrainTiles, ValTiles, collate

logger = logging.getLogger("pixnet.tl.fit")


def tile_loaders(
    data, train_mask, val, spec: TileSpec, n_tiles: int, *, batch_size: int, seed: int, augment: bool, num_workers: int
):
    """Loaders of ``n_tiles`` random training tiles an epoch and of validation tiles (None without validation)."""
    window = spec.tile - 2 * spec.context
    biggest = max(float(2 * d.extent.max()) for d in data)
    if biggest > window:
        need = int(np.ceil((biggest + 2 * spec.context) / 32) * 32)
        raise ValueError(
            f"Bins of {biggest:.0f} working pixels do not fit in a {spec.tile} px tile with {spec.context} px of "
            f"context; use tile_px={need} or more."
        )
    train_ds = TrainTiles(data, train_mask, spec, n_tiles=n_tiles, seed=seed, augment=augment)
    sampler = EpochSampler(n_tiles, batch_size)
    loader = DataLoader(train_ds, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers)
    val_loader = None
    if any(v.any() for v in val):
        val_loader = DataLoader(
            ValTiles(data, val, spec), batch_size=batch_size, collate_fn=collate, num_workers=num_workers
        )
    return loader, val_loader


def dense_module(net: PixNetModule, data, train_mask, **kw):
    """The training module, its density head started at the observed counts per map pixel."""
    counts = np.concatenate([np.asarray(d.counts[m].mean(0)).ravel()[None] for d, m in zip(data, train_mask)]).mean(0)
    area = np.mean([d.spots.subset(m).mean_area() for d, m in zip(data, train_mask)]) / net.config.map_stride**2
    net.init_density(torch.as_tensor(counts / area, dtype=torch.float32))
    # Poisson losses weigh each output by 1 / its mean count, so that every gene's fit counts.
    gene_weight = torch.as_tensor(1.0 / np.maximum(counts, 1e-3), dtype=torch.float32)
    from .module import PixNetLightning

    return PixNetLightning(net, gene_weight=gene_weight / gene_weight.mean(), **kw)


def slide_data(slide, ts, genes: list[str], config: ModelConfig) -> SlideData:
    """A slide's image on the model's working grid, with its spots in working pixels and their counts."""
    work = slide.working_image(config.um_per_px)
    counts, totals = table_counts(ts.table, genes, other=config.semantics == "density")
    logger.info("loading %s at %g um/px (%d x %d px)", slide.image, config.um_per_px, *work.shape)
    return SlideData(work.load(), ts.spots.scaled(work.f), counts, totals)


def default_tiles(data, masks, spec: TileSpec, batch_size: int) -> int:
    """Tiles an epoch by default: twice the training area, in whole batches."""
    window = (spec.tile - 2 * spec.context) ** 2
    area = sum(d.spots.subset(m).mean_area() * m.sum() for d, m in zip(data, masks) if m.any())
    return int(max(batch_size, np.ceil(2 * area / window / batch_size) * batch_size))
