"""One training run: the trainer, resuming from a checkpoint folder that holds this run, the best epoch kept."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from ..model import PixNet, method_of
from .config import TilingConfig, TrainConfig
from .dataset import EpochSampler, TileSpec, spatial_split
from .frozen import cycle_loader, make_cache
from .loaders import default_tiles, dense_module, tile_loaders

logger = logging.getLogger(__name__)


def train_model(
    model: PixNet,
    data: list,
    train: TrainConfig,
    tiling: TilingConfig,
    *,
    about: dict,
    checkpoint_dir,
    progress: bool,
    expectation=None,
) -> dict:
    """Train ``model`` in place on ``data`` (:class:`~pixnet.train.dataset.SlideData`, one per slide).

    Bins are split into training and validation blocks, the method's loaders and module are
    built (a registered method's own for the baselines, :func:`pixnet.model.method_of`), and the best epoch is loaded.
    ``expectation``: the dense module's predicted measured value (:class:`~pixnet.train.module.PixNetLightning`).

    Returns
    -------
    ``{"params": ..., "history": [...]}`` for ``training.json``: the flat parameters earlier
    versions saved, plus ``"train"`` and ``"tiling"``, the configs.

    """
    cfg, t = model.config, train
    spec = TileSpec(tile=tiling.tile_px, context=tiling.context_px, map_stride=cfg.map_stride, supersample=2)
    split = {"block": tiling.validation_block, "val_fraction": t.val_fraction, "seed": t.seed}
    val = [spatial_split(d.spots.centres, **split) for d in data]
    train_mask = [~v for v in val]
    opts = {"batch_size": t.batch_size, "seed": t.seed, "augment": t.augment, "num_workers": t.num_workers}
    method = method_of(cfg.method)
    if method.train is not None:  # a baseline (pixnet.baselines) trains its own way
        loader, val_loader, module = method.train(
            model, data, train_mask, val, lr=t.lr, weight_decay=t.weight_decay, **opts
        )
    else:
        n_tiles = t.tiles_per_epoch or default_tiles(data, train_mask, spec, t.batch_size)
        loader, val_loader = tile_loaders(data, train_mask, val, spec, n_tiles, **opts)
        cache = make_cache(t.feature_cache, t.feature_cache_gb) if t.freeze_encoder else None
        if cache is not None:  # a finite pool of tile-augmentations, so cached features are met again
            loader = cycle_loader(loader, t.frozen_views)
        module = dense_module(
            model.module, data, train_mask, lr=t.lr, weight_decay=t.weight_decay, freeze_encoder=t.freeze_encoder,
            feature_cache=cache, schedule=t.schedule, total_steps=t.epochs * len(loader), expectation=expectation,
        )  # fmt: skip
    params = {
        "bin_size": about["bin_size"], "table": about["table"], "epochs": t.epochs, "um_per_px": tiling.um_per_px,
        "tile_px": tiling.tile_px, "context_px": tiling.context_px, "batch_size": t.batch_size,
        "tiles_per_epoch": len(loader.dataset), "augment": t.augment, "lr": t.lr, "weight_decay": t.weight_decay,
        "schedule": t.schedule, "val_fraction": t.val_fraction, "seed": t.seed, "freeze_encoder": t.freeze_encoder,
        "n_slides": about["n_slides"], "n_train_bins": int(sum(m.sum() for m in train_mask)),
        "n_val_bins": int(sum(v.sum() for v in val)),
    }  # fmt: skip
    history, params["best_epoch"] = run_training(
        module, loader, val_loader, checkpoint_dir=checkpoint_dir, checkpoint_every=t.checkpoint_every,
        run={**params, "model": cfg.to_dict()}, epochs=t.epochs, accelerator=t.accelerator, devices=t.devices,
        precision=t.precision, early_stopping=t.early_stopping, progress=progress,
    )  # fmt: skip
    params["train"], params["tiling"] = t.to_dict(), asdict(tiling)
    return {"params": params, "history": history}


def run_training(module, loader, val_loader, *, checkpoint_dir, checkpoint_every: int, run: dict, **trainer_kw):
    """Fit with Lightning (resuming from ``checkpoint_dir`` when it holds this run); load the best epoch.

    Returns the per-epoch history and the best epoch (None without validation).
    """
    from .trainer import HistoryCallback, ResumeSampler, make_trainer, quiet_lightning

    history = HistoryCallback()
    callbacks = [history] + ([ResumeSampler(loader.sampler)] if isinstance(loader.sampler, EpochSampler) else [])
    with tempfile.TemporaryDirectory(prefix="pixnet-ckpt-") as tmp:
        ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else Path(tmp)
        if checkpoint_dir:
            claim_checkpoint_dir(ckpt_dir, run)
        trainer, best = make_trainer(
            ckpt_dir, has_val=val_loader is not None, callbacks=callbacks,
            checkpoint_every=checkpoint_every if checkpoint_dir else None, **trainer_kw,
        )  # fmt: skip
        resume = ckpt_dir / "last.ckpt"
        with quiet_lightning():
            ckpt_path = str(resume) if checkpoint_dir and resume.exists() else None
            trainer.fit(module, loader, val_loader, ckpt_path=ckpt_path)
        if not best.best_model_path:
            return history.rows, None
        ckpt = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
        module.load_state_dict(ckpt["state_dict"])
        return history.rows, int(ckpt["epoch"])


def claim_checkpoint_dir(path: Path, run: dict) -> None:
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
