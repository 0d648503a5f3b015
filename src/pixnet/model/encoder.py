"""The encoder: any timm backbone as a feature pyramid, with histology checkpoints from a path."""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from torch import nn

logger = logging.getLogger(__name__)

# Prefixes that wrap a ResNet's keys in common checkpoints: Ciga et al.'s Lightning checkpoint
# ("model.resnet.conv1.weight"), DataParallel ("module."), SSL frameworks ("backbone.", "encoder.").
_PREFIXES = (
    "model.resnet.",
    "model.backbone.",
    "model.encoder.",
    "model.",
    "module.",
    "resnet.",
    "backbone.",
    "encoder.",
)


def build_encoder(name: str = "resnet18", *, weights: str | Path | None = None) -> nn.Module:
    """A timm backbone with ``features_only=True`` (its ``feature_info`` gives channels and strides).

    Parameters
    ----------
    name
        Any timm model that supports ``features_only`` (``"resnet18"``, ``"resnet50"``,
        ``"efficientnet_b0"``, ``"convnext_tiny"``...).
    weights
        ``None`` (random initialisation), ``"imagenet"`` (timm downloads them; needs the
        internet), or a path to a checkpoint file, for example Ciga et al.'s self-supervised
        histology ResNet18 (``tenpercent_resnet18.ckpt``), whose key layout is understood.

    """
    pretrained = isinstance(weights, str) and weights.lower() == "imagenet"
    try:
        encoder = timm.create_model(name, features_only=True, pretrained=pretrained)
    except RuntimeError as err:
        raise ValueError(f"timm cannot build encoder {name!r} with features_only=True: {err}") from err
    if weights is not None and not pretrained:
        load_checkpoint(encoder, weights)
    return encoder


def _state_dict(obj) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict", "teacher", "student"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            return _state_dict(obj[key])
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("The checkpoint holds no state dict of tensors (looked under 'state_dict' and 'model').")
    return obj


def load_checkpoint(encoder: nn.Module, path: str | Path, *, min_fraction: float = 0.9) -> None:
    """Load encoder weights from a checkpoint file, whatever prefix wraps its keys.

    Keys are matched after removing the prefixes checkpoints commonly add; a classification
    or projection head in the file is ignored. Raises if fewer than ``min_fraction`` of the
    encoder's tensors are found, since a silently random encoder is the worst outcome.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Encoder checkpoint {path} not found. Pass weights=None, 'imagenet', or a checkpoint path."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"{path} cannot be read as a PyTorch checkpoint: {err}") from err
    state = _state_dict(raw)
    target = encoder.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key
        for prefix in _PREFIXES:
            if k not in target and k.startswith(prefix):
                k = k[len(prefix) :]
        if k in target and target[k].shape == value.shape:
            mapped[k] = value
    found = len(mapped) / max(1, len(target))
    if found < min_fraction:
        example = next(iter(state), "?")
        raise ValueError(
            f"{path} matches only {found:.0%} of the encoder's {len(target)} tensors (its keys look like {example!r}). "
            "Is it a checkpoint of the same architecture as `encoder`?"
        )
    encoder.load_state_dict(mapped, strict=False)
    logger.info("loaded %d/%d encoder tensors from %s", len(mapped), len(target), path)
