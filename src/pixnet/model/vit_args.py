"""ViT arguments a timm ``config.json`` cannot hold: from the model cards, and read off the weights.

UNI2-h and Virchow2 are timm ViTs whose model cards build them with Python objects passed to
``timm.create_model``: a packed SwiGLU MLP (``mlp_layer=timm.layers.SwiGLUPacked``) with SiLU
(``act_layer=torch.nn.SiLU``), and register tokens. A ``config.json`` stores JSON, so those
arguments are missing from it and timm alone builds a GELU MLP of the wrong shape. Here they are
kept JSON-ready (layer *names*, ``"swiglu_packed"``, ``"silu"``), saved with a trained model, and
turned into timm's classes only when the model is built (:func:`timm_kwargs`).

Sources, checked when this was written:

- UNI2-h: https://huggingface.co/MahmoodLab/UNI2-h, "Model usage": ``timm.create_model(
  "hf-hub:MahmoodLab/UNI2-h", pretrained=True, img_size=224, patch_size=14, depth=24, num_heads=24,
  init_values=1e-5, embed_dim=1536, mlp_ratio=2.66667*2, num_classes=0, no_embed_class=True,
  mlp_layer=timm.layers.SwiGLUPacked, act_layer=torch.nn.SiLU, reg_tokens=8, dynamic_img_size=True)``;
  ViT-H/14, 681 M parameters; its ``config.json`` names ``vit_giant_patch14_224``.
- Virchow2: https://huggingface.co/paige-ai/Virchow2, "Model usage": ``timm.create_model(
  "hf-hub:paige-ai/Virchow2", pretrained=True, mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU)``;
  the rest is in its ``config.json`` (``vit_huge_patch14_224``, ``img_size=224``, ``init_values=1e-5``,
  ``reg_tokens=4``, ``mlp_ratio=5.3375``, ``global_pool=""``, ``dynamic_img_size=True``); the output is
  the class token, 4 register tokens, then 256 patch tokens (the card takes ``output[:, 5:]``).
  ViT-H/14, 632 M parameters. Virchow (v1) is built the same way, without registers.
- timm: ``SwiGLUPacked = partial(GluMlp, act_layer=nn.SiLU, gate_last=False)`` (``timm/layers/mlp.py``):
  ``fc1`` maps to ``hidden`` features, split into gate and value, ``fc2`` maps ``hidden / 2`` back.

Register tokens need no handling of their own in the pyramid: timm's ``forward_intermediates``
drops all ``num_prefix_tokens`` (class + registers) before reshaping tokens to a grid.

For a local folder, whatever the tensors tell (width, depth, patch, registers, the packed MLP and
its ratio, layer scale, a class-free position embedding) is read off the weights, so a folder
whose ``config.json`` lacks them still builds the right model. The number of heads is not in the
tensors: it comes from the ``config.json``, or from the card of a known model the weights match.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

_SWIGLU = {"mlp_layer": "swiglu_packed", "act_layer": "silu"}

#: Model-card arguments, JSON-ready; ``signature``: what the weights of that model look like.
CARDS: dict[str, dict] = {
    "MahmoodLab/UNI2-h": {
        "arch": "vit_giant_patch14_224",
        "kwargs": {"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5,
                   "embed_dim": 1536, "mlp_ratio": 2.66667 * 2, "no_embed_class": True, "reg_tokens": 8,
                   "dynamic_img_size": True, **_SWIGLU},  # fmt: skip
        "signature": {"embed_dim": 1536, "depth": 24, "patch_size": 14, "reg_tokens": 8},
    },
    "paige-ai/Virchow2": {
        "arch": "vit_huge_patch14_224",
        "kwargs": {"img_size": 224, "init_values": 1e-5, "reg_tokens": 4, "mlp_ratio": 5.3375, "global_pool": "",
                   "dynamic_img_size": True, **_SWIGLU},  # fmt: skip
        "signature": {"embed_dim": 1280, "depth": 32, "patch_size": 14, "reg_tokens": 4},
    },
    "paige-ai/Virchow": {
        "arch": "vit_huge_patch14_224",
        "kwargs": {"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, "global_pool": "",
                   "dynamic_img_size": True, **_SWIGLU},  # fmt: skip
        "signature": {"embed_dim": 1280, "depth": 32, "patch_size": 14, "reg_tokens": 0},
    },
}


def _mlp_layers() -> dict:
    from timm.layers import GluMlp, Mlp, SwiGLU, SwiGLUPacked

    return {"swiglu_packed": SwiGLUPacked, "swiglu": SwiGLU, "glu": GluMlp, "mlp": Mlp}


def timm_kwargs(kwargs: dict) -> dict:
    """JSON-ready ``kwargs`` -> what ``timm.create_model`` takes (``mlp_layer`` as a class).

    ``act_layer`` stays a name: timm's ViT resolves it with ``get_act_layer``.

    Raises
    ------
    ValueError
        An ``mlp_layer`` name that is not one of ``swiglu_packed``, ``swiglu``, ``glu``, ``mlp``.

    """
    out = dict(kwargs)
    if isinstance(out.get("mlp_layer"), str):
        layers = _mlp_layers()
        if out["mlp_layer"] not in layers:
            raise ValueError(
                f"mlp_layer={out['mlp_layer']!r} is not one of {sorted(layers)}: fix the encoder's config."
            )
        out["mlp_layer"] = layers[out["mlp_layer"]]
    return out


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of a weights file, without reading the tensors (safetensors header, or mmap).

    Empty for a file that is not a checkpoint: loading it later raises the error that explains.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        try:
            raw = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception:  # noqa: BLE001  # not a zip checkpoint (no mmap) or not weights only: read it whole
            raw = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001
        return {}
    for key in ("state_dict", "model", "teacher"):
        raw = raw.get(key, raw) if isinstance(raw, dict) and isinstance(raw.get(key), dict) else raw
    if not isinstance(raw, dict):
        return {}
    return {k: tuple(v.shape) for k, v in raw.items() if isinstance(v, torch.Tensor)}


def infer_vit_kwargs(shapes: dict[str, tuple[int, ...]]) -> dict:
    """The ViT arguments the tensors of a timm ViT tell (empty if they are not a timm ViT's)."""
    by_suffix = {re.sub(r"^(?:module\.|model\.|backbone\.|trunk\.)+", "", k): s for k, s in shapes.items()}
    patch, fc1, fc2 = (by_suffix.get(k) for k in ("patch_embed.proj.weight", "blocks.0.mlp.fc1.weight",
                                                   "blocks.0.mlp.fc2.weight"))  # fmt: skip
    if patch is None or fc1 is None or fc2 is None or len(patch) != 4:
        return {}
    dim = int(patch[0])
    depth = 1 + max(int(m.group(1)) for k in by_suffix if (m := re.match(r"blocks\.(\d+)\.", k)))
    reg = int(by_suffix["reg_token"][1]) if "reg_token" in by_suffix else 0
    out: dict = {"embed_dim": dim, "depth": depth, "patch_size": int(patch[-1]), "reg_tokens": reg}
    out["mlp_ratio"] = (fc1[0] + 0.5) / dim  # int(dim * ratio) == fc1's width, whatever the rounding
    if fc1[0] == 2 * fc2[1]:  # gate and value packed in fc1 (SwiGLUPacked); a plain MLP has fc1 == fc2 in width
        out.update(_SWIGLU)
    out["init_values"] = 1e-5 if "blocks.0.ls1.gamma" in by_suffix else None
    out["class_token"] = "cls_token" in by_suffix
    if "pos_embed" in by_suffix:
        n, prefix = by_suffix["pos_embed"][1], int(out["class_token"]) + reg
        if prefix and math.isqrt(n - prefix) ** 2 == n - prefix:
            out["no_embed_class"], grid = False, math.isqrt(n - prefix)
        elif math.isqrt(n) ** 2 == n:
            out["no_embed_class"], grid = True, math.isqrt(n)
        else:
            grid = None
        if grid:
            out["img_size"] = grid * out["patch_size"]
    return out


def card_for(inferred: dict) -> str | None:
    """The known model (a key of :data:`CARDS`) whose weights look like ``inferred``, if one does."""
    for repo, card in CARDS.items():
        if inferred and all(inferred.get(k) == v for k, v in card["signature"].items()):
            return repo
    return None


def complete_spec(spec: dict, weights: str | Path | None, repo: str | None = None) -> dict:
    """``spec`` (from a ``config.json``) completed with the model card's and the weights' ViT arguments.

    Precedence: the card of ``repo`` (or of the known model the weights match) < the folder's
    ``config.json`` < what the tensors tell. A checkpoint that is not a timm ViT is left as it is.
    """
    inferred = infer_vit_kwargs(read_shapes(weights)) if weights is not None else {}
    repo = repo if repo in CARDS else card_for(inferred)
    if not inferred and repo is None:
        return spec
    card = CARDS.get(repo, {"arch": spec["arch"], "kwargs": {}})
    kwargs = {**card["kwargs"], **spec.get("kwargs", {}), **inferred}
    if repo is not None:
        logger.info("encoder: %s's model-card arguments (%s)", repo, ", ".join(sorted(card["kwargs"])))
    return {**spec, "arch": spec.get("arch") or card["arch"], "kwargs": kwargs}
