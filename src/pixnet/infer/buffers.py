"""Arrays a pass keeps from tile to tile and block to block instead of making them afresh.

Fresh pages cost a fault each, and under :func:`pixnet._memory.resident` a thread's freed arrays
stay in its heap: a writer thread that made its block-sized arrays afresh would pile them up there
(``benchmarks/RESULTS.md``, 2026-12-02). Two kinds: :func:`kept`, one buffer per name, made larger
when needed; :class:`Pool`, several arrays of a shape out at once, each given back once written.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def kept(buffers: dict, key, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
         device: torch.device | None = None) -> torch.Tensor:  # fmt: skip
    """A contiguous tensor of ``shape`` over ``buffers[key]``, a flat buffer kept in the dict between calls.

    ``device``: a tensor's (``cuda:0``, not ``cuda``); None for the CPU. The buffer is made on
    first use, and anew when it is too small or of another dtype or device; what a call returns
    is overwritten by the next call with the same key.
    """
    n, device = math.prod(shape), device or torch.device("cpu")
    buf = buffers.get(key)
    if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
        buf = buffers[key] = torch.empty(n, dtype=dtype, device=device)
    return buf[:n].view(shape)


class Pool:
    """Arrays by shape and dtype, several out at once: :meth:`take` one, :meth:`give` it back once written.

    :meth:`take` returns a given-back array of that shape and dtype (as arrays report it:
    ``array.dtype``), else a new one, ``new(shape, dtype)`` (``numpy.empty``, or torch's). Not
    thread-safe: one thread, or the caller's lock.
    """

    def __init__(self, new: Callable):
        self.new = new
        self._free: dict[tuple, list] = {}

    def take(self, shape: tuple[int, ...], dtype):
        free = self._free.get((tuple(shape), dtype))
        return free.pop() if free else self.new(tuple(shape), dtype)

    def give(self, array) -> None:
        self._free.setdefault((tuple(array.shape), array.dtype), []).append(array)
