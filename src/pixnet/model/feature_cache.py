"""A frozen encoder computes each tile's features once: a bounded cache in memory or on disk.

With ``freeze_encoder=True`` the encoder's output for a given input never changes, so an epoch
over tiles already seen costs the decoder only. :func:`freeze` attaches the cache to the frozen
part of an encoder (the CNN, or a ViT's trunk; a ViT's pyramid stays trainable) with forward
hooks: the pre-hook looks up each tile of the batch by a hash of its input pixels (so a tile
*and* its augmentation are one entry), passes on only the tiles not cached, and the forward
hook stores their features and returns the whole batch's. The module, its state dict and its
saved form are unchanged; :meth:`Frozen.remove` detaches the hooks.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)


class FeatureCache:
    """Least-recently-used store of per-tile feature lists, bounded in bytes.

    Parameters
    ----------
    max_bytes
        Bound on the stored features (memory, or the files in ``directory``). Least recently
        used entries are evicted past it.
    directory
        ``None``: keep features in memory. A folder: one file per tile there (written
        atomically), for caches larger than memory; it is not cleaned up.
    dtype
        Storage type (float16 halves memory; features are returned in the encoder's dtype).

    """

    def __init__(self, *, max_bytes: int, directory: str | Path | None = None, dtype: torch.dtype = torch.float16):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}.")
        self.max_bytes, self.dtype = int(max_bytes), dtype
        self.directory = Path(directory).expanduser() if directory is not None else None
        self._entries: OrderedDict[str, list[torch.Tensor | None] | int] = OrderedDict()  # key -> feats or file bytes
        self.bytes = self.hits = self.misses = 0
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> list[torch.Tensor | None] | None:
        """The features stored under ``key`` (and mark them recently used), or None."""
        if key not in self._entries:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        entry = self._entries[key]
        if self.directory is None:
            return entry
        return torch.load(self.directory / f"{key}.pt", map_location="cpu", weights_only=True)

    def put(self, key: str, feats: list[torch.Tensor | None]) -> None:
        """Store one tile's features (``None`` for levels not kept), evicting old entries past the bound."""
        stored = [None if f is None else f.detach().to("cpu", self.dtype).contiguous().clone() for f in feats]
        size = sum(f.numel() * f.element_size() for f in stored if f is not None)
        if size > self.max_bytes or key in self._entries:
            return
        while self._entries and self.bytes + size > self.max_bytes:
            old, entry = self._entries.popitem(last=False)
            self.bytes -= entry if isinstance(entry, int) else _nbytes(entry)
            if self.directory is not None:
                (self.directory / f"{old}.pt").unlink(missing_ok=True)
        if self.directory is None:
            self._entries[key] = stored
        else:
            path, tmp = self.directory / f"{key}.pt", self.directory / f".{key}.{os.getpid()}.tmp"
            torch.save(stored, tmp)
            os.replace(tmp, path)
            self._entries[key] = size
        self.bytes += size


def _nbytes(feats: list[torch.Tensor | None]) -> int:
    return sum(f.numel() * f.element_size() for f in feats if f is not None)


def tile_key(x: torch.Tensor) -> str:
    """Hash of one input tile's values (``(3, H, W)``): equal tiles under equal augmentation share it."""
    data = x.detach().to("cpu").contiguous()
    return hashlib.blake2b(data.numpy().tobytes(), digest_size=16).hexdigest() + f"-{'x'.join(map(str, data.shape))}"


class Frozen:
    """Hooks that keep ``module`` frozen (no gradients, eval mode) and serve its outputs from ``cache``.

    ``skip_levels`` leading outputs of the module (pyramid levels the decoder does not use) are
    not stored and come back as ``None``. ``calls`` counts the tiles the module actually computed.
    """

    def __init__(self, module: nn.Module, cache: FeatureCache | None = None, *, skip_levels: int = 0):
        self.module, self.cache, self.skip_levels = module, cache, skip_levels
        self.calls = 0
        module.requires_grad_(False)
        module.eval()
        self._pending: tuple[list[str], list, torch.Tensor] | None = None
        self._handles = [
            module.register_forward_pre_hook(self._before),
            module.register_forward_hook(self._after),
        ]

    def remove(self) -> None:
        """Detach the hooks (the module stays frozen)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def _before(self, module: nn.Module, args: tuple):
        if module.training:  # Lightning sets train() every epoch; a frozen encoder's BatchNorm must not move
            module.eval()
        x = args[0]
        if self.cache is None:
            self.calls += len(x)
            return None
        keys = [tile_key(t) for t in x]
        found = [self.cache.get(k) for k in keys]
        miss = torch.tensor([f is None for f in found], device=x.device)
        self._pending = (keys, found, miss)
        self.calls += int(miss.sum())
        return (x[miss], *args[1:])

    def _after(self, module: nn.Module, args: tuple, output):
        if self.cache is None or self._pending is None:
            return None
        keys, found, miss = self._pending
        self._pending = None
        out = list(output)
        j = 0
        for key, f in zip(keys, found):
            if f is None:
                self.cache.put(key, [None if i < self.skip_levels else o[j] for i, o in enumerate(out)])
                j += 1
        levels = []
        for i, o in enumerate(out):
            if i < self.skip_levels:
                levels.append(None)
                continue
            rows, j = [], 0
            for f in found:
                if f is None:
                    rows.append(o[j])
                    j += 1
                else:
                    rows.append(f[i].to(o.device, o.dtype))
            levels.append(torch.stack(rows))
        return levels


def freeze(encoder: nn.Module, cache: FeatureCache | None = None, *, skip_levels: int = 0) -> Frozen:
    """Freeze an encoder's pretrained part and cache its outputs (see the module docstring).

    A ViT's pyramid (:class:`pixnet.model.vit.ViTPyramid`) is not frozen: it maps the cached
    token grids to the decoder's strides and is trained. ``skip_levels`` applies to CNNs only.
    """
    from .encoder import frozen_part
    from .vit import ViTPyramid

    part = frozen_part(encoder)
    frozen = Frozen(part, cache, skip_levels=0 if isinstance(encoder, ViTPyramid) else skip_levels)
    logger.info("frozen encoder part %s; features %s", type(part).__name__, "cached" if cache else "not cached")
    return frozen
