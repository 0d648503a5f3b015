"""``pixnet.tl.fit``: train PixNet on the bins (or any spots) of one or several slides."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Literal

from spatialdata import SpatialData

from ..data import (
    default_loss,
    default_val_fraction,
    on_image,
    resolve_slide,
    resolve_table,
    spot_diameter_um,
    table_spots,
)
from ..data.bins import check_counts
from ..infer.expect import expected_log_normalized_grad
from ..model import ModelConfig, PixNet
from ..pp import select_genes
from ..train.config import TilingConfig, TrainConfig
from ..train.loaders import slide_data
from ..train.run import train_model
from ._models import record_model

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
    feature_cache: str | Path | None = "memory",
    feature_cache_gb: float = 4.0,
    frozen_views: int = 4,
    tile_px: int | None = None,
    context_px: int = 16,
    batch_size: int = 8,
    tiles_per_epoch: int | None = None,
    augment: bool = True,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    schedule: Literal["constant", "cosine"] = "cosine",
    val_fraction: float | None = None,
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
        fits ``"mse_pcc"``. ``loss=None`` picks by the spot size (:func:`pixnet.data.default_loss`):
        ``"poisson_pcc"`` (Poisson likelihood of the counts plus the batch PCC loss) for density maps
        of bins up to 16 um, best on the synthetic accuracy benchmark; ``"mse_pcc"`` for larger spots,
        best on real tissue (HER2ST) and for the ``"sum"`` and ``"mean"`` maps (``benchmarks/RESULTS.md``).
    encoder, encoder_weights, decoder_hidden, learnable_skip
        Architecture. ``encoder``: a timm CNN or ViT name, ``"hf-hub:<org>/<repo>"`` (UNI, H-optimus,
        Phikon...; fetched when online) or a local checkpoint file or folder (timm's or transformers'
        layout); see ``docs/encoders.md``. ``encoder_weights``: ``None`` (random for a timm name; a hub
        name or path brings its own), ``"imagenet"``, or a checkpoint file or folder (for example one
        written by :func:`pixnet.tl.pretrain`). A ViT feeds the decoder through a simple feature pyramid.
    freeze_encoder
        Train only the decoder and head (and a ViT's pyramid); the encoder's features are then
        computed once per tile-augmentation and cached.
    feature_cache, feature_cache_gb, frozen_views
        With ``freeze_encoder``: ``"memory"``, a folder (on disk) or ``None`` (recompute), bounded by
        ``feature_cache_gb`` (least recently used tiles evicted); epochs cycle through ``frozen_views``
        sets of ``tiles_per_epoch`` tile-augmentations, so every epoch after the first ``frozen_views``
        costs the decoder only.
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
        Share of the slide's blocks held out for validation (0 to train on everything). ``None``
        follows the spots' size: 0.15 for bins up to 16 um, where the epoch with the best
        validation PCC is kept; 0 for larger spots (Visium, legacy ST), where a few hundred spots
        are too few to spare (on HER2ST, 100 um spots, it raised PCC@M on every held-out section),
        unless ``early_stopping`` is given.
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
    train = TrainConfig(
        epochs=epochs, batch_size=batch_size, tiles_per_epoch=tiles_per_epoch, augment=augment, lr=lr,
        weight_decay=weight_decay, schedule=schedule, val_fraction=_val_placeholder(val_fraction, early_stopping),
        early_stopping=early_stopping,
        freeze_encoder=freeze_encoder, feature_cache=None if feature_cache is None else str(feature_cache),
        feature_cache_gb=feature_cache_gb, frozen_views=frozen_views, seed=seed, accelerator=accelerator,
        devices=devices, precision=precision, num_workers=num_workers, checkpoint_every=checkpoint_every,
    )  # fmt: skip
    tiling = TilingConfig(um_per_px=um_per_px, tile_px=tile_px, context_px=context_px)
    if model_dir is not None and Path(model_dir).exists() and not overwrite:
        raise FileExistsError(f"{model_dir} exists; pass overwrite=True to replace it, or another model_dir.")
    import lightning as L  # here, not at import: ~90 MB that predict and evaluate do not need

    L.seed_everything(seed, workers=True, verbose=False)
    slides = [resolve_slide(s, image=image, um_per_px=slide_um_per_px) for s in sdatas]
    tables = [resolve_table(s, bin_size=bin_size, table=table, default=16) for s in sdatas]
    for s, t in zip(sdatas, tables):  # counts, not values scanpy normalised (they would be normalised twice)
        check_counts(s.tables[t], t)
    genes = select_genes([s.tables[t] for s, t in zip(sdatas, tables)], n_top=n_genes, genes=genes)
    spots = [on_image(sl, table_spots(sl.sdata, t, sl.cs), what=f"bins of {t}") for sl, t in zip(slides, tables)]
    diameter = spot_diameter_um([ts.spots for ts in spots], [sl.um_per_px for sl in slides])
    tiling = tiling.resolved(diameter)
    if val_fraction is None:  # checked above with 0; its value follows the spots' size
        train = replace(train, val_fraction=default_val_fraction(diameter, early_stopping=early_stopping is not None))
    logger.info("spots of %.3g um: working at %.3g um/px in %d px tiles, %.0f%% of the blocks for validation",
                diameter, tiling.um_per_px, tiling.tile_px, 100 * train.val_fraction)  # fmt: skip
    loss = loss or default_loss(diameter, semantics)  # from the spot size and what the map means
    encoder_spec, encoder_weights = encoder_source(encoder, encoder_weights, method)
    config = ModelConfig(
        genes=tuple(genes), encoder=str(encoder), encoder_weights=encoder_weights, encoder_spec=encoder_spec,
        decoder_hidden=decoder_hidden, learnable_skip=learnable_skip, semantics=semantics, map_stride=map_stride,
        um_per_px=tiling.um_per_px, loss=loss, pcc_weight=pcc_weight, total_weight=total_weight, method=method,
    )  # fmt: skip
    data = [slide_data(sl, ts, genes, config) for sl, ts in zip(slides, spots)]
    model = PixNet(config)
    about = {"bin_size": bin_size, "table": tables, "n_slides": len(sdatas)}
    training = train_model(model, data, train, tiling, about=about, checkpoint_dir=checkpoint_dir, progress=progress,
                           expectation=training_expectation(config))  # fmt: skip
    model = PixNet(config, model.module.cpu().eval(), training)
    path = str(model.save(model_dir, overwrite=overwrite)) if model_dir else None
    for s in sdatas:
        record_model(s, model, key_added, path)
    return model


def training_expectation(config: ModelConfig):
    """What the loss's PCC and ``val_pcc`` compare with the measurement: predict's ``X``, differentiable.

    ``E[log1p(x / T * target_sum)]`` of a density model's aggregates under Poisson counts
    (:func:`pixnet.infer.expect.expected_log_normalized_grad`); None for the paper's semantics
    (the map is the normalised value).
    """
    if config.semantics != "density":
        return None
    return partial(expected_log_normalized_grad, target_sum=config.target_sum)


def encoder_source(encoder: str, weights: str | Path | None, method: str) -> tuple[dict | None, str | None]:
    """The encoder's architecture spec (None for a timm name) and its initial weights, resolved once."""
    from ..model.encoder import is_source, resolve_encoder

    if method == "spot" or not is_source(str(encoder)):
        if weights is None or str(weights).lower() == "imagenet" or method == "spot":
            return None, None if weights is None else str(weights)
        spec, weights = resolve_encoder(str(encoder), weights)
        return (spec if spec["kwargs"] else None), weights  # a ViT file's arguments (SwiGLU...) are kept
    return resolve_encoder(str(encoder), weights)


def _val_placeholder(val_fraction: float | None, early_stopping: int | None) -> float:
    """``val_fraction`` for the config checked before the spots are known (``None``'s value follows them)."""
    if val_fraction is not None:
        return val_fraction
    return default_val_fraction(0.0, early_stopping=early_stopping is not None)
