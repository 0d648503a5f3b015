"""How a model trains and how slides are tiled for it: frozen, documented, saved with the weights.

What the model *is* lives in :class:`pixnet.model.ModelConfig`. :func:`pixnet.tl.fit` builds
the three from its keyword arguments; ``training.json`` beside the weights keeps them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal


@dataclass(frozen=True)
class TilingConfig:
    """How a slide is cut into training tiles, in working pixels (the network's input).

    Attributes
    ----------
    um_per_px
        Working resolution: micrometres per pixel of the network's input. ``None``: from the
        spots' size (:func:`pixnet.data.working_resolution`).
    tile_px
        Side of a training tile (a multiple of 32). ``None``: 256 for bins up to 16 um, 128 for
        larger spots, or larger when a spot and its context would not fit.
    context_px
        Band at a tile's edge where bins are not scored (they are cut by the edge).

    """

    um_per_px: float | None = None
    tile_px: int | None = None
    context_px: int = 16

    def __post_init__(self):
        if self.um_per_px is not None and not self.um_per_px > 0:
            raise ValueError(f"um_per_px must be positive, got {self.um_per_px!r}.")
        if self.context_px < 0:
            raise ValueError(f"context_px must be at least 0, got {self.context_px!r}.")

    def resolved(self, diameter_um: float) -> TilingConfig:
        """The same tiling with the working resolution and tile side filled in for spots of ``diameter_um``."""
        from ..data import working_resolution

        um_per_px, auto_tile = working_resolution(diameter_um, um_per_px=self.um_per_px, context_px=self.context_px)
        return replace(self, um_per_px=um_per_px, tile_px=self.tile_px or auto_tile)

    @property
    def validation_block(self) -> int:
        """Side of the square blocks of the slide held out together for validation (two tile windows)."""
        return 2 * (self.tile_px - 2 * self.context_px)


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained (see :func:`pixnet.tl.fit` for each setting's effect).

    Attributes
    ----------
    epochs
        Passes over ``tiles_per_epoch`` random tiles.
    batch_size, tiles_per_epoch, augment
        Tiles per step; tiles per epoch (``None``: twice the training area); flips, rotations, stain jitter.
    lr, weight_decay, schedule
        Adam's parameters and ``"constant"`` or ``"cosine"`` (warm-up, then cosine decay) learning rate.
    val_fraction, early_stopping
        Share of the slide's blocks held out for validation; stop after this many epochs without
        a better validation PCC (``None``: never).
    freeze_encoder
        Train only the decoder and head (and a ViT's pyramid); the encoder's features are cached.
    feature_cache, feature_cache_gb, frozen_views
        With ``freeze_encoder``: ``"memory"``, a folder, or ``None`` (recompute every time); its bound
        in GiB; how many sets of ``tiles_per_epoch`` tile-augmentations the epochs cycle through.
    seed
        Seed of initialisation, tiles and augmentation.
    accelerator, devices, precision, num_workers
        Lightning's (``precision=None``: bf16-mixed on GPU, 32-true on CPU).
    checkpoint_every
        Steps between ``last.ckpt`` writes when a checkpoint folder is given.

    """

    epochs: int = 48
    batch_size: int = 8
    tiles_per_epoch: int | None = None
    augment: bool = True
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: Literal["constant", "cosine"] = "cosine"
    val_fraction: float = 0.15
    early_stopping: int | None = None
    freeze_encoder: bool = False
    feature_cache: str | None = "memory"
    feature_cache_gb: float = 4.0
    frozen_views: int = 4
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = "auto"
    precision: str | None = None
    num_workers: int = 0
    checkpoint_every: int = 50

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}.")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}.")
        if self.feature_cache_gb <= 0 or self.frozen_views < 1:
            raise ValueError(
                f"feature_cache_gb must be positive and frozen_views at least 1, got {self.feature_cache_gb!r} "
                f"and {self.frozen_views!r}."
            )
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}.")
        if self.early_stopping is not None and self.val_fraction == 0:
            raise ValueError(
                f"early_stopping={self.early_stopping} watches the validation PCC, but val_fraction=0 holds no spots "
                "out for it. Pass val_fraction > 0 (0.15, or None in pixnet.tl.fit) or early_stopping=None."
            )

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)
