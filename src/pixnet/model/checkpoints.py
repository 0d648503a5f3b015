"""Encoder checkpoints on disk: files and folders in the layouts histology models are shipped in.

Understood layouts
------------------
- **A state dict file** (``.pt``, ``.pth``, ``.ckpt``, ``.bin``), plain or nested under ``state_dict``
  (PyTorch Lightning), ``model``, ``teacher``..., with keys wrapped in prefixes such as ``module.``
  (DataParallel), ``model.resnet.`` (Ciga et al.'s ``tenpercent_resnet18.ckpt``), ``backbone.`` or
  ``encoder.`` (SSL frameworks); classification and projection heads (``fc.``, ``head.``) are dropped.
- **A safetensors file**.
- **A timm folder**, as ``timm.models.push_to_hf_hub`` / ``save_for_hf`` write it (UNI, H-optimus,
  Virchow on the Hugging Face hub): ``config.json`` with ``architecture``, ``model_args`` and
  ``pretrained_cfg`` (``mean``, ``std``), and ``model.safetensors`` or ``pytorch_model.bin``.
- **A Hugging Face transformers ViT folder** (Phikon: ``owkin/phikon``): ``config.json`` with
  ``model_type: "vit"``, weights with ``embeddings.*`` / ``encoder.layer.N.*`` keys (optionally under
  ``vit.``), mean and std in ``preprocessor_config.json``. The keys are mapped to timm's ViT, so
  ``transformers`` is not needed.

Pure torch and timm: nothing here knows about slides.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

#: Weight files looked for in a folder, in order of preference.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pt", "model.pt", "model.pth")

# Prefixes that wrap a backbone's keys in common checkpoints, longest first.
PREFIXES = (
    "model.resnet.",
    "model.backbone.",
    "model.encoder.",
    "backbone.model.",
    "module.",
    "model.",
    "resnet.",
    "backbone.",
    "encoder.",
    "trunk.",
    "vit.",
)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file or folder (see the module's list of layouts).

    Raises
    ------
    FileNotFoundError
        No such file, or a folder without any of :data:`WEIGHT_FILES`.
    ValueError
        The file is not a checkpoint, or holds no dict of tensors.

    """
    path = Path(path).expanduser()
    if path.is_dir():
        found = [path / f for f in WEIGHT_FILES if (path / f).is_file()]
        if not found:
            raise FileNotFoundError(f"{path} holds none of {', '.join(WEIGHT_FILES)}: it is not a checkpoint folder.")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(
            f"Encoder checkpoint {path} not found. Pass a timm name, 'hf-hub:<repo>', or an existing file or folder."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"{path} cannot be read as a PyTorch checkpoint (nor as safetensors): {err}") from err
    state = _unnest(raw)
    if state is None:
        raise ValueError(
            f"{path} holds no state dict of tensors (looked at the top level and under 'state_dict', 'model', "
            "'teacher', 'student')."
        )
    if is_hf_vit(state):
        state = hf_vit_to_timm(state)
    return state


def _unnest(obj) -> dict[str, torch.Tensor] | None:
    if not isinstance(obj, dict):
        return None
    for key in ("state_dict", "model_state_dict", "model", "teacher", "student", "module"):
        if isinstance(obj.get(key), dict):
            found = _unnest(obj[key])
            if found:
                return found
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return tensors if tensors and len(tensors) >= len(obj) / 2 else None


def match_state(
    state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], *, min_fraction: float = 0.9, source: str = ""
) -> dict[str, torch.Tensor]:
    """The tensors of ``state`` renamed to ``target``'s keys, after removing common prefixes.

    A position embedding of another grid size is resampled (timm's ``resample_abs_pos_embed``).

    Raises
    ------
    ValueError
        Fewer than ``min_fraction`` of ``target``'s tensors were found: a silently random encoder
        is the worst outcome, so a checkpoint of another architecture is refused.

    """
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = key
        while k not in target:
            prefix = next((p for p in PREFIXES if k.startswith(p)), None)
            if prefix is None:
                break
            k = k[len(prefix) :]
        if k not in target:
            continue
        if k == "pos_embed" and value.ndim == 3 and value.shape != target[k].shape:
            value = _resample_pos_embed(value, target[k])
        if target[k].shape == value.shape:
            mapped[k] = value
    found = len(mapped) / max(1, len(target))
    if found < min_fraction:
        example = next(iter(state), "?")
        missing = next((k for k in target if k not in mapped), "?")
        raise ValueError(
            f"{source or 'The checkpoint'} matches only {found:.0%} of the encoder's {len(target)} tensors (its keys "
            f"look like {example!r}; the encoder's {missing!r} was not found). Is it a checkpoint of the same "
            "architecture as `encoder`? Pass the matching timm name as encoder=..., or the folder with its config.json."
        )
    return mapped


def _resample_pos_embed(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed

    n_prefix = 1 if (value.shape[1] - 1) ** 0.5 % 1 == 0 else 0
    side = int(round((like.shape[1] - n_prefix) ** 0.5))
    if side * side + n_prefix != like.shape[1]:
        return value
    return resample_abs_pos_embed(value, [side, side], num_prefix_tokens=n_prefix)


# --- Hugging Face transformers ViT (Phikon) ---------------------------------------------------------------

_HF_LAYER = re.compile(r"^(?:.*?\.)?encoder\.layer\.(\d+)\.(.+)$")
_HF_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}


