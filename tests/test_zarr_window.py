"""pixnet.data.zarr_window: windows of local zarr v3 arrays read as zarr reads them, or left to zarr."""

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, TransposeCodec, ZstdCodec

from pixnet.data.zarr_window import LocalWindows, local_windows

WINDOWS = [  # inside one chunk, across chunks, the array's far edges (partial chunks), the whole array, empty
    (slice(0, 3), slice(5, 9), slice(7, 11)),
    (slice(1, 3), slice(10, 75), slice(3, 71)),
    (slice(0, 3), slice(60, 75), slice(40, 101)),
    (slice(0, 3), slice(0, 75), slice(0, 101)),
    (slice(0, 3), slice(20, 20), slice(0, 5)),
]


@pytest.mark.parametrize("compressor", [None, ZstdCodec(level=3), BloscCodec(cname="lz4"), GzipCodec()],
                         ids=["none", "zstd", "blosc", "gzip"])  # fmt: skip
@pytest.mark.parametrize("dtype", ["uint8", ">u2", "<f4"])
def test_windows_are_zarrs(tmp_path, compressor, dtype):
    """Every window's values equal zarr's, chunks never written (the fill value) and big-endian data included."""
    rng = np.random.default_rng(0)
    data = (rng.random((3, 75, 101)) * 250).astype(dtype)
    data[:, :16, 32:64] = 7  # a chunk of only the fill value: not written
    a = zarr.create_array(tmp_path / "a.zarr", shape=data.shape, chunks=(3, 16, 32), dtype=dtype, fill_value=7,
                          compressors=compressor, config={"write_empty_chunks": False})  # fmt: skip
    a[:] = data
    back = zarr.open_array(tmp_path / "a.zarr", mode="r")
    assert not (tmp_path / "a.zarr" / "c" / "0" / "0" / "1").exists()  # the fill-value chunk was not written
    local = local_windows(back)
    assert isinstance(local, LocalWindows)
    for w in WINDOWS:
        got = local[w]
        assert got.dtype == data.dtype.newbyteorder("=") and got.shape == back[w].shape
        np.testing.assert_array_equal(got, back[w])
    np.testing.assert_array_equal(local[:2, 3:90], back[:2, 3:90])  # open, missing and overlong slices, as numpy reads them
    np.testing.assert_array_equal(local[1:], back[1:])  # one slice, not a tuple
    out = np.zeros((65, 68, 2), data.dtype)
    local.read(WINDOWS[1], out=out.transpose(2, 0, 1))  # into a transposed view
    np.testing.assert_array_equal(out.transpose(2, 0, 1), back[WINDOWS[1]])


@pytest.mark.parametrize("layout", ["sharded", "transposed", "crc32c", "in memory", "zarr v2"])
def test_other_layouts_are_left_to_zarr(tmp_path, layout):
    kw = {}
    if layout == "sharded":
        kw = {"shards": (3, 32, 64)}
    elif layout == "transposed":
        kw = {"filters": [TransposeCodec(order=(0, 2, 1))]}
    elif layout == "crc32c":
        kw = {"compressors": [ZstdCodec(), Crc32cCodec()]}
    store = zarr.storage.MemoryStore() if layout == "in memory" else tmp_path / "a.zarr"
    if layout == "zarr v2":
        kw = {"zarr_format": 2}
    a = zarr.create_array(store, shape=(3, 64, 64), chunks=(3, 16, 32), dtype="uint8", **kw)
    a[:] = 1
    assert local_windows(a) is None


def test_steps_are_refused(tmp_path):
    a = zarr.create_array(tmp_path / "a.zarr", shape=(3, 8, 8), chunks=(3, 4, 4), dtype="uint8")
    with pytest.raises(IndexError, match="steps of 1"):
        local_windows(a)[:, ::2]


def test_the_last_windows_chunks_are_reused_and_not_pickled(tmp_path, monkeypatch):
    import pickle

    data = np.arange(3 * 64 * 128, dtype="uint16").reshape(3, 64, 128)
    a = zarr.create_array(tmp_path / "a.zarr", shape=data.shape, chunks=(3, 16, 32), dtype="uint16")
    a[:] = data
    local = local_windows(zarr.open_array(tmp_path / "a.zarr", mode="r"))
    decoded = []
    chunk = LocalWindows._chunk
    monkeypatch.setattr(LocalWindows, "_chunk", lambda self, key: decoded.append(key) or chunk(self, key))
    np.testing.assert_array_equal(local[:, 10:40, 20:70], data[:, 10:40, 20:70])  # chunk rows 0-2, columns 0-2
    assert len(decoded) == 9
    np.testing.assert_array_equal(local[:, 10:40, 60:110], data[:, 10:40, 60:110])  # its right neighbour: columns 1-3
    assert len(decoded) == 9 + 3  # only column 3's chunks are new
    assert pickle.loads(pickle.dumps(local))._recent == {}
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(local))[:, 5:9], data[:, 5:9])


def test_indices_are_numpys(tmp_path):
    """Integers (negative too), an ellipsis, reversed slices as numpy reads them; too many indices refused."""
    data = np.arange(3 * 20 * 30, dtype="int16").reshape(3, 20, 30)
    a = zarr.create_array(tmp_path / "a.zarr", shape=data.shape, chunks=(2, 8, 8), dtype="int16")
    a[:] = data
    local = local_windows(a)
    for key in [0, -1, (1, 5), (0, slice(0, 5), slice(3, 9)), (Ellipsis, slice(0, 5)), (slice(None), slice(5, 2)),
                (2, Ellipsis, -3), (Ellipsis,), (slice(None), -20)]:  # fmt: skip
        np.testing.assert_array_equal(local[key], data[key])
        assert local[key].shape == data[key].shape
    for key in [(0, 0, 0, 0), (3,), (0, 20), (Ellipsis, 0, Ellipsis)]:
        with pytest.raises(IndexError):
            local[key]
