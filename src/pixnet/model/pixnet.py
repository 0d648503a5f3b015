"""The user-facing model: a trained network with its configuration, history and save/load."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ._atomic import aside, publish_dir
from .config import ModelConfig
from .network import PixNetModule

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
HISTORY_FILE = "training.json"


class PixNet:
    """A PixNet model: image -> dense map of gene expression, aggregated into any spots.

    Made by :func:`pixnet.tl.fit`, used by :func:`pixnet.tl.predict`. Saved as a folder:
    ``model.safetensors`` (weights), ``config.json`` (:class:`~pixnet.model.ModelConfig`:
    genes, normalisation, working resolution, encoder, map semantics, format version) and
    ``training.json`` (training parameters and per-epoch history).

    Parameters
    ----------
    config
        What the model is.
    module
        The torch network; built from ``config`` when not given.
    training
        Training parameters and history (``{"params": {...}, "history": [...]}``).

    """

    def __init__(self, config: ModelConfig, module: PixNetModule | None = None, training: dict | None = None):
        self.config = config
        self.module = module if module is not None else build_module(config)
        self.training = training or {"params": {}, "history": []}

    @property
    def genes(self) -> list[str]:
        """Genes the model predicts, in channel order."""
        return list(self.config.genes)

    @property
    def history(self) -> list[dict]:
        """Per-epoch training metrics (loss, validation loss, validation PCC)."""
        return self.training.get("history", [])

    def __repr__(self) -> str:
        c, n = self.config, len(self.history)
        trained = f"trained {n} epoch{'' if n == 1 else 's'}" if n else "untrained"
        return (
            f"PixNet({len(c.genes)} genes, encoder={c.encoder!r}, semantics={c.semantics!r}, "
            f"input {c.um_per_px:g} um/px, map {c.map_um_per_px:g} um/px, {trained})"
        )

    @torch.no_grad()
    def predict_map(self, tiles: np.ndarray | torch.Tensor, *, device: str | torch.device | None = None) -> np.ndarray:
        """Maps of image tiles: ``(B, H, W, 3)`` uint8 -> ``(B, C, H / s, W / s)`` float32."""
        device = torch.device(device) if device else next(self.module.parameters()).device
        x = torch.as_tensor(np.asarray(tiles), device=device)
        x = x.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
        self.module.eval()
        return self.module.to(device)(x).float().cpu().numpy()

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save to a folder, atomically: a crash mid-save leaves any earlier model there intact."""
        path = Path(path).expanduser()
        if not isinstance(self.module, PixNetModule) and self.config.method == "dense":
            raise ValueError(
                f"This model's network is a {type(self.module).__name__} (an ensemble or test-time views), "
                "which load cannot rebuild: save each member model and combine them again after loading."
            )
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = aside(path)
        try:
            state = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_FILE))
            (tmp / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2))
            (tmp / HISTORY_FILE).write_text(json.dumps(self.training, indent=2, default=_jsonable))
            publish_dir(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu") -> PixNet:
        """Load a model saved by :meth:`save`."""
        path = Path(path).expanduser()
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path / name} not found: {path} is not a saved PixNet model folder.")
        try:
            raw = json.loads((path / CONFIG_FILE).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path / CONFIG_FILE} is not valid JSON (corrupt save?): {err}") from err
        config = ModelConfig.from_dict(raw)
        # The saved weights replace the initial ones, so none are fetched (the model loads offline).
        module = build_module(replace(config, encoder_weights=None))
        try:
            state = load_file(str(path / WEIGHTS_FILE), device=str(device))
            module.load_state_dict(state)
        except Exception as err:
            raise ValueError(
                f"{path / WEIGHTS_FILE} cannot be loaded (corrupt or from another architecture): {err}"
            ) from err
        training = {}
        if (path / HISTORY_FILE).is_file():
            training = json.loads((path / HISTORY_FILE).read_text())
        return cls(config, module.to(device), training)


@dataclass(frozen=True)
class Method:
    """A method behind :func:`pixnet.tl.fit` and :func:`pixnet.tl.predict` (``ModelConfig.method``).

    PixNet (``"dense"``) is the core: its network, its tiles and its dense map. A baseline
    (:mod:`pixnet.baselines`) registers its own network and, in place of PixNet's, how it trains
    and predicts; the verbs look them up here instead of branching on the method.

    Attributes
    ----------
    network
        ``network(config) -> torch.nn.Module``.
    train
        ``train(model, data, train_mask, val_mask, *, batch_size, seed, augment, num_workers, lr,
        weight_decay) -> (loader, val_loader, lightning_module)``; ``None``: PixNet's tiles.
    predict
        ``predict(model, image, spots_work, *, device) -> (n, genes)`` log-normalised
        expression; ``None``: PixNet's dense map.

    """

    network: Callable[[ModelConfig], torch.nn.Module]
    train: Callable | None = None
    predict: Callable | None = None


_METHODS: dict[str, Method] = {"dense": Method(PixNetModule)}


def register_method(name: str, method: Method) -> None:
    """Make ``ModelConfig(method=name)`` use ``method`` (see :mod:`pixnet.baselines`)."""
    _METHODS[name] = method


def method_of(name: str) -> Method:
    """The registered method ``name``, or a ValueError listing those known."""
    if name not in _METHODS:
        raise ValueError(f"Unknown method {name!r}; known: {sorted(_METHODS)} (import pixnet.baselines for 'spot').")
    return _METHODS[name]


def build_module(config: ModelConfig) -> torch.nn.Module:
    """The network a config describes (``config.method``: PixNet's, or a registered baseline's)."""
    return method_of(config.method).network(config)


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
