"""The encoder: a timm CNN or vision transformer as a feature pyramid, from a name, the hub or disk.

Where an encoder comes from (``encoder=``):

- a **timm name** (``"resnet18"``, ``"convnext_tiny"``, ``"vit_small_patch16_224"``): random
  weights unless ``weights="imagenet"`` (timm's pretrained tag) or a checkpoint path is given;
- a **hub name** ``"hf-hub:<org>/<repo>"`` (UNI, H-optimus, Virchow in timm's layout; Phikon in
  transformers'): the folder is fetched with ``huggingface_hub`` (gated models need ``hf auth login``),
  then read as a local folder;
- a **local folder** with ``config.json`` (timm or transformers ViT) or a **state dict file**
  (ResNets are recognised from their keys; other architectures need ``encoder=<timm name>`` and
  ``weights=<file>``). See :mod:`pixnet.model.checkpoints` for the key layouts.

The architecture is resolved once into a JSON-ready *spec* (``arch``, ``kwargs``, ``mean``, ``std``)
that is saved with the model, so a trained model rebuilds offline, without the checkpoint.
Input normalisation comes from the encoder's own config (timm's ``pretrained_cfg`` or the
folder's preprocessor config), not from constants.
"""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from torch import nn

from .checkpoints import WEIGHT_FILES, folder_config, infer_arch, match_state, read_state_dict
from .hub import hub_folder, hub_repo
from .vit import ViTPyramid, is_vit
from .vit_args import complete_spec, timm_kwargs

logger = logging.getLogger(__name__)

_IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def is_source(name: str) -> bool:
    """Whether ``encoder`` names a hub repo or a path rather than a timm architecture."""
    return name.startswith("hf-hub:") or Path(name).expanduser().exists() or any(c in name for c in "/\\")


def _local(name: str) -> Path:
    return hub_folder(name) if name.startswith("hf-hub:") else Path(name).expanduser()


def resolve_encoder(name: str, weights: str | Path | None = None) -> tuple[dict, str | None]:
    """The architecture spec of ``name`` and the weights to start from.

    Returns
    -------
    ``(spec, weights)``: spec ``{"arch", "kwargs", "mean", "std"}`` (JSON-ready); weights ``None``
    (random), ``"imagenet"`` (timm's pretrained weights) or a local file or folder. A hub name or
    path brings its own weights unless ``weights`` says otherwise.

    Raises
    ------
    ValueError
        An unknown timm name, or a weights file whose architecture cannot be told.
    FileNotFoundError
        A path that does not exist.

    """
    name = str(name)
    if not is_source(name):
        if not timm.is_model(name):
            raise ValueError(
                f"encoder={name!r} is not a timm model, a 'hf-hub:<repo>' name or an existing path. "
                f"timm models like it: {timm.list_models(f'*{name[:6]}*')[:8]}."
            )
        cfg = timm.get_pretrained_cfg(name)  # the normalisation its pretrained weights expect
        norm = {"mean": list(cfg.mean), "std": list(cfg.std)} if cfg is not None else _IMAGENET
        spec, weights = {"arch": name, "kwargs": {}, **norm}, _weights(weights)
        if weights not in (None, "imagenet"):  # a ViT's file: its SwiGLU, registers... read off the tensors
            spec = complete_spec(spec, _weights_file(Path(weights)))
        return spec, weights
    path = _local(name)
    if not path.exists():
        raise FileNotFoundError(f"encoder={name!r}: {path} does not exist.")
    if path.is_dir():
        spec = complete_spec(folder_config(path), _weights_file(path), repo=hub_repo(name))
    else:
        arch = infer_arch(read_state_dict(path))
        if arch is None:
            raise ValueError(
                f"Cannot tell the architecture of {path} from its keys (only ResNets are recognised). Pass "
                "encoder=<timm name> (e.g. 'vit_base_patch16_224') and encoder_weights=<this file>."
            )
        spec = {"arch": arch, "kwargs": {}, **_IMAGENET}
    return spec, str(path) if weights is None else _weights(weights)


def _weights_file(path: Path) -> Path | None:
    if path.is_file():
        return path
    return next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)


def _weights(weights: str | Path | None) -> str | None:
    if weights is None or str(weights).lower() == "imagenet":
        return None if weights is None else "imagenet"
    return str(_local(str(weights)))


def build_encoder(
    name: str = "resnet18", *, weights: str | Path | None = None, spec: dict | None = None
) -> nn.Module:
    """The encoder as a feature pyramid: a module with ``feature_info`` (channels, reductions).

    A CNN is timm's ``features_only`` model; a vision transformer is wrapped by
    :class:`~pixnet.model.vit.ViTPyramid`. ``feature_info[0]`` carries the input ``mean`` and
    ``std`` the encoder expects.

    Parameters
    ----------
    name
        A timm name, ``"hf-hub:<repo>"`` or a path (see the module docstring).
    weights
        ``None`` (random, or the source's own weights for a hub name or path), ``"imagenet"``,
        or a checkpoint file or folder.
    spec
        The architecture as :func:`resolve_encoder` returned it (saved models pass theirs, so
        nothing is fetched); with a spec, ``weights=None`` means random initialisation.

    """
    if spec is None:
        spec, weights = resolve_encoder(name, weights)
    arch, kwargs = spec["arch"], timm_kwargs(spec.get("kwargs", {}))
    kwargs.pop("num_classes", None)
    pretrained = weights == "imagenet"
    with torch.device("meta"):
        probe = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    try:
        if is_vit(probe):
            vit = timm.create_model(arch, pretrained=pretrained, num_classes=0, **{**kwargs, "dynamic_img_size": True})
            encoder = ViTPyramid(vit)
        else:
            encoder = timm.create_model(arch, features_only=True, pretrained=pretrained, **kwargs)
    except RuntimeError as err:
        raise ValueError(f"timm cannot build encoder {arch!r} as a feature pyramid: {err}") from err
    info = encoder.feature_info.info[0]
    info["mean"], info["std"] = tuple(spec.get("mean", _IMAGENET["mean"])), tuple(spec.get("std", _IMAGENET["std"]))
    if weights is not None and not pretrained:
        load_checkpoint(encoder, weights)
    return encoder


def timm_model(encoder: nn.Module) -> nn.Module:
    """The timm model inside an encoder, whose keys checkpoints hold: the ViT, or the CNN itself."""
    return encoder.backbone.vit if isinstance(encoder, ViTPyramid) else encoder


def frozen_part(encoder: nn.Module) -> nn.Module:
    """What ``freeze_encoder`` freezes: the ViT's trunk (its pyramid stays trainable), or the CNN."""
    return encoder.backbone if isinstance(encoder, ViTPyramid) else encoder


def load_checkpoint(encoder: nn.Module, path: str | Path, *, min_fraction: float = 0.9) -> None:
    """Load encoder weights from a checkpoint file or folder, whatever layout or prefix wraps its keys.

    A classification or projection head in the file is ignored. Raises ``ValueError`` if fewer
    than ``min_fraction`` of the encoder's tensors are found, and ``FileNotFoundError`` for a
    missing path.
    """
    target_module = timm_model(encoder)
    target = target_module.state_dict()
    mapped = match_state(read_state_dict(path), target, min_fraction=min_fraction, source=str(path))
    target_module.load_state_dict(mapped, strict=False)
    logger.info("loaded %d/%d encoder tensors from %s", len(mapped), len(target), path)
