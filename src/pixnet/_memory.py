"""Hand memory that the C allocator keeps after ``free`` back to the operating system.

glibc's malloc keeps freed memory in per-thread arenas for reuse, and raises its mmap threshold
as large blocks are freed, so the network's activations and dask's chunk buffers, allocated
from several threads, stay resident long after they are freed: predict's own peak memory
was about a third higher than with them handed back. ``malloc_trim(0)`` returns free pages of
every arena. Elsewhere than glibc (macOS, musl) this does nothing.

The opposite holds for blocks freed and allocated again at once, as a network's activations
tile after tile: glibc maps each block over its mmap threshold afresh and unmaps it on ``free``,
so every tile faults its activations in again, a page at a time. :func:`resident` keeps such
blocks in the heap while prediction runs: the network's forward on a 1152 px tile took 1.2
against 1.6-1.7 s on 2 cores, kernel time 0.0 against 0.7 s (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import threading
import time


@functools.cache
def _libc(function: str):
    """The C library's ``function`` (ctypes), or None where it has none (not glibc)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), function) if name else None
    except (OSError, AttributeError):
        return None


def _malloc_trim():
    return _libc("malloc_trim")


def _mallopt():
    return _libc("mallopt")


_LOCK = threading.Lock()
_NEXT = [0.0]  # monotonic time before which trim() does nothing
BUSY_FRACTION = 0.05  # of the time spent trimming, at most
# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
RESIDENT = 2**30  # bytes: blocks below this come from the heap and stay there when freed, while resident()
# after resident(): where glibc's dynamic thresholds settle once large blocks have been freed (32 MB, twice that);
# setting a threshold ends the dynamic adjustment for the process, so these are what it is left with
SETTLED_MMAP, SETTLED_TRIM, MMAP_MAX = 32 * 2**20, 64 * 2**20, 65536
_RESIDENT = threading.Lock()
_DEPTH = [0]  # resident() blocks running


def trim(*, force: bool = False) -> None:
    """Return the free pages of the allocator's arenas to the system (glibc only).

    A trim walks every free block (tens of ms on a fragmented heap of a few GB), so calls are
    spaced to spend at most ``BUSY_FRACTION`` of the time in it, and skipped inside
    :func:`resident`; ``force`` trims now.
    """
    fn = _malloc_trim()
    if fn is None or (not force and (_DEPTH[0] or time.monotonic() < _NEXT[0])) or not _LOCK.acquire(blocking=False):
        return
    try:
        t0 = time.monotonic()
        fn(0)
        _NEXT[0] = time.monotonic() + (time.monotonic() - t0) / BUSY_FRACTION
    finally:
        _LOCK.release()


@contextlib.contextmanager
def trimmed():
    """Trim when the block ends, however it ends."""
    try:
        yield
    finally:
        trim(force=True)


@contextlib.contextmanager
def resident():
    """Freed blocks up to :data:`RESIDENT` bytes kept in the heap for reuse while the block runs; a trim at its end.

    glibc's mallopt: large blocks come from the heap, not a fresh mapping each (``M_MMAP_THRESHOLD``;
    where glibc refuses so high a threshold, no mappings at all: ``M_MMAP_MAX``), and the heap is
    not cut back on ``free`` (``M_TRIM_THRESHOLD``); :func:`trim` waits for the end. Blocks may
    nest and run in several threads: the outermost end sets the thresholds to where glibc's own
    settle (:data:`SETTLED_MMAP`, :data:`SETTLED_TRIM`). Elsewhere than glibc this only trims.
    """
    fn = _mallopt()
    with _RESIDENT:
        if fn is not None and _DEPTH[0] == 0:
            fn(M_TRIM_THRESHOLD, RESIDENT)
            if not fn(M_MMAP_THRESHOLD, RESIDENT):
                fn(M_MMAP_MAX, 0)
        _DEPTH[0] += 1
    try:
        yield
    finally:
        with _RESIDENT:
            _DEPTH[0] -= 1
            if fn is not None and _DEPTH[0] == 0:
                fn(M_MMAP_MAX, MMAP_MAX)
                fn(M_MMAP_THRESHOLD, SETTLED_MMAP)
                fn(M_TRIM_THRESHOLD, SETTLED_TRIM)
        trim(force=True)
