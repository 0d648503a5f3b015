"""The map's pyramid made tile by tile (pixnet.infer.pyramid) against spatialdata's, made from the whole level 0."""

import numpy as np
import pytest
from spatialdata.models import Image2DModel

from pixnet.data import image_levels
from pixnet.infer.chunklinks import scratch_array
from pixnet.infer.mapimage import scratch_levels
from pixnet.infer.pyramid import DIMS, MapLevels, coarsen, level_chunks, level_shapes, scale_factors


def _spatialdata_levels(level0: np.ndarray, n: int) -> list[np.ndarray]:
    el = Image2DModel.parse(level0, dims=DIMS, scale_factors=[2] * n, chunks=(2, 24, 40))
    return [np.asarray(a.data) for a in image_levels(el)]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("stored", [False, True])
def test_levels_put_tile_by_tile_in_any_order_equal_spatialdatas(tmp_path, dtype, stored):
    """Tiles in random order, some without a map (they read 0), edge tiles cut short, chunks across tiles."""
    rng = np.random.default_rng(1)
    core, n = 16, 3
    shape = (5, 152, 200)  # neither side a multiple of the tile
    level0 = rng.random(shape, dtype=np.float32).astype(dtype)
    grid = [(i, j) for i in range(-(-shape[1] // core)) for j in range(-(-shape[2] // core))]
    empty = {grid[k] for k in rng.choice(len(grid), 12, replace=False)}
    for i, j in empty:
        level0[:, i * core : (i + 1) * core, j * core : (j + 1) * core] = 0
    shapes = level_shapes(shape, n)
    if stored:  # chunks that straddle tiles, and are cut by the level's edge
        levels = [
            scratch_array(tmp_path / f"{k}.zarr", s, level_chunks((2, 24, 40), s), dtype) for k, s in enumerate(shapes)
        ]
    else:
        levels = [np.full(s, np.nan, dtype) for s in shapes]
    pyramid = MapLevels(levels, core)
    for k in rng.permutation(len(grid)):
        i, j = grid[k]
        tile = None if (i, j) in empty else level0[:, i * core : (i + 1) * core, j * core : (j + 1) * core]
        pyramid.put(i * core, j * core, None if tile is None else tile.astype(np.float32))
    pyramid.close()
    want = _spatialdata_levels(level0, n)
    assert [a.shape for a in want] == shapes
    for got, ref in zip(levels, want):
        got = np.asarray(got[:])
        if not stored:  # a tile without a map leaves level 0 as it was (the caller's zeros)
            got = np.where(np.isnan(got), 0, got)
        assert got.dtype == ref.dtype
        # the mean of 2 x 2 pixels; the order of its sum follows the chunks' memory layout: the last bit may differ
        np.testing.assert_allclose(got, ref, rtol=2 * np.finfo(dtype).eps, atol=0)


def test_coarser_levels_wait_a_chunk_at_a_time(tmp_path):
    """Tiles in row order: what waits is a few chunks of the coarser levels, not a level."""
    core, shape = 16, (3, 256, 256)
    shapes = level_shapes(shape, 2)
    levels = [scratch_array(tmp_path / f"{k}.zarr", s, level_chunks((3, 16, 32), s)) for k, s in enumerate(shapes)]
    pyramid = MapLevels(levels, core)
    most = 0
    for i in range(shape[1] // core):
        for j in range(shape[2] // core):
            pyramid.put(i * core, j * core, np.ones((3, core, core), np.float32))
            most = max(most, sum(b.nbytes for b, _ in pyramid._waiting.values()))
    pyramid.close()
    assert not pyramid._waiting
    assert most <= 3 * 16 * 128 * 4 + 3 * 16 * 64 * 4  # a row of chunks of each coarser level
    for a in levels:
        assert np.all(np.asarray(a[:]) == 1)


def test_tiles_that_do_not_coarsen_into_whole_pixels_leave_the_pyramid_to_spatialdata(tmp_path):
    shape = (4, 2000, 2000)
    assert len(scale_factors(shape)) == 4
    assert len(scratch_levels(tmp_path / "a", shape, (4, 64, 256), np.float32, core=256)) == 5
    assert len(scratch_levels(tmp_path / "b", shape, (4, 60, 250), np.float32, core=250)) == 1
    assert len(scratch_levels(tmp_path / "c", (4, 2000, 2004), (4, 64, 256), np.float32, core=256)) == 1
    for side, core in [(2000, 250), (2004, 256)]:  # tiles, or the map's side (an odd pixel trimmed at the start)
        with pytest.raises(ValueError, match="whole pixels"):
            MapLevels([np.zeros(s) for s in level_shapes((4, 2000, side), 4)], core)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("nan", [False, True])
def test_a_tile_coarsens_to_the_bit_as_xarray_coarsens_it(dtype, nan):
    """The fast sums give xarray's values exactly: magnitudes far apart, NaN (ignored), odd sides (trimmed)."""
    import dask.array as da
    import xarray as xr

    rng = np.random.default_rng(3)
    for shape in [(17, 64, 96), (3, 33, 47)]:
        tile = (rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 1e3], shape)).astype(dtype)
        if nan:
            tile[rng.random(shape) < 0.05] = np.nan
        x = xr.DataArray(da.from_array(tile, chunks=(4, 16, 32)), dims=DIMS)
        want = x.coarsen({"y": 2, "x": 2}, boundary="trim", side="right").mean().astype(dtype).data.compute()
        got = coarsen(tile)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("stored", [False, True])
def test_the_networks_channels_last_tiles_give_the_levels_planar_tiles_give(tmp_path, dtype, stored):
    """Tiles handed over as the network makes them (crops of a channels-last map, one with NaN) give every level
    to the bit as (C, h, w) numpy tiles do; the kept buffers are overwritten tile after tile without harm."""
    import torch

    rng = np.random.default_rng(5)
    core, n = 16, 3
    shape = (7, 152, 200)  # edge tiles cut short
    level0 = (rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 1e3], shape)).astype(np.float32)
    level0[:, 20:22, 40:43] = np.nan  # a tile that coarsens through xarray (NaN ignored)
    shapes = level_shapes(shape, n)

    def pyramid(name):
        if stored:
            return MapLevels([scratch_array(tmp_path / f"{name}{k}.zarr", s, level_chunks((3, 24, 40), s), dtype)
                              for k, s in enumerate(shapes)], core)  # fmt: skip
        return MapLevels([np.zeros(s, dtype) for s in shapes], core)

    planar, network = pyramid("p"), pyramid("n")
    for i in range(-(-shape[1] // core)):
        for j in range(-(-shape[2] // core)):
            tile = level0[:, i * core : (i + 1) * core, j * core : (j + 1) * core]
            c, th, tw = tile.shape
            # the network's output: (1, C, th + 2m, tw + 2m) channels-last, its core cropped (rows apart)
            out = torch.full((1, th + 6, tw + 6, c), -1.0).permute(0, 3, 1, 2)[0]
            out[:, 3 : 3 + th, 3 : 3 + tw] = torch.from_numpy(tile)
            crop = out[:, 3 : 3 + th, 3 : 3 + tw]
            assert not crop.is_contiguous() and crop.permute(1, 2, 0).stride(2) == 1
            planar.put(i * core, j * core, tile.copy())
            network.put(i * core, j * core, crop)
    planar.close()
    network.close()
    for want, got in zip(planar.levels, network.levels):
        np.testing.assert_array_equal(np.asarray(got[:]), np.asarray(want[:]))
    # float32 took the compiled path (every level made planar into a kept buffer); float16 numpy's own
    assert set(getattr(network._local, "buffers", {})) == (set(range(n + 1)) if dtype == np.float32 else set())
