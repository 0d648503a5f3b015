"""Large arrays written once: a scratch zarr array's chunk files linked into the stored element.

The one pass writes a lazy table's ``X`` and layers, compressed, into zarr arrays in the scratch
folder beside the store (:class:`pixnet.infer.sink.Sink`), and the table holds dask arrays that
read them (:func:`from_scratch`). When anndata then writes the table, an array whose metadata
(shape, chunks, dtype, codecs, fill value) equals the scratch array's gets the scratch chunk
files hard-linked into its folder (:func:`link_chunks`) instead of read, decoded, encoded and
written again: same bytes, no copy. The scratch folder is on the store's disk; where links are
not possible (another file system, another store than a local folder) the array is copied as
before. The scratch files stay readable until the scratch folder is removed, so the dask arrays
that read them never read a chunk that moved away. The map's level 0 is linked the same way
(:func:`pixnet.infer.mapimage.publish_map`): the one pass writes it tile by tile into a scratch
array laid out as the image element's ``s0``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
from pathlib import Path

import dask.array as da
import torch

from .buffers import Pool

logger = logging.getLogger(__name__)
# lz4 over bit-shuffled values: a prediction's float32 arrays take 0.66-0.73 of their size at ~600 MB/s a core,
# where zarr's default (zstd, level 0) takes 0.82-0.86 at ~270 MB/s (benchmarks/RESULTS.md); a core zarr v3 codec
BLOSC = {"cname": "lz4", "clevel": 5, "shuffle": "bitshuffle"}
_SOURCES: dict[str, object] = {}  # dask array name -> the scratch zarr array it reads, as made by from_scratch


def scratch_array(path: Path, shape, chunks, dtype="float32", dims: tuple[str, ...] | None = None):
    """An empty zarr array at ``path`` whose chunks are each written once, whole.

    Zarr then need not compare each chunk with the fill value before writing it (~10% of a write).
    ``dims``: the array's dimension names (as an image level's, so its chunk files can be linked).
    """
    import zarr
    from zarr.codecs import BloscCodec

    codec = BloscCodec(**BLOSC)
    return zarr.create_array(str(path), shape=shape, chunks=chunks, dtype=dtype, fill_value=0, dimension_names=dims,
                             compressors=codec, overwrite=True, config={"write_empty_chunks": True})  # fmt: skip


class ChunkWriter:
    """Values written into zarr arrays a whole chunk per value, all of a value's chunks at once.

    Zarr encodes a value that is exactly one chunk as it is; a value over several chunks is
    copied, chunk by chunk, into buffers filled with the fill value first, on zarr's one event-loop
    thread (~2/3 of a write's time for a block of 32,768 rows x 250 genes, whose rows of 16 genes
    numpy copies value by value; a map tile, whose chunk rows are 1 kB runs, gained nothing:
    ``benchmarks/RESULTS.md``). Each chunk's part is copied into a chunk-shaped buffer,
    reused, by torch (~5x numpy's strided copy), and the parts written concurrently through zarr's
    asynchronous array (``Array.async_array``), on an event loop of the writer's own. Writes from
    several threads take turns. :meth:`close` closes the loop (idempotent; a later write opens a
    new one).
    """

    def __init__(self):
        self._pool = Pool(lambda shape, dtype: torch.empty(shape, dtype=dtype))  # chunk-shaped buffers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def write(self, array, start: tuple[int, ...], values: torch.Tensor) -> None:
        """``array[start[0] : start[0] + values.shape[0], ...] = values`` for a zarr array and CPU ``values``."""
        with self._lock:
            taken, parts = [], []
            for sel in _chunk_parts(array.chunks, start, values.shape):
                part = values[tuple(slice(s.start - o, s.stop - o) for s, o in zip(sel, start))]
                if not part.is_contiguous():
                    buf = self._pool.take(part.shape, part.dtype)
                    taken.append(buf)
                    part = buf.copy_(part)
                parts.append((sel, part.numpy()))
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(_all(array.async_array.setitem(sel, v) for sel, v in parts))
            finally:
                for buf in taken:
                    self._pool.give(buf)

    def close(self) -> None:
        with self._lock:
            if self._loop is not None:
                self._loop.run_until_complete(self._loop.shutdown_default_executor())
                self._loop.close()
                self._loop = None


def _chunk_parts(chunks: tuple[int, ...], start: tuple[int, ...], shape: tuple[int, ...]):
    """The selections ``(slice, ...)`` of a value ``shape`` at ``start`` cut where the array's chunks end."""
    cuts = []
    for c, s, n in zip(chunks, start, shape):
        edges = [s, *range((s // c + 1) * c, s + n, c), s + n]
        cuts.append([slice(a, b) for a, b in zip(edges[:-1], edges[1:])])
    return itertools.product(*cuts)


async def _all(coroutines) -> None:
    await asyncio.gather(*coroutines)


def layout_of(elem) -> dict:
    """Keyword arguments of zarr's ``create_array`` that encode chunks as ``elem``'s scratch array does (or none).

    An array created with them (and the same shape, chunks (:func:`chunks_of`), dtype) can take the scratch array's
    chunk files (:func:`link_chunks`).
    """
    source = _SOURCES.get(getattr(elem, "name", None))
    return {} if source is None else {"compressors": source.compressors}


def chunks_of(elem: da.Array) -> tuple[int, ...]:
    """The chunks of ``elem``'s scratch array, else its blocks' (those of an array under a chunk are smaller)."""
    source = _SOURCES.get(elem.name)
    return elem.chunksize if source is None else tuple(source.chunks)


def from_scratch(array) -> da.Array:
    """A dask array of the scratch zarr array ``array``, in its chunks; :func:`link_chunks` can link it."""
    x = da.from_zarr(array)
    _SOURCES[x.name] = array
    return x


def is_scratch(array) -> bool:
    """Whether ``array`` is a dask array made by :func:`from_scratch` (whose chunk files can be linked)."""
    return isinstance(array, da.Array) and array.name in _SOURCES


def forget(folder: Path) -> None:
    """Forget the scratch arrays under ``folder`` (it is being removed)."""
    for name, array in list(_SOURCES.items()):
        path = _folder(array)
        if path is None or Path(folder) in path.parents:
            _SOURCES.pop(name, None)


def link_chunks(elem: da.Array, dest) -> bool:
    """Link the chunk files of ``elem``'s scratch array into the empty zarr array ``dest``; whether it did.

    False (and ``dest`` left empty) when ``elem`` is not a scratch array as :func:`from_scratch`
    made it, when the two arrays' metadata differ or the files cannot be linked.
    """
    source = _SOURCES.get(elem.name)
    if source is None:
        return False
    src, dst = _folder(source), _folder(dest)
    if src is None or dst is None or not _same_layout(source, dest) or tuple(source.shape) != tuple(elem.shape):
        return False
    made = []
    try:
        for root, _, files in os.walk(src):
            rel = Path(root).relative_to(src)
            for f in files:
                if rel == Path(".") and f in ("zarr.json", ".zarray", ".zattrs"):
                    continue
                (dst / rel).mkdir(parents=True, exist_ok=True)
                os.link(Path(root) / f, dst / rel / f)
                made.append(dst / rel / f)
    except OSError as e:
        logger.info("could not link %s's chunks (%s): copying them", src, e)
        for p in made:
            p.unlink(missing_ok=True)
        return False
    return True


def _folder(array) -> Path | None:
    """The folder of a zarr array in a local store, or None."""
    from zarr.storage import LocalStore

    store = getattr(array, "store", None)
    if not isinstance(store, LocalStore):
        return None
    return Path(store.root) / array.path if array.path else Path(store.root)


def _same_layout(a, b) -> bool:
    """Whether two zarr arrays encode the same chunks into the same files (metadata equal but for attributes)."""
    ma, mb = a.metadata.to_dict(), b.metadata.to_dict()
    for m in (ma, mb):
        m.pop("attributes", None)
    return ma == mb
