"""Hand memory that the C allocator keeps after ``free`` back to the operating system.

glibc's malloc keeps freed memory in per-thread arenas for reuse, and raises its mmap threshold
as large blocks are freed, so the network's activations and dask's chunk buffers, allocated
from several threads, stay resident long after they are freed: predict's own peak memory
was about a third higher than with them handed back. ``malloc_trim(0)`` returns free pages of
every arena. Elsewhere than glibc (macOS, musl) this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import threading
import time


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None


_LOCK = threading.Lock()
_NEXT = [0.0]  # monotonic time before which trim() does nothing
BUSY_FRACTION = 0.05  # of the time spent trimming, at most


def trim(*, force: bool = False) -> None:
    """Return the free pages of the allocator's arenas to the system (glibc only).

    A trim walks every free block (tens of ms on a fragmented heap of a few GB), so calls are
    spaced to spend at most ``BUSY_FRACTION`` of the time in it; ``force`` trims now.
    """
    fn = _malloc_trim()
    if fn is None or (not force and time.monotonic() < _NEXT[0]) or not _LOCK.acquire(blocking=False):
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
