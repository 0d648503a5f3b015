"""Windows of a zarr v3 array on local disk, its chunks read and decoded in the calling thread.

zarr-python 3 reads each chunk through its event loop and a thread hand-off per codec: for an
image window of 81 chunks of 256 x 256 x 3 that is 90-120 ms of CPU, against 27 ms to read and
decode the same files here (``benchmarks/RESULTS.md``, 2026-12-07). Predict reads one such
window per tile, beside the network, on the same cores. Only the plain layouts are read here
(a regular chunk grid, the default chunk keys, the ``bytes`` codec and at most one of zstd,
blosc and gzip); :func:`local_windows` gives None for any other array, which zarr then reads.
The chunks of the last window read are kept for the next one: predict's tiles overlap their
neighbours' windows by their context, a fifth of a window's chunks at 256 px. An array written
while it is being read this way may so give a window of its former values.
"""

from __future__ import annotations

from pathlib import Path

import numcodecs
import numpy as np

# zarr v3's bytes-to-bytes codecs read here, by the numcodecs codec that decodes their frames (zarr's own use these)
_DECODERS = {"zstd": numcodecs.Zstd, "blosc": numcodecs.Blosc, "gzip": numcodecs.GZip}


class LocalWindows:
    """Reads ``array[c0:c1, y0:y1, x0:x1]``-style windows of a local zarr v3 array, chunk by chunk."""

    def __init__(self, array, root: Path, decoder, dtype: np.dtype):
        self.shape, self.dtype = tuple(array.shape), dtype
        self.chunks = tuple(array.metadata.chunk_grid.chunk_shape)
        self._fill = np.asarray(array.metadata.fill_value, array.dtype)
        self._key, self._root, self._decoder = array.metadata.encode_chunk_key, root, decoder
        self._recent: dict = {}  # chunk coordinates -> decoded chunk, of the last window read

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_recent": {}}  # a worker process decodes its own

    def __getitem__(self, key) -> np.ndarray:
        """``array[key]`` for integers, slices with steps of 1 and one ``...``, as numpy and zarr read them."""
        key = key if isinstance(key, tuple) else (key,)
        if key.count(Ellipsis) > 1 or len(key) - (Ellipsis in key) > len(self.shape):
            raise IndexError(f"too many indices for an array of {len(self.shape)} dimensions: {key}")
        if Ellipsis in key:
            at = key.index(Ellipsis)
            key = key[:at] + (slice(None),) * (len(self.shape) - len(key) + 1) + key[at + 1 :]
        key = key + (slice(None),) * (len(self.shape) - len(key))
        window, drop = [], []
        for axis, (k, n) in enumerate(zip(key, self.shape)):
            if isinstance(k, (int, np.integer)):
                if not -n <= k < n:
                    raise IndexError(f"index {k} is out of bounds for axis {axis} with size {n}")
                k, drop = slice(k % n, k % n + 1), [*drop, axis]
            if not isinstance(k, slice) or k.step not in (None, 1):
                raise IndexError(f"LocalWindows reads integers and slices with steps of 1, not {key}.")
            start, stop, _ = k.indices(n)
            window.append(slice(start, max(start, stop)))
        out = self.read(tuple(window))
        return out.reshape([m for axis, m in enumerate(out.shape) if axis not in drop]) if drop else out

    def read(self, window: tuple[slice, ...], out: np.ndarray | None = None) -> np.ndarray:
        """The window (one slice a dimension, steps of 1, within the array) as an array; into ``out`` when given.

        ``out`` may be any writable view of the window's shape (a transposed one included).
        """
        starts = [s.start for s in window]
        stops = [s.stop for s in window]
        if out is None:
            out = np.empty([b - a for a, b in zip(starts, stops)], self.dtype.newbyteorder("="))
        recent, kept = self._recent, {}  # swapped whole: reads in several threads see one window's chunks or another's
        first = [a // c for a, c in zip(starts, self.chunks)]
        last = [(b - 1) // c for b, c in zip(stops, self.chunks)]
        for idx in np.ndindex(*[b - a + 1 for a, b in zip(first, last)]):
            coords = [f + i for f, i in zip(first, idx)]
            lo = [max(a, k * c) for a, k, c in zip(starts, coords, self.chunks)]
            hi = [min(b, (k + 1) * c) for b, k, c in zip(stops, coords, self.chunks)]
            src = tuple(slice(a - k * c, b - k * c) for a, b, k, c in zip(lo, hi, coords, self.chunks))
            dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, starts))
            key = tuple(coords)
            chunk = recent[key] if key in recent else self._chunk(key)
            kept[key] = chunk
            out[dst] = chunk[src]
        self._recent = kept
        return out

    def _chunk(self, coords: tuple[int, ...]) -> np.ndarray:
        try:
            raw = (self._root / self._key(coords)).read_bytes()
        except FileNotFoundError:  # never written: the fill value
            return np.broadcast_to(self._fill, self.chunks)
        if self._decoder is not None:
            raw = self._decoder.decode(raw)
        return np.frombuffer(raw, self.dtype).reshape(self.chunks)


def local_windows(array) -> LocalWindows | None:
    """A :class:`LocalWindows` for a zarr array in a local store, or None where its layout is not a plain one."""
    try:
        from zarr.storage import LocalStore

        meta = array.metadata
        if getattr(meta, "zarr_format", None) != 3 or not isinstance(array.store, LocalStore):
            return None
        d = meta.to_dict()
        codecs, grid = d["codecs"], d["chunk_grid"]
        if grid.get("name") != "regular" or d["chunk_key_encoding"].get("name") not in ("default", "v2"):
            return None
        if not codecs or codecs[0]["name"] != "bytes" or len(codecs) > 2:
            return None
        if len(codecs) == 2 and codecs[1]["name"] not in _DECODERS:
            return None
        decoder = _DECODERS[codecs[1]["name"]]() if len(codecs) == 2 else None
        endian = (codecs[0].get("configuration") or {}).get("endian", "little")
        dtype = np.dtype(array.dtype).newbyteorder("<" if endian == "little" else ">")
        return LocalWindows(array, Path(array.store.root) / array.path, decoder, dtype)
    except (ImportError, AttributeError, KeyError, TypeError):  # another zarr's metadata: zarr reads it
        return None
