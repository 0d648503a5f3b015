"""``pixnet.tl.fit``: train PixNet on the bins (or any spots) of one or several slides."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from spatialdata import SpatialData
from torch.utils.data import DataLoader

from ..data import on_image, resolve_slide, resolve_table, spot_diameter_um, table_counts, table_spots, working_resolution
from ..model import ModelConfig, PixNet, PixNetModule
from ..pp import select_genes
from ..train.dataset import EpochSampler, SlideData, TileSpec, TrainTiles, ValTiles, collate, spatial_split
from ._models import record_model

if TYPE_CHECKING:
    from ..train.module import PixNetLightning

logger = logging.getLogger(__name__)


def fit(
    sdata: SpatialData | Sequence[SpatialData],
    *,
    bin_size: float | None = None,
    table: str | None = None,
    genes: Sequence[str] | None = None,
    n_genes: int = 250,
    method: Literal["dense", "spot"] = "dense",
    epochs: int = 48,
    um_per_px: float | None = None,
    map_stride: int = 4,
    semantics: Literal["density", "sum", "mean"] = "density",
    loss: Literal["mse_pcc", "poisson", "poisson_pcc"] | None = None,
    pcc_weight: float = 0.5,
    total_weight: float = 0.0,
    encoder: str = "resnet18",
    encoder_weights: str | None = None,
    decoder_hidden: int = 512,
    learnable_skip: bool = True,
    freeze_encoder: bool = False,
    tile_px: int | None = None,
    context_px: int = 16,
    batch_size: int = 8,
    tiles_per_epoch: int | None = None,
    augment: bool = True,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    schedule: Literal["constant", "cosine"] = "cosine",
    val_fraction: float = 0.15,
    early_stopping: int | None = None,
    seed: int = 0,
    accelerator: str = "auto",
    devices: int | str = "auto",
    precision: str | None = None,
    num_workers: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 50,
    model_dir: str | Path | None = None,
    overwrite: bool = False,
    key_added: str = "pixnet",
    image: str | None = None,
    slide_um_per_px: float | None = None,
    progress: bool = True,
) -> PixNet:
    """Train a PixNet model: a dense map of expression, supervised only where spots were measured.

    Each training tile's map is summed over the bins inside it (exact area weights, rotated
    squares, circles or polygons) and compared with their counts; bins cut by a tile edge are
    not scored in that tile. Validation uses held-out square blocks of the slide (random bins
    would leak through their neighbours). The best epoch by validation PCC is kept.

    Parameters
    ----------
    sdata
        One slide or several (read with :func:`pixnet.io.visium_hd` or :func:`pixnet.io.visium`).
    bin_size
        Train on the Visium HD table of these bins (``square_016um`` for 16). By default the
        spots a reader recorded (:func:`pixnet.io.spots`, :func:`pixnet.io.legacy_st`, ...),
        else 16 um bins.
    table
        Or any table annotating shapes (Visium spots, cells); overrides ``bin_size``.
    genes, n_genes
        The genes to model, or how many of the highest mean count (the paper: 250). Slides
        whose tables measured different genes are trained on the genes they share (logged); too
        few shared genes is a ``ValueError``.
    method
        ``"dense"`` (PixNet) or ``"spot"``: the ST-Net-like baseline, a CNN from each bin's
        crop to its expression, under the same API (an epoch is then one pass over the bins).
    epochs
        Passes over ``tiles_per_epoch`` random tiles (the paper trains 500 on GPU). 48 reach 87, 94
        and 94% of the best possible PCC at 2, 8 and 16 um on the accuracy benchmark, on CPU.
    um_per_px
        Working resolution of the network's input (micrometres per pixel). By default from
        the spots' size: 0.5 for bins up to 16 um, coarser for larger spots so that a spot is
        about 25 pixels across (Visium's 55 um spots: 2.2, legacy ST's 100 um: 4); see
        :func:`pixnet.data.working_resolution`.
    map_stride
        Map pixel size in input pixels (4: the paper's decoder depth; 2: a finer map).
    semantics, loss, pcc_weight, total_weight
        What the map means and how it is fitted; see :class:`pixnet.model.ModelConfig`. The paper
        fits ``"mse_pcc"``; the default for density maps, ``"poisson_pcc"`` (Poisson likelihood of
        the counts plus the batch PCC loss), measured better at every scale (``benchmarks/RESULTS.md``).
        ``loss=None`` picks it, or ``"mse_pcc"`` for the ``"sum"`` and ``"mean"`` maps, which hold
        log-normalised values rather than counts.
    encoder, encoder_weights, decoder_hidden, learnable_skip
        Architecture: any timm backbone; weights ``None``, ``"imagenet"`` or a checkpoint path.
    freeze_encoder
        Train only the decoder and head.
    tile_px, context_px
        Tile side (working pixels, a multiple of 32; by default 256 for bins up to 16 um and 128
        for larger spots, or larger when a spot and its context would not fit) and the band at
        its edge where bins are not scored.
    batch_size, tiles_per_epoch, augment
        Tiles per step, per epoch (default: twice the training area), and flips/rotations/stain jitter.
    lr, weight_decay
        Adam's parameters (the paper: 5e-4, 1e-4; with the cosine schedule 2e-3 trains faster).
    schedule
        ``"constant"`` learning rate (the paper) or ``"cosine"`` (warm-up, then cosine decay).
        For the paper's settings pass ``loss="mse_pcc", semantics="sum", lr=5e-4, schedule="constant"``.
    val_fraction
        Share of the slide's blocks held out for validation (0 to train on everything).
    early_stopping
        Stop after this many epochs without a better validation PCC (``None``: never).
    seed
        Seed of initialisation, tiles and augmentation: the same seed gives the same model on CPU.
    accelerator, devices, precision, num_workers
        Lightning's: ``"auto"`` picks a GPU when there is one; several GPUs train with DDP;
        precision defaults to ``"bf16-mixed"`` on GPU and ``"32-true"`` on CPU.
    checkpoint_dir, checkpoint_every
        Keep checkpoints there, the last one every ``checkpoint_every`` steps: a run killed mid-way,
        called again with the same arguments, resumes from it and reaches the same weights as an
        uninterrupted run.
    model_dir, overwrite
        Save the trained model there (and record the path in ``sdata.attrs``); an existing
        folder is replaced only with ``overwrite=True``.
    key_added
        Name of the model in ``sdata.attrs["pixnet"]["models"]``; :func:`pixnet.tl.predict` uses the last one.
    image, slide_um_per_px
        The H&E image and its micrometres per pixel, if :mod:`pixnet.io` did not record them.
    progress
        Show a progress bar.

    Returns
    -------
    The trained :class:`pixnet.PixNet`, also recorded in every ``sdata``.

    """
    sdatas = [sdata] if isinstance(sdata, SpatialData) else list(sdata)
    if not sdatas:
        raise ValueError("sdata is an empty list; pass at least one SpatialData object.")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    if model_dir is not None and Path(model_dir).exists() and not overwrite:
        raise FileExistsError(f"{model_dir} exists; pass overwrite=True to replace it, or another model_dir.")
    import lightning as L  # here, not at import: ~90 MB that predict and evaluate do not need

    L.seed_everything(seed, workers=True, verbose=False)
    slides = [resolve_slide(s, image=image, um_per_px=slide_um_per_px) for s in sdatas]
    tables = [resolve_table(s, bin_size=bin_size, table=table, default=16) for s in sdatas]
    genes = select_genes([s.tables[t] for s, t in zip(sdatas, tables)], n_top=n_genes, genes=genes)
    spots = [on_image(sl, table_spots(sl.sdata, t, sl.cs), what=f"bins of {t}") for sl, t in zip(slides, tables)]
    diameter = spot_diameter_um([ts.spots for ts in spots], [sl.um_per_px for sl in slides])
    um_per_px, auto_tile = working_resolution(diameter, um_per_px=um_per_px, context_px=context_px)
    tile_px = tile_px or auto_tile
    logger.info("spots of %.3g um: working at %.3g um/px in %d px tiles", diameter, um_per_px, tile_px)
    if loss is None:  # counts for density maps; the paper's loss for maps of normalised values
        loss = "poisson_pcc" if semantics == "density" else "mse_pcc"
    config = ModelConfig(
        genes=tuple(genes), encoder=encoder, encoder_weights=None if encoder_weights is None else str(encoder_weights),
        decoder_hidden=decoder_hidden, learnable_skip=learnable_skip, semantics=semantics, map_stride=map_stride,
        um_per_px=um_per_px, loss=loss, pcc_weight=pcc_weight, total_weight=total_weight, method=method,
    )  # fmt: skip
    spec = TileSpec(tile=tile_px, context=context_px, map_stride=map_stride, supersample=2)
    data = [_slide_data(sl, ts, genes, config) for sl, ts in zip(slides, spots)]
    block = 2 * (tile_px - 2 * context_px)
    val = [spatial_split(d.spots.centres, block=block, val_fraction=val_fraction, seed=seed) for d in data]
    train_mask = [~v for v in val]
    model = PixNet(config)
    opts = {"batch_size": batch_size, "seed": seed, "augment": augment, "num_workers": num_workers}
    if method == "spot":
        from ..baselines.spot import spot_loaders, spot_module

        loader, val_loader = spot_loaders(data, train_mask, val, config, **opts)
        module = spot_module(model, lr=lr, weight_decay=weight_decay)
    else:
        n_tiles = tiles_per_epoch or _default_tiles(data, train_mask, spec, batch_size)
        loader, val_loader = _tile_loaders(data, train_mask, val, spec, n_tiles, **opts)
        module = _dense_module(
            model.module, data, train_mask, lr=lr, weight_decay=weight_decay, freeze_encoder=freeze_encoder,
            schedule=schedule, total_steps=epochs * len(loader),
        )  # fmt: skip
    params = {
        "bin_size": bin_size, "table": tables, "epochs": epochs, "um_per_px": um_per_px, "tile_px": tile_px, "context_px": context_px,
        "batch_size": batch_size, "tiles_per_epoch": len(loader.dataset), "augment": augment, "lr": lr,
        "weight_decay": weight_decay, "schedule": schedule, "val_fraction": val_fraction, "seed": seed,
        "freeze_encoder": freeze_encoder, "n_slides": len(sdatas),
        "n_train_bins": int(sum(m.sum() for m in train_mask)), "n_val_bins": int(sum(v.sum() for v in val)),
    }  # fmt: skip
    history, params["best_epoch"] = _train(
        module, loader, val_loader, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
        run={**params, "model": config.to_dict()}, epochs=epochs, accelerator=accelerator, devices=devices,
        precision=precision, early_stopping=early_stopping, progress=progress,
    )  # fmt: skip
    model = PixNet(config, model.module.cpu().eval(), {"params": params, "history": history})
    path = str(model.save(model_dir, overwrite=overwrite)) if model_dir else None
    for s in sdatas:
        record_model(s, model, key_added, path)
    return model


def _train(module, loader, val_loader, *, checkpoint_dir, checkpoint_every: int, run: dict, **trainer_kw):
    """Fit with Lightning (resuming from ``checkpoint_dir`` when it holds this run); load the best epoch.

    Returns the per-epoch history and the best epoch (None without validation).
    """
    from ..train.trainer import HistoryCallback, ResumeSampler, make_trainer

    history = HistoryCallback()
    callbacks = [history] + ([ResumeSampler(loader.sampler)] if isinstance(loader.sampler, EpochSampler) else [])
    with tempfile.TemporaryDirectory(prefix="pixnet-ckpt-") as tmp:
        ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else Path(tmp)
        if checkpoint_dir:
            _claim_checkpoint_dir(ckpt_dir, run)
        trainer, best = make_trainer(
            ckpt_dir, has_val=val_loader is not None, callbacks=callbacks,
            checkpoint_every=checkpoint_every if checkpoint_dir else None, **trainer_kw,
        )  # fmt: skip
        resume = ckpt_dir / "last.ckpt"
        trainer.fit(module, loader, val_loader, ckpt_path=str(resume) if checkpoint_dir and resume.exists() else None)
        if not best.best_model_path:
            return history.rows, None
        ckpt = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
        module.load_state_dict(ckpt["state_dict"])
        return history.rows, int(ckpt["epoch"])


def _claim_checkpoint_dir(path: Path, run: dict) -> None:
    """Refuse to resume a run made with other parameters from the same folder."""
    path.mkdir(parents=True, exist_ok=True)
    stamp = path / "pixnet_run.json"
    text = json.dumps(run, sort_keys=True, default=str)
    if stamp.exists() and stamp.read_text() != text:
        raise ValueError(
            f"{path} holds checkpoints of a run with other parameters or data; pass another checkpoint_dir "
            "or delete that folder to start afresh."
        )
    if not stamp.exists():
        tmp = stamp.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(stamp)


def _tile_loaders(
    data, train_mask, val, spec: TileSpec, n_tiles: int, *, batch_size: int, seed: int, augment: bool, num_workers: int
):
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


def _dense_module(net: PixNetModule, data, train_mask, **kw) -> PixNetLightning:
    """The training module, its density head started at the observed counts per map pixel."""
    counts = np.concatenate([np.asarray(d.counts[m].mean(0)).ravel()[None] for d, m in zip(data, train_mask)]).mean(0)
    area = np.mean([_mean_area(d.spots.subset(m)) for d, m in zip(data, train_mask)]) / net.config.map_stride**2
    net.init_density(torch.as_tensor(counts / area, dtype=torch.float32))
    # Poisson losses weigh each output by 1 / its mean count, so that every gene's fit counts.
    gene_weight = torch.as_tensor(1.0 / np.maximum(counts, 1e-3), dtype=torch.float32)
    from ..train.module import PixNetLightning

    return PixNetLightning(net, gene_weight=gene_weight / gene_weight.mean(), **kw)


def _slide_data(slide, ts, genes: list[str], config: ModelConfig) -> SlideData:
    work = slide.working_image(config.um_per_px)
    counts, totals = table_counts(ts.table, genes, other=config.semantics == "density")
    logger.info("loading %s at %g um/px (%d x %d px)", slide.image, config.um_per_px, *work.shape)
    return SlideData(work.load(), ts.spots.scaled(work.f), counts, totals)


def _mean_area(spots) -> float:
    if spots.kind == "square":
        return float(np.mean((2 * spots.size) ** 2))
    if spots.kind == "circle":
        return float(np.mean(np.pi * spots.size**2))
    import shapely

    return float(np.mean(shapely.area(np.asarray(spots.polygons))))


def _default_tiles(data, masks, spec: TileSpec, batch_size: int) -> int:
    window = (spec.tile - 2 * spec.context) ** 2
    area = sum(_mean_area(d.spots.subset(m)) * m.sum() for d, m in zip(data, masks) if m.any())
    return int(max(batch_size, np.ceil(2 * area / window / batch_size) * batch_size))
