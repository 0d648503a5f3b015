"""The Lightning trainer pixnet trains with: devices, precision, checkpoints, early stopping, history."""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf
from tqdm.contrib.logging import logging_redirect_tqdm

from .._logging import logger_levels

logger = logging.getLogger(__name__)


class HistoryCallback(Callback):
    """Per-epoch metrics (train loss, validation loss and PCC), kept with the model."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for key, name in (("train_loss_epoch", "train_loss"), ("val_loss", "val_loss"), ("val_pcc", "val_pcc")):
            if key in m:
                row[name] = float(m[key])
        self.rows.append(row)
        scores = ", ".join(f"{k.replace('_', ' ').replace('pcc', 'PCC')} {v:.4g}" for k, v in row.items()
                           if k not in ("epoch", "step"))  # fmt: skip
        logger.info("epoch %d/%d (step %d): %s", row["epoch"] + 1, trainer.max_epochs, row["step"], scores or "-")

    def state_dict(self) -> dict:  # saved in checkpoints, so a resumed run keeps its history
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state.get("rows", []))


class EpochBar(TQDMProgressBar):
    """Lightning's progress bar (one bar, ``leave=False``), epochs counted from 1 of ``max_epochs`` as the log's."""

    def on_train_epoch_start(self, trainer: L.Trainer, *_) -> None:
        # Lightning's own sets "Epoch {current_epoch}" (from 0) and shows it: the description is set before the reset
        bar = self.train_progress_bar
        bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}", refresh=False)
        bar.reset(total=convert_inf(self.total_train_batches))
        bar.initial = 0


class ResumeSampler(Callback):
    """Let the tile sampler know where a resumed run stands, so it skips the batches already trained on."""

    def __init__(self, sampler):
        self.sampler = sampler

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        def position() -> tuple[int, int]:
            loop = trainer.fit_loop
            done = loop.epoch_loop.batch_progress.current.processed if loop.restarting else 0
            return trainer.current_epoch, done

        self.sampler.position = position

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.sampler.position = None


@contextlib.contextmanager
def quiet_lightning():
    """Hold back Lightning's own console lines while pixnet trains; its warnings and errors still show.

    Lightning logs the devices it found, an advert for its cloud logger and "`max_epochs` reached"
    at INFO, through a handler of its own that also propagates to the root logger (so a notebook
    that configured logging sees each line twice), and even with ``progress=False``. pixnet logs
    the device and precision itself (:func:`make_trainer`). Levels are restored afterwards.

    pixnet's own lines (an epoch's scores) go above the progress bar, not onto its end: when the
    root logger writes to the console, its handler writes through tqdm meanwhile (tqdm's
    ``logging_redirect_tqdm``; without such a handler nothing is redirected, so nothing new shows).
    """
    names = ("lightning.pytorch", "lightning.fabric")
    levels = {name: max(logging.getLogger(name).getEffectiveLevel(), logging.WARNING) for name in names}
    console = any(isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.stderr)
                  for h in logging.root.handlers)  # fmt: skip
    redirect = logging_redirect_tqdm() if console else contextlib.nullcontext()
    with logger_levels(levels), warnings.catch_warnings(), redirect:
        # torch >= 2.10 deprecates a class Lightning's pytree helper still uses
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
        # val_fraction=0 trains without validation on purpose
        warnings.filterwarnings("ignore", message=r".*`validation_step` but have no `val_dataloader`")
        yield


def make_trainer(
    ckpt_dir: Path,
    *,
    epochs: int,
    accelerator: str,
    devices,
    precision: str | None,
    has_val: bool,
    early_stopping: int | None,
    progress: bool,
    callbacks: list[Callback],
    checkpoint_every: int | None = None,
) -> tuple[L.Trainer, ModelCheckpoint]:
    """A Trainer keeping the best epoch by validation PCC (the last one without validation).

    With ``checkpoint_every``, ``last.ckpt`` is also written every that many steps, so a killed
    run loses at most that many steps.
    """
    cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    precision = precision or ("bf16-mixed" if cuda and torch.cuda.is_bf16_supported() else "32-true")
    best = ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor="val_pcc" if has_val else None, mode="max",
        save_last=checkpoint_every is None, save_top_k=1, enable_version_counter=False,
    )  # fmt: skip
    cbs = [best, *callbacks, *([EpochBar()] if progress else [])]
    if checkpoint_every is not None:
        cbs.append(ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=checkpoint_every,
                                   save_on_train_epoch_end=True, enable_version_counter=False))  # fmt: skip
    if early_stopping is not None and has_val:
        cbs.append(EarlyStopping(monitor="val_pcc", mode="max", patience=early_stopping))
    elif early_stopping is not None:
        logger.warning("early_stopping=%d: no validation spots (the held-out blocks hold none), so every epoch "
                       "runs; hold out more (val_fraction) or use more slides", early_stopping)  # fmt: skip
    with quiet_lightning():  # it logs the devices it found as it is built
        trainer = L.Trainer(
            max_epochs=epochs, accelerator=accelerator, devices=devices, precision=precision, callbacks=cbs,
            logger=False, enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
            deterministic="warn" if cuda else True, default_root_dir=str(ckpt_dir), log_every_n_steps=1,
        )  # fmt: skip
    device = type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()
    logger.info("training on %s (%d device%s), precision %s", device, trainer.num_devices,
                "s" * (trainer.num_devices > 1), trainer.precision)  # fmt: skip
    return trainer, best
