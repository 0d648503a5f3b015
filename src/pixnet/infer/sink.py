"""Where a streaming pass puts each tile's results, on a writer thread behind a bounded queue.

Bins' sums arrive tile by tile in any row order; :class:`Sink` gathers them into blocks of table
rows and, as soon as a block is whole, computes its ``X`` and layers (a function of the sums,
run on the network's device) and writes them: into arrays in memory, or into zarr arrays in
the scratch folder in the table's chunks, each chunk written once. A tile's core map is written
into the map's levels the same way. The queue holds ``QUEUE`` items: the network waits for the
writer only when the writer falls behind. The blocks that tiles have started but not finished
(a row of tiles' bins, for bins in row order) wait on disk for a stored table
(:mod:`pixnet.infer.spill`), in memory otherwise. The last tile of a row of tiles finishes all
its blocks at once: the writer takes the next tiles' sums before writing them, up to
``BACKLOG`` bytes of whole blocks, so that the network does not wait for the burst.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .buffers import Pool
from .chunklinks import ChunkWriter, scratch_array
from .spill import PendingBlocks, can_spill

QUEUE = 2  # tiles' results waiting for the writer, at most (each up to C x tile of float32: ~66 MB at 250 genes;
# a map and its sums make two: one tile ahead is enough, as the writer keeps pace but at the ends of tile rows)
BACKLOG = 2**29  # bytes of whole blocks that may wait to be written while tiles' results are queued (on disk if stored)


class Sink:
    """Rows of a table (and optionally a map) written from tiles' results by one writer thread.

    Parameters
    ----------
    n
        Rows of the table.
    widths
        Name -> columns of every array ``make`` returns (0 for a 1-d array).
    make
        Sums of a block of rows ``(r, C)`` (a float32 tensor on ``device``) -> ``{name: (r, width) tensor}``;
        called by the writer thread alone, each result written before the next call (it may reuse its buffers).
    rows
        Rows per block (and per zarr chunk when stored).
    store
        A folder to write the arrays into as zarr (``{name}.zarr``, chunks ``(rows, cols)``); None: in memory.
    map_levels
        The map's levels to fill tile by tile (:class:`pixnet.infer.pyramid.MapLevels`), or None.

    """

    def __init__(self, n: int, widths: dict[str, int], make: Callable, *, rows: int, cols: int, device: torch.device,
                 store: Path | None = None, map_levels=None):  # fmt: skip
        self.n, self.make, self.rows, self.device = n, make, rows, device
        self.arrays = {k: _array(store, k, (n, w) if w else (n,), (rows, cols) if w else (rows,))
                       for k, w in widths.items()}  # fmt: skip
        self.map = map_levels
        self._chunked = ChunkWriter() if store is not None else None
        self._blocks: dict[int, list] = {}  # block -> [sums (r, C) or None when pending on disk, rows filled]
        # a stored table's blocks in progress wait on disk, not in memory (pixnet.infer.spill)
        self._spill = store if store is not None and can_spill() else None
        self._pending: PendingBlocks | None = None
        self._pool = Pool(np.empty)  # blocks' buffers (rows x C), given back once written
        self._ready: collections.deque = collections.deque()  # whole blocks to write: (k, r0, r1, sums or None)
        self._ready_bytes = 0
        self._queue: queue.Queue = queue.Queue(QUEUE)
        self._error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="pixnet-writer", daemon=True)
        self._thread.start()

    def put_rows(self, idx: np.ndarray, sums: torch.Tensor) -> None:
        """The sums ``(len(idx), C)`` of rows ``idx`` (ascending)."""
        self._put(("rows", idx, sums.detach().to("cpu", torch.float32).numpy()))

    def put_map(self, y: int, x: int, core: torch.Tensor | None) -> None:
        """A tile's core map ``(C, h, w)`` at map pixel ``(y, x)``; None for a tile without a map (it reads 0)."""
        if self.map is not None:
            self._put(("map", y, x, None if core is None else core.detach().cpu()))

    def close(self) -> dict:
        """Wait for the writes; the arrays (numpy, or zarr arrays when stored) and the map's levels."""
        self._put(None)
        self._thread.join()
        self._close_pending()
        self._raise()
        if self.map is not None:
            self.map.close()
        if self._blocks:
            raise RuntimeError(f"{len(self._blocks)} blocks of rows were not filled: a tile's bins went missing.")
        return {**self.arrays, "map": self.map}

    def abort(self) -> None:
        """Stop the writer without waiting for what is queued (after an error in the pass)."""
        self._stop = True
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._queue.put(None)
        self._thread.join()
        self._close_pending()

    def _close_pending(self) -> None:
        if self._pending is not None:
            self._pending.close()
            self._pending = None

    def _put(self, item) -> None:
        self._raise()
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise RuntimeError("the prediction's writer failed") from self._error

    def _run(self) -> None:
        try:
            while True:
                # Whole blocks wait while tiles are queued: a row of tiles finishes all its blocks at once,
                # and the network should not stop for them. Past BACKLOG bytes they go first (memory).
                if self._ready and (self._ready_bytes >= BACKLOG or self._queue.empty()):
                    self._write(*self._ready.popleft())
                    continue
                item = self._queue.get()
                if item is None:
                    break
                if self._stop:
                    continue
                if item[0] == "rows":
                    self._rows(item[1], item[2])
                else:  # the network's map as it is (channels-last): the pyramid coarsens it in that layout
                    self.map.put(*item[1:])
            while self._ready and not self._stop:
                self._write(*self._ready.popleft())
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            self._error = e
            while self._queue.get() is not None:  # let the producer finish
                pass
        finally:
            if self._chunked is not None:
                self._chunked.close()

    def _rows(self, idx: np.ndarray, sums: np.ndarray) -> None:
        """Copy a tile's sums into their blocks; a block whole is ready to be written."""
        if self._spill is not None and self._pending is None:
            self._pending = PendingBlocks(self._spill / "pending.f32", self.rows, sums.shape[1])
        block = idx // self.rows
        cuts = np.r_[0, np.flatnonzero(np.diff(block)) + 1, len(idx)]
        for a, b in zip(cuts[:-1], cuts[1:]):  # idx ascending: each block's rows are one slice of the tile's
            k = int(block[a])
            r0, r1 = k * self.rows, min(self.n, (k + 1) * self.rows)
            entry = self._blocks.get(k)
            if entry is None:
                # not zeroed: every row of a block is filled once (each bin is in one tile's rows)
                entry = self._blocks[k] = [None if self._pending else self._buffer(r1 - r0, sums.shape[1]), 0]
            if entry[0] is None:
                self._pending.write(k, idx[a:b] - r0, sums[a:b])
            else:
                entry[0][idx[a:b] - r0] = sums[a:b]
            entry[1] += b - a
            if entry[1] == r1 - r0:  # whole: written when its turn comes (read back from disk then)
                del self._blocks[k]
                self._ready.append((k, r0, r1, entry[0]))
                self._ready_bytes += (r1 - r0) * sums.shape[1] * 4

    def _write(self, k: int, r0: int, r1: int, sums: np.ndarray | None) -> None:
        """X and the layers of the whole block ``k`` (its sums, or None: on disk), written; its buffer kept."""
        if sums is None:
            sums = self._pending.read(k, self._buffer(r1 - r0, self._pending.row_bytes // 4))
        self._ready_bytes -= sums.nbytes
        out = self.make(torch.from_numpy(sums).to(self.device))
        for name, v in out.items():
            if self._chunked is not None and v.ndim == 2:
                self._chunked.write(self.arrays[name], (r0, 0), v.cpu())
            else:
                self.arrays[name][r0:r1] = v.cpu().numpy()
        del out
        self._pool.give(sums if sums.base is None else sums.base)  # written (zarr's writes are synchronous)

    def _buffer(self, r: int, c: int) -> np.ndarray:
        """A block's ``r`` rows of ``c`` sums: a written block's buffer when there is one (fresh pages fault)."""
        return self._pool.take((self.rows, c), np.dtype(np.float32))[:r]


def _array(store: Path | None, name: str, shape, chunks, dtype=np.float32):
    if store is None:
        return np.zeros(shape, dtype)
    return scratch_array(store / f"{name}.zarr", shape, chunks, dtype)
