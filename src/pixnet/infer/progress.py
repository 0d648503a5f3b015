"""Compute dask graphs with a tqdm progress bar (dask's own bar prints to stdout), or on a cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import dask
from dask.callbacks import Callback
from tqdm.auto import tqdm

from .._memory import trimmed

_LABEL: ContextVar[str | None] = ContextVar("pixnet_progress_label", default=None)


@contextmanager
def labelled(label: str) -> Iterator[None]:
    """Progress bars opened inside name ``label`` first (``"square_008um: predicting"``): which call they belong to."""
    token = _LABEL.set(label)
    try:
        yield
    finally:
        _LABEL.reset(token)


def describe(desc: str) -> str:
    """``desc`` under the current :func:`labelled` label."""
    label = _LABEL.get()
    return desc if label is None else f"{label}: {desc}"


class _Tqdm(Callback):
    def __init__(self, desc: str):
        super().__init__()
        self.desc = desc
        self.bar = None

    def _start_state(self, dsk, state):
        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        self.bar = tqdm(total=total, desc=describe(self.desc), leave=False)

    def _posttask(self, key, result, dsk, state, worker_id):
        self.bar.update(1)

    def _finish(self, dsk, state, errored):
        if self.bar is not None:
            self.bar.close()


def compute(obj, desc: str, progress: bool):
    """``dask.compute(obj)``: on a dask.distributed cluster when a client is active, else on threads.

    A progress bar is shown with ``progress`` on threads (a cluster has its own dashboard).
    """
    if not hasattr(obj, "__dask_graph__"):
        return obj
    if _client() is not None:
        return dask.compute(obj)[0]  # the active client is dask's default scheduler
    # the threads' chunk buffers, freed, stay with the allocator until trimmed
    with dask.config.set(scheduler="threads"), trimmed():
        if progress:
            with _Tqdm(desc):
                return dask.compute(obj)[0]
        return dask.compute(obj)[0]


def _client():
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:  # no client
        return None
