"""``pixnet.tl.pretrain``: a self-supervised warm start of the encoder on the slides' own H&E tiles."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from spatialdata import SpatialData
from tqdm.auto import tqdm

from ..data import resolve_slide, resolve_table, spot_diameter_um, table_spots, working_resolution
from ..model._atomic import aside, publish_dir
from ..model.encoder import build_encoder, resolve_encoder, timm_model
from ..model.simsiam import SimSiam, augment

logger = logging.getLogger(__name__)

#: A tile is kept when at least this share of its pixels is stained (darkest channel below 200).
TISSUE_FRACTION = 0.3


def pretrain(
    sdata: SpatialData | Sequence[SpatialData],
    *,
    out: str | Path,
    encoder: str = "resnet18",
    encoder_weights: str | Path | None = None,
    um_per_px: float | None = None,
    tile_px: int | None = None,
    n_tiles: int = 2048,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float | None = None,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: str | None = None,
    overwrite: bool = False,
    image: str | None = None,
    slide_um_per_px: float | None = None,
    progress: bool = True,
) -> Path:
    """Pretrain the encoder with SimSiam on H&E tiles of the given slides (no expression is used).

    For users without access to gated histology weights: the encoder starts from what the
    slides at hand look like. The method is SimSiam (Chen & He, CVPR 2021; see
    :mod:`pixnet.model.simsiam`), with SGD at ``lr = 0.05 * batch_size / 256``, momentum 0.9 and a
    cosine schedule, as in the paper. Whether it helps is measured in ``docs/encoders.md``.

    Parameters
    ----------
    sdata
        One slide or several; only their images are read.
    out
        Folder to write: ``model.safetensors`` and ``config.json`` in timm's layout, so that
        ``fit(..., encoder=<same name>, encoder_weights=out)`` (or ``encoder=out``) starts from it.
    encoder, encoder_weights
        The encoder to pretrain and its initial weights, as :func:`pixnet.tl.fit` takes them.
    um_per_px, tile_px
        Working resolution and tile side; by default those :func:`pixnet.tl.fit` picks for the
        slides' recorded spots (0.5 um/px and 256 px without spots). Pretrain at the resolution you fit at.
    n_tiles
        Tissue tiles drawn (once, at random) from the slides; each epoch sees two new views of each.
    epochs, batch_size, lr, weight_decay, seed
        Training budget and SGD's parameters.
    device
        ``"cuda"``, ``"cpu"``...; by default a GPU when there is one.
    overwrite
        Replace an existing ``out`` (otherwise ``FileExistsError``).
    image, slide_um_per_px
        The H&E image and its micrometres per pixel, if :mod:`pixnet.io` did not record them.
    progress
        Show a progress bar.

    Returns
    -------
    The folder written (atomically: a crash leaves any earlier one intact).

    """
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it, or another out=.")
    sdatas = [sdata] if isinstance(sdata, SpatialData) else list(sdata)
    if not sdatas:
        raise ValueError("sdata is an empty list; pass at least one SpatialData object.")
    if epochs < 1 or n_tiles < 2 or batch_size < 2:
        raise ValueError("epochs must be at least 1, n_tiles and batch_size at least 2 (SimSiam's BatchNorm).")
    torch.manual_seed(seed)
    slides = [resolve_slide(s, image=image, um_per_px=slide_um_per_px) for s in sdatas]
    um_per_px, tile_px = _resolution(sdatas, slides, um_per_px, tile_px)
    tiles = _tissue_tiles(slides, um_per_px, tile_px, n_tiles, np.random.default_rng(seed))  # (N, 3, T, T) uint8
    spec, weights = resolve_encoder(encoder, encoder_weights)
    net = SimSiam(build_encoder(encoder, weights=weights, spec=spec))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net.to(dev).train()
    lr = lr if lr is not None else 0.05 * batch_size / 256
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = len(tiles) // batch_size
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(1, total))))
    g = torch.Generator().manual_seed(seed)
    history = []
    bar = tqdm(total=total, desc="pretrain (SimSiam)", disable=not progress, leave=False)
    for epoch in range(epochs):
        order = torch.randperm(len(tiles), generator=g)
        losses = []
        for s in range(steps_per_epoch):
            batch = tiles[order[s * batch_size : (s + 1) * batch_size]]
            x1, x2 = (augment(batch, g, out=tile_px).to(dev) for _ in range(2))
            loss = net.loss(x1, x2)
            if not torch.isfinite(loss):
                raise ValueError(f"The SimSiam loss became {loss.item()}; lower lr (now {lr:g}).")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        history.append({"epoch": epoch, "loss": float(np.mean(losses))})
        logger.info("pretrain epoch %d/%d: SimSiam loss %.4f", epoch + 1, epochs, history[-1]["loss"])
    bar.close()
    meta = {"method": "SimSiam (Chen & He 2021)", "encoder": str(encoder), "encoder_weights": weights,
            "um_per_px": um_per_px, "tile_px": tile_px, "n_tiles": len(tiles), "epochs": epochs,
            "batch_size": batch_size, "lr": lr, "seed": seed, "n_slides": len(sdatas), "history": history}  # fmt: skip
    return save_encoder(net.encoder.cpu(), spec, out, meta=meta, overwrite=overwrite)


def save_encoder(encoder: torch.nn.Module, spec: dict, out: Path, *, meta: dict, overwrite: bool) -> Path:
    """Write the encoder's timm model as timm's ``save_for_hf`` lays it out, atomically."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = aside(out)
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in timm_model(encoder).state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        config = {
            "architecture": spec["arch"], "num_classes": 0, "model_args": spec.get("kwargs", {}),
            "pretrained_cfg": {"mean": list(spec["mean"]), "std": list(spec["std"]), "num_classes": 0},
            "pixnet_pretrain": meta,
        }  # fmt: skip
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=True to replace it.")
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("pretrained encoder written to %s", out)
    return out


