"""Blocks of table rows in progress, kept in a scratch file rather than in memory.

The one pass finishes a block of table rows only when the last tile holding one of its bins is
done: for bins in row order, every block of a row of tiles (for a whole slide at 2 um, ~830k
bins x 251 channels x 4 bytes, ~0.8 GB). :class:`PendingBlocks` keeps those partial blocks in a
file beside the store: each tile's rows are written where they belong (``os.pwrite``: the pages
go to the page cache, not to the process's memory), and a whole block is read back at once. A
block takes a slot of the file when its first rows arrive and gives it back once read, so the
file holds the blocks in progress, not the table.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def can_spill() -> bool:
    """Whether this platform has positional file writes and reads (POSIX: Linux, macOS)."""
    return hasattr(os, "pwrite") and hasattr(os, "preadv")


class PendingBlocks:
    """Partial blocks of ``rows`` float32 rows of ``width`` values, in the file ``path`` (created, removed on close)."""

    def __init__(self, path: Path, rows: int, width: int):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.row_bytes, self.block_bytes = width * 4, rows * width * 4
        self._slots: dict[int, int] = {}  # block -> slot of the file
        self._free: list[int] = []
        self._n_slots = 0

    def write(self, block: int, rows: np.ndarray, values: np.ndarray) -> None:
        """Rows ``rows`` (ascending, within the block) of ``block`` take ``values`` ``(len(rows), width)``."""
        slot = self._slots.get(block)
        if slot is None:
            slot = self._slots[block] = self._free.pop() if self._free else self._new_slot()
        values = np.ascontiguousarray(values, np.float32)
        base = slot * self.block_bytes
        cuts = np.flatnonzero(np.diff(rows) != 1) + 1  # runs of consecutive rows: one write each
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(rows)]):
            _write_all(self._fd, memoryview(values[a:b]).cast("B"), base + int(rows[a]) * self.row_bytes)

    def read(self, block: int, out: np.ndarray) -> np.ndarray:
        """The block's first ``len(out)`` rows into ``out`` (C-contiguous float32); its slot is freed."""
        slot = self._slots.pop(block)
        view = memoryview(out).cast("B")
        done = 0
        while done < len(view):
            n = os.preadv(self._fd, [view[done:]], slot * self.block_bytes + done)
            if n <= 0:
                raise OSError(f"could not read block {block} back from {self.path}")
            done += n
        self._free.append(slot)
        return out

    def close(self) -> None:
        os.close(self._fd)
        self.path.unlink(missing_ok=True)

    def _new_slot(self) -> int:
        self._n_slots += 1
        return self._n_slots - 1


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n