def is_hf_vit(state: dict) -> bool:
    """Whether the keys are transformers' ViT layout (``embeddings.patch_embeddings...``)."""
    return any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in state)


def hf_vit_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Transformers' ``ViTModel`` keys -> timm's ``VisionTransformer`` keys (q, k, v fused into ``qkv``).

    The pooler and any classifier are dropped. Layout as in transformers'
    ``models/vit/convert_vit_timm_to_pytorch.py``, read in reverse.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        name = key.split("embeddings.", 1)[-1] if "embeddings." in key and "encoder.layer" not in key else None
        if name == "cls_token":
            out["cls_token"] = value
        elif name == "position_embeddings":
            out["pos_embed"] = value
        elif name is not None and name.startswith("patch_embeddings.projection."):
            out["patch_embed.proj." + name.rsplit(".", 1)[1]] = value
        elif (m := _HF_LAYER.match(key)) is not None:
            i, rest = int(m.group(1)), m.group(2)
            if rest.startswith("attention.attention."):
                part, kind = rest[len("attention.attention.") :].split(".")
                qkv.setdefault((i, kind), {})[part] = value
                continue
            for hf, timm_name in _HF_BLOCK.items():
                if rest.startswith(hf + "."):
                    out[f"blocks.{i}.{timm_name}.{rest[len(hf) + 1 :]}"] = value
        elif re.match(r"^(?:vit\.)?layernorm\.(weight|bias)$", key):
            out["norm." + key.rsplit(".", 1)[1]] = value
    for (i, kind), parts in qkv.items():
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


# --- folder configs -------------------------------------------------------------------------------------------


def folder_config(folder: str | Path) -> dict:
    """Architecture of a checkpoint folder: ``{"arch", "kwargs", "mean", "std"}``.

    Reads timm's ``config.json`` (``architecture``, ``model_args``, ``pretrained_cfg``) or
    transformers' ViT ``config.json`` (+ ``preprocessor_config.json`` for mean and std).

    Raises
    ------
    FileNotFoundError
        No ``config.json`` in the folder.
    ValueError
        A config of another kind (say a transformers model other than a ViT).

    """
    folder = Path(folder).expanduser()
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: a checkpoint folder needs the config.json that timm's save_for_hf or transformers' "
            "save_pretrained write. For a bare weights file pass encoder=<timm name>, encoder_weights=<file>."
        )
    cfg = json.loads(path.read_text())
    if "architecture" in cfg:  # timm
        from timm.models._hub import load_model_config_from_path

        pretrained_cfg, arch, model_args = load_model_config_from_path(folder)
        return {
            "arch": arch,
            "kwargs": dict(model_args or {}),
            "mean": list(pretrained_cfg.get("mean", (0.485, 0.456, 0.406))),
            "std": list(pretrained_cfg.get("std", (0.229, 0.224, 0.225))),
        }
    if cfg.get("model_type") == "vit":
        pre = folder / "preprocessor_config.json"
        pre_cfg = json.loads(pre.read_text()) if pre.is_file() else {}
        dim, heads = int(cfg.get("hidden_size", 768)), int(cfg.get("num_attention_heads", 12))
        kwargs = {
            "img_size": int(cfg.get("image_size", 224)),
            "patch_size": int(cfg.get("patch_size", 16)),
            "embed_dim": dim,
            "depth": int(cfg.get("num_hidden_layers", 12)),
            "num_heads": heads,
            "mlp_ratio": int(cfg.get("intermediate_size", 4 * dim)) / dim,
            "qkv_bias": bool(cfg.get("qkv_bias", True)),
        }
        if cfg.get("layer_norm_eps", 1e-12) != 1e-6:
            logger.debug("transformers ViT layer_norm_eps %s is built with timm's 1e-6", cfg.get("layer_norm_eps"))
        return {
            "arch": "vit_base_patch16_224",
            "kwargs": kwargs,
            "mean": list(pre_cfg.get("image_mean", (0.485, 0.456, 0.406))),
            "std": list(pre_cfg.get("image_std", (0.229, 0.224, 0.225))),
        }
    raise ValueError(
        f"{path} describes neither a timm model ('architecture') nor a transformers ViT (model_type 'vit'; got "
        f"{cfg.get('model_type')!r}). Export the encoder with timm's save_for_hf, or pass encoder=<timm name> "
        "with encoder_weights=<weights file>."
    )


_RESNET_DEPTHS = {(2, 2, 2, 2, False): 18, (3, 4, 6, 3, False): 34, (3, 4, 6, 3, True): 50, (3, 4, 23, 3, True): 101}


def infer_arch(state: dict[str, torch.Tensor]) -> str | None:
    """The timm ResNet a bare state dict holds (``"resnet18"``...), or None when it cannot be told.

    ViTs are not inferred: the number of heads is not in the tensors' shapes.
    """
    blocks = []
    keys = list(state)
    for layer in range(1, 5):
        ids = {int(m.group(1)) for k in keys if (m := re.search(rf"(?:^|\.)layer{layer}\.(\d+)\.conv1\.weight$", k))}
        blocks.append(len(ids))
    bottleneck = any(re.search(r"layer1\.0\.conv3\.weight$", k) for k in keys)
    depth = _RESNET_DEPTHS.get((*blocks, bottleneck))
    return f"resnet{depth}" if depth else None