def _resolution(sdatas, slides, um_per_px, tile_px) -> tuple[float, int]:
    """Fit's working resolution and tile for the slides' recorded spots, or 0.5 um/px and 256 px without."""
    try:
        tables = [resolve_table(s, bin_size=None, table=None, default=16) for s in sdatas]
        spots = [table_spots(sl.sdata, t, sl.cs).spots for sl, t in zip(slides, tables)]
        diameter = spot_diameter_um(spots, [sl.um_per_px for sl in slides])
    except (KeyError, ValueError):
        return um_per_px or 0.5, tile_px or 256
    um, tile = working_resolution(diameter, um_per_px=um_per_px)
    return um, tile_px or tile


def _tissue_tiles(slides, um_per_px: float, tile_px: int, n: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` random tiles ``(n, 3, T, T)`` uint8 of stained tissue, from the slides in proportion to their area."""
    images = [sl.working_image(um_per_px).load() for sl in slides]
    images = [im for im in images if im.shape[0] >= tile_px and im.shape[1] >= tile_px]
    if not images:
        raise ValueError(
            f"No slide image is at least {tile_px} px on a side at {um_per_px} um/px; pass a smaller tile_px."
        )
    area = np.array([im.shape[0] * im.shape[1] for im in images], float)
    out, tries = [], 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        im = images[rng.choice(len(images), p=area / area.sum())]
        y, x = rng.integers(0, im.shape[0] - tile_px + 1), rng.integers(0, im.shape[1] - tile_px + 1)
        tile = im[y : y + tile_px, x : x + tile_px]
        if (tile.min(-1) < 200).mean() >= TISSUE_FRACTION:
            out.append(np.ascontiguousarray(tile.transpose(2, 0, 1)))
    if len(out) < 2:
        raise ValueError("Found no tissue tiles (dark-stained pixels) in the images: is this an H&E image?")
    if len(out) < n:
        logger.warning("found %d tissue tiles of the %d asked for", len(out), n)
    return torch.from_numpy(np.stack(out))
