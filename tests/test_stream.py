"""Predict in one pass (pixnet.infer.onepass) gives the values of the map-then-aggregate path."""

import importlib

import geopandas as gpd
import numpy as np
import pytest
import shapely
import spatialdata as sd
import torch
from spatialdata.models import ShapesModel
from spatialdata.transformations import Identity

import pixnet
from pixnet.model import ModelConfig, PixNet

_predict = importlib.import_module("pixnet.tl.predict")  # the module (pixnet.tl.predict is the function)


class _Conv(torch.nn.Module):
    """A small stand-in network whose map depends on the context around each pixel (so seams would show)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, config.n_outputs, 5, padding=2)

    def forward(self, x):
        x = torch.nn.functional.avg_pool2d(x, self.config.map_stride)
        return torch.nn.functional.softplus(self.conv(x)) * 0.05


@pytest.fixture
def model():
    cfg = ModelConfig(genes=tuple(f"g{i}" for i in range(6)), map_stride=4)
    return PixNet(cfg, _Conv(cfg))


def _shapes(sdata):
    xy = sdata.tables["square_016um"].obsm["spatial"]
    rng = np.random.default_rng(0)
    pick = xy[rng.choice(len(xy), 40, replace=False)]
    sdata.shapes["circles"] = ShapesModel.parse(pick, geometry=0, radius=np.full(len(pick), 27.5 / 0.2737),
                                                transformations={"global": Identity()})  # fmt: skip
    hexagons = [shapely.Polygon([(x + 30 * np.cos(a), y + 22 * np.sin(a)) for a in np.arange(6) * np.pi / 3 + 0.3])
                for x, y in xy[rng.choice(len(xy), 60, replace=False)]]  # fmt: skip
    sdata.shapes["cells"] = ShapesModel.parse(gpd.GeoDataFrame(geometry=hexagons), transformations={"global": Identity()})


def _reference(monkeypatch, sdata, **kw):
    """The map-then-aggregate path: the map computed and stored, then summed over the bins."""
    with monkeypatch.context() as m:
        m.setattr(_predict, "can_stream", lambda *a, **k: False)
        return pixnet.tl.predict(sdata, key_added="ref", overwrite=True, **kw)


def _backed(tmp_path, sdata):
    """The slide's image, 8 um bins and their table, written to a zarr store: its path."""
    path = tmp_path / "slide.zarr"
    sd.SpatialData(images={"_full_image": sdata.images["_full_image"]}, shapes={"_square_008um": sdata.shapes["_square_008um"]},
                   tables={"square_008um": sdata.tables["square_008um"]}, attrs=sdata.attrs).write(path)  # fmt: skip
    return path


def _same(a, b):
    np.testing.assert_array_equal(a.obs_names, b.obs_names)
    np.testing.assert_allclose(np.asarray(a.X), np.asarray(b.X), rtol=1e-5, atol=1e-5)
    for k in b.layers:
        np.testing.assert_allclose(np.asarray(a.layers[k]), np.asarray(b.layers[k]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.obs["predicted_total_counts"], b.obs["predicted_total_counts"], rtol=1e-5)


@pytest.mark.parametrize(("tile_px", "context_px"), [(128, 32), (256, 64), (160, 0)])
@pytest.mark.parametrize("target", [{"bin_size": 8}, {"bin_size": 2}, {"shapes": "circles"}, {"shapes": "cells"}])
def test_one_pass_equals_the_map_then_aggregate_path(monkeypatch, sdata, model, target, tile_px, context_px):
    _shapes(sdata)
    kw = {"model": model, "tile_px": tile_px, "context_px": context_px, "progress": False, **target}
    ref = _reference(monkeypatch, sdata, **kw)
    ref_map = np.asarray(pixnet.data.image_levels(sdata.images["ref_map"])[0].data)
    got = pixnet.tl.predict(sdata, key_added="new", **kw)
    _same(got, ref)
    new_map = np.asarray(pixnet.data.image_levels(sdata.images["new_map"])[0].data)
    np.testing.assert_array_equal(new_map, ref_map)  # the same map, written by the same pass
    assert sdata.attrs["pixnet"]["maps"]["new_map"]["computed"] == sdata.attrs["pixnet"]["maps"]["ref_map"]["computed"]


def test_map_is_optional_and_may_be_half_precision(monkeypatch, sdata, model):
    kw = {"model": model, "bin_size": 8, "tile_px": 128, "context_px": 32, "progress": False}
    ref = pixnet.tl.predict(sdata, key_added="ref", **kw)
    none = pixnet.tl.predict(sdata, key_added="none", map=False, **kw)
    assert "none_map" not in sdata.images
    _same(none, ref)
    half = pixnet.tl.predict(sdata, key_added="half", map="float16", **kw)
    _same(half, ref)  # the bins never read the stored map
    level = pixnet.data.image_levels(sdata.images["half_map"])[0]
    assert level.dtype == np.float16
    full = np.asarray(pixnet.data.image_levels(sdata.images["ref_map"])[0].data)
    # predict's documented bounds: half an ulp, 2**-11 relative, and 2**-25 absolute among subnormals (< 6e-5)
    np.testing.assert_allclose(np.asarray(level.data, np.float32), full, rtol=2**-11, atol=2**-25)
    with pytest.raises(ValueError, match="map must be"):
        pixnet.tl.predict(sdata, key_added="bad", map="int8", **kw)


def test_a_stored_map_is_reused_only_for_the_tiles_it_was_made_with(sdata, model):
    """The context changes a map's values: another tile_px or context_px recomputes it (overwrite) or is refused."""
    kw = {"model": model, "bin_size": 16, "progress": False}
    zero = pixnet.tl.predict(sdata, tile_px=128, context_px=0, **kw)
    assert zero.uns["pixnet"]["map"] == "pixnet_map"
    with pytest.raises(ValueError, match="context_px = \\[128, 0\\]"):
        pixnet.tl.predict(sdata, shapes="_square_016um", tile_px=128, context_px=32, **kw | {"bin_size": None})
    again = pixnet.tl.predict(sdata, tile_px=128, context_px=32, overwrite=True, **kw)
    fresh = pixnet.tl.predict(sdata.subset(["_full_image", "_square_016um", "square_016um"]), tile_px=128,
                              context_px=32, **kw)  # fmt: skip
    _same(again, fresh)  # made again with the context asked for, not the stored context-0 map's values
    assert again.uns["pixnet"]["context_px"] == 32
    assert sdata.attrs["pixnet"]["maps"]["pixnet_map"]["tiling"] == [128, 32]
    none = pixnet.tl.predict(sdata, tile_px=128, context_px=32, map=False, key_added="none", **kw)
    assert none.uns["pixnet"]["map"] is None and "none_map" not in sdata.images  # no map written, none recorded


def test_tiles_and_contexts_the_map_cannot_be_cut_from_are_refused(sdata):
    """Whole numbers only, a context that is a multiple of the map's stride (else its pixels shift), before any work."""
    cfg = ModelConfig(genes=tuple(f"g{i}" for i in range(6)), map_stride=64)
    m = PixNet(cfg, _Conv(cfg))
    for tile_px, context_px, match in [(128, 32, "map_stride \\(64\\)"), (0, 32, "whole number"),
                                       (128.0, 32, "whole number"), (True, 32, "whole number"),
                                       (128, -32, "whole number")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            pixnet.tl.predict(sdata, model=m, bin_size=16, tile_px=tile_px, context_px=context_px, progress=False)
    assert "pixnet_square_016um" not in sdata.tables
    pixnet.tl.predict(sdata, model=m, bin_size=16, tile_px=128, context_px=64, progress=False)


def test_spots_wider_than_a_tile_take_the_map_path(monkeypatch, sdata, model):
    xy = sdata.tables["square_016um"].obsm["spatial"][::50]
    sdata.shapes["big"] = ShapesModel.parse(xy, geometry=0, radius=np.full(len(xy), 60.0),
                                            transformations={"global": Identity()})  # fmt: skip
    calls = []
    one_pass = _predict.one_pass
    monkeypatch.setattr(_predict, "one_pass", lambda *a, **k: calls.append(1) or one_pass(*a, **k))
    t = pixnet.tl.predict(sdata, model=model, shapes="big", tile_px=64, context_px=32, progress=False)
    assert not calls and t.n_obs == len(xy) and (t.obs["predicted_total_counts"] > 0).all()


def test_a_large_backed_table_streams_to_the_store(tmp_path, monkeypatch, sdata, model):
    """Above the in-memory limit the rows go to zarr a block at a time; values as in memory."""
    from pixnet.infer import expression, store

    path = _backed(tmp_path, sdata)
    kw = {"model": model, "bin_size": 8, "tile_px": 128, "context_px": 32, "progress": False}
    ref = pixnet.tl.predict(sd.read_zarr(path), key_added="ref", **kw)
    monkeypatch.setattr(expression, "TABLE_IN_MEMORY", 0)
    monkeypatch.setattr(expression, "TABLE_CHUNK", (50, 4))
    linked = []
    link = store.link_chunks
    monkeypatch.setattr(store, "link_chunks", lambda elem, dest: linked.append(link(elem, dest)) or linked[-1])
    got = pixnet.tl.predict(sd.read_zarr(path), key_added="lazy", **kw)
    assert not isinstance(got.X, np.ndarray)
    assert linked == [True] * 3  # X and both layers: the scratch chunks linked into the store, not copied
    _same(got, ref)
    _same(sd.read_zarr(path).tables["lazy_square_008um"], ref)  # what the store holds, the scratch gone
    assert not list(tmp_path.glob(".pixnet-*"))  # no scratch left beside the store


def test_a_small_backed_table_is_written_once_then_read_whole(tmp_path, monkeypatch, sdata, model):
    """Under the in-memory limit too the scratch chunks are linked into the store (not read, encoded, written again)."""
    from pixnet.infer import store

    path = _backed(tmp_path, sdata)
    kw = {"model": model, "bin_size": 8, "tile_px": 128, "context_px": 32, "progress": False}
    ref = pixnet.tl.predict(sdata, key_added="ref", **kw)  # in memory: no scratch, no store
    linked = []
    link = store.link_chunks
    monkeypatch.setattr(store, "link_chunks", lambda elem, dest: linked.append(link(elem, dest)) or linked[-1])
    backed = sd.read_zarr(path)
    got = pixnet.tl.predict(backed, key_added="small", **kw)
    assert linked == [True] * 3  # X and both layers
    assert isinstance(got.X, np.ndarray) and all(isinstance(v, np.ndarray) for v in got.layers.values())
    assert got is backed.tables["small_square_008um"]
    _same(got, ref)
    _same(sd.read_zarr(path).tables["small_square_008um"], ref)
    assert not list(tmp_path.glob(".pixnet-*"))


def test_a_new_grids_labels_written_into_a_store_without_labels_are_read_back(tmp_path, sdata, model):
    """A store with no labels group: the new grid's labels become an element readers see, listed as OME labels."""
    import warnings

    import zarr

    path = _backed(tmp_path, sdata)
    assert not (path / "labels").exists()
    backed = sd.read_zarr(path)
    t = pixnet.tl.predict(backed, model=model, bin_size=4, key_added="new", tile_px=128, context_px=32, progress=False)
    region = t.uns["spatialdata_attrs"]["region"]
    assert region == "new_square_004um_labels" and region in backed.labels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = sd.read_zarr(path)
    assert not [w for w in caught if "annotating" in str(w.message)]  # "...which is not present in the SpatialData"
    got, want = (pixnet.data.image_levels(s.labels[region])[0] for s in (again, backed))
    np.testing.assert_array_equal(np.asarray(got.data), np.asarray(want.data))
    assert zarr.open_group(str(path / "labels"), mode="r").attrs["ome"]["labels"] == [region]
    # a store pixnet left so before (a bare labels folder): the next labels written list it too
    (path / "labels" / "zarr.json").unlink()
    more = pixnet.tl.predict(sd.read_zarr(path), model=model, bin_size=3, key_added="more", tile_px=128, context_px=32,
                             progress=False).uns["spatialdata_attrs"]["region"]  # fmt: skip
    assert sorted(zarr.open_group(str(path / "labels"), mode="r").attrs["ome"]["labels"]) == sorted([region, more])
    assert {region, more} <= set(sd.read_zarr(path).labels)
    # one deleted as spatialdata deletes (its name left in the list): the next labels written drop the name
    back = sd.read_zarr(path)
    del back[region]  # (spatialdata refuses to delete the files of an element read from them)
    back.delete_element_from_disk(region)
    pixnet.tl.predict(back, model=model, bin_size=3, key_added="more", overwrite=True, tile_px=128, context_px=32,
                      progress=False)  # fmt: skip
    assert zarr.open_group(str(path / "labels"), mode="r").attrs["ome"]["labels"] == [more]


def test_the_gpus_window_sums_equal_the_cpus():
    """The sparse product a GPU runs (torch's CSR), here on the CPU, against scipy's that the CPU runs."""
    from scipy import sparse

    from pixnet.infer.stream import _apply, _apply_torch

    rng = np.random.default_rng(0)
    weights = sparse.random(300, 40 * 50, density=0.01, format="csr", random_state=1, dtype=np.float64)
    window = torch.from_numpy(rng.gamma(1.0, 1.0, (40, 50, 7)).astype(np.float32))
    got, want = _apply_torch(weights, window), _apply(weights, window)
    assert got.dtype == want.dtype == torch.float32 and got.shape == (300, 7)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_fast_expectation_is_within_its_bound_of_the_exact_one():
    from scipy import stats

    from pixnet.infer.expect import ERROR_BOUND, expected_log_normalized
    from pixnet.pp import _expectation as exact
    from pixnet.pp import expected_log_normalized as numpy_version

    worst = 0.0
    for total in (0.003, 0.05, 0.3, 1.0, 3.0, 7.0, 15.0, 40.0, 120.0, 350.0):
        n = np.arange(int(total + 12 * np.sqrt(total) + 40) + 1)
        pmf = stats.poisson.pmf(n, total)
        frac = np.array([1e-6, 1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5, 0.9, 1.0])
        want = sum(pmf[k] * exact._g(int(k), frac, 1e4) for k in n[1:])
        lam = torch.tensor(frac * total, dtype=torch.float32)[None]
        got = expected_log_normalized(lam, torch.tensor([total], dtype=torch.float64), target_sum=1e4)[0].numpy()
        worst = max(worst, float(np.abs(got - want).max()))
        np.testing.assert_allclose(got, numpy_version(lam.numpy(), np.array([total]))[0], atol=1e-5)
    assert worst < ERROR_BOUND


def test_expectation_on_the_cpu_equals_its_torch_form():
    """The compiled CPU loop and the torch ops (what other devices run) interpolate the same table alike."""
    from pixnet.infer.expect import _expected_torch, expected_log_normalized

    rng = np.random.default_rng(0)
    lam = torch.from_numpy(rng.gamma(0.3, 0.05, (3000, 41)).astype(np.float32))
    lam[:100] *= 1e-6  # below the table's smallest p and total
    lam[100:200] *= 1e4  # above its largest total
    lam[200:210] = 0  # a total of 0 reads 0
    genes, total = lam[:, :40], lam.sum(1, dtype=torch.float64)
    got = expected_log_normalized(genes, total, target_sum=1e4)
    want = _expected_torch(genes, total, target_sum=1e4)
    assert got.dtype == torch.float32 and got.shape == genes.shape
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    assert (got[200:210] == 0).all()


def test_every_form_of_the_expectation_reads_nan_for_a_diverged_map():
    """NaN or inf in a map (a training run that diverged) reads NaN, never an index error (torch's, numpy's forms)."""
    from pixnet.infer.expect import _expected_torch, expected_log_normalized, expected_log_normalized_grad
    from pixnet.pp import expected_log_normalized as numpy_form

    nan, inf = float("nan"), float("inf")
    lam = torch.tensor([[1.0, nan, 2.0], [1.0, 2.0, 3.0], [inf, 1.0, 1.0], [nan, nan, nan]])
    total = lam.sum(1, dtype=torch.float64)
    want = expected_log_normalized(lam, total, target_sum=1e4).numpy()  # the compiled loop
    assert np.isnan(want[[0, 3]]).all() and np.isnan(want[2, 0]) and np.isfinite(want[1]).all()
    assert (want[2, 1:] == 0).all()  # a finite count in an infinite total
    for got in (_expected_torch(lam, total, target_sum=1e4), expected_log_normalized_grad(lam, total, target_sum=1e4),
                numpy_form(lam.numpy(), total.numpy(), target_sum=1e4)):  # fmt: skip
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)  # NaN where want is NaN


def test_the_cpu_expectation_cut_into_parts_run_side_by_side_gives_the_same_values(monkeypatch):
    """Rows cut into parts on several threads (uneven, into an out array, strided input) equal one pass, to the bit."""
    from pixnet.infer import _expect_cpu

    rng = np.random.default_rng(4)
    lam = rng.gamma(0.3, 0.05, (5003, 41)).astype(np.float32)
    lam[:50] = 0
    genes, total = lam[:, :40], lam.sum(1, dtype=np.float64)  # genes: rows 41 values apart
    monkeypatch.setattr(_expect_cpu, "_parts", lambda n: 1)
    want = _expect_cpu.expected_rows(genes, total, target_sum=1e4)
    monkeypatch.setattr(_expect_cpu, "_parts", lambda n: 3)
    out = np.full(genes.shape, np.nan, np.float32)
    got = _expect_cpu.expected_rows(genes, total, target_sum=1e4, out=out)
    assert got is out
    np.testing.assert_array_equal(got, want)
    monkeypatch.undo()
    assert _expect_cpu._parts(100) == 1 and 1 <= _expect_cpu._parts(10**6) <= 8


def test_outputs_written_into_kept_buffers_equal_fresh_ones_and_reuse_them():
    """A writer's X and lognorm go into the same buffers block after block (no block-sized allocation each)."""
    from pixnet.infer.expect import outputs

    rng = np.random.default_rng(1)
    kw = {"n_genes": 40, "target_sum": 1e4, "density": True, "layers": ("counts", "lognorm")}
    into, ptrs = {}, []
    for n in (300, 120, 300, 500):  # a smaller last block, then one larger than the buffers (they grow)
        lam = torch.from_numpy(rng.gamma(0.3, 0.05, (n, 41)).astype(np.float32))
        lam[:5] = 0
        got, want = outputs(lam, into=into, **kw), outputs(lam, **kw)
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
        ptrs.append((got["X"].data_ptr(), got["lognorm"].data_ptr()))
    assert ptrs[0] == ptrs[1] == ptrs[2] != ptrs[3]
    assert into["X"].data_ptr() == ptrs[3][0] and into["X"].numel() == 500 * 40


def test_kept_buffers_are_reused_and_grow_and_pooled_arrays_come_back_by_shape_and_dtype():
    """infer.buffers: one buffer per name, made larger or anew (dtype) when needed; a pool gives back what it got."""
    from pixnet.infer.buffers import Pool, kept

    store: dict = {}
    a = kept(store, "x", (3, 4))
    assert a.shape == (3, 4) and a.is_contiguous() and a.dtype == torch.float32
    b = kept(store, "x", (2, 5))  # fewer values: the same memory, another shape
    assert b.data_ptr() == a.data_ptr() and b.shape == (2, 5)
    c = kept(store, "x", (4, 4))  # more: made larger, and kept
    assert c.data_ptr() != a.data_ptr() and kept(store, "x", (1, 16)).data_ptr() == c.data_ptr()
    assert kept(store, "x", (4, 4), torch.float64).dtype == torch.float64 and store["x"].numel() == 16
    assert kept(store, "y", (2,)).data_ptr() != kept(store, "x", (2,)).data_ptr()

    pool = Pool(np.empty)
    x, y = pool.take((4, 3), np.dtype(np.float32)), pool.take((4, 3), np.dtype(np.float32))
    assert x is not y and x.dtype == np.float32
    pool.give(x)
    assert pool.take((4, 3), np.dtype(np.float32)) is x
    assert pool.take((4, 3), np.dtype(np.float64)) is not y and pool.take((3, 4), np.dtype(np.float32)) is not y
    tpool = Pool(lambda shape, dtype: torch.empty(shape, dtype=dtype))
    t = tpool.take((2, 2), torch.float16)
    tpool.give(t)
    assert tpool.take([2, 2], torch.float16) is t


@pytest.mark.parametrize("kind", ["square", "circle"])
@pytest.mark.parametrize("angle", [0.0, 0.3, -1.1])
@pytest.mark.parametrize("one_size", [True, False])
def test_compiled_spot_weights_equal_the_reference_bit_for_bit(kind, angle, one_size):
    """Prediction's compiled weights (infer._cover_cpu) are pixnet.geometry.spot_weights, edges and sizes varied."""
    from pixnet.geometry import Spots, spot_weights
    from pixnet.infer._cover_cpu import spot_weights as compiled

    rng = np.random.default_rng(7)
    centres = rng.uniform(-3, 43, size=(500, 2))  # some spots hang over the edges of the 37 x 41 grid
    size = np.broadcast_to(1.7, (500,)) if one_size else rng.uniform(0.2, 4.0, 500)
    spots = Spots(kind, centres, size, angle)
    for supersample in (1, 4):
        want = spot_weights(spots, (37, 41), supersample=supersample)
        got = compiled(spots, (37, 41), supersample=supersample, chunk=64)  # several chunks
        assert len(want[0]) > 1000
        for w, g in zip(want, got):
            assert w.dtype == g.dtype and np.array_equal(w, g)


@pytest.mark.parametrize(("old_um", "new_um"), [(2, 8), (2, 16), (8, 16), (2, 5), (2, 3), (2, 2), (8, 2), (16, 8),
                                                 (2, 1), (8, 3), (16, 5)])  # fmt: skip
def test_a_new_grid_over_the_measured_bins_is_every_bin_centred_on_one(old_um, new_um):
    """infer.targets._bins_over (keys, chunks: bounded memory) keeps every new bin whose centre is in a measured bin.

    Finer grids than the measured one included: each measured bin then holds several new bins
    (a 1 um grid over 2 um bins kept one in four when only the measured bins' corners were looked at).
    """
    from pixnet.geometry import BinGrid
    from pixnet.infer.targets import _bins_over

    angle, px = 0.13, old_um / 0.25  # a rotated array of old_um bins, 0.25 um per pixel
    c, s = np.cos(angle) * px, np.sin(angle) * px
    old = BinGrid(np.array([[c, -s, 300.5], [s, c, 120.25], [0, 0, 1]]), float(old_um), 0.25)
    rng = np.random.default_rng(old_um * 100 + new_um)
    rr, cc = np.meshgrid(np.arange(-3, 90), np.arange(-5, 75), indexing="ij")
    tissue = ((rr - 40) ** 2 + (cc - 35) ** 2 < 30**2) & (rng.random(rr.shape) > 0.1)  # a disc with holes
    rows, cols = rr[tissue], cc[tissue]
    grid = old.rescale(new_um)

    # by definition: every bin of the new grid over the area, kept when its centre lies in a measured bin
    measured = set(zip(rows.tolist(), cols.tolist()))
    n = int(np.ceil(95 * old_um / new_um)) + 3
    nr, nc = np.meshgrid(np.arange(-n, n), np.arange(-n, n), indexing="ij")
    nr, nc = nr.ravel(), nc.ravel()
    centre = grid.centres(nr, nc)
    inside = np.array([p in measured for p in zip(*(a.tolist() for a in old.index_of(centre[:, 0], centre[:, 1])))])
    keep = inside & (nr >= 0) & (nc >= 0)
    want = np.stack([nr[keep], nc[keep]], 1)
    want = want[np.lexsort((want[:, 1], want[:, 0]))]

    got_r, got_c = _bins_over(old, grid, rows, cols, chunk=1000)
    assert len(want) > 20
    assert np.array_equal(np.stack([got_r, got_c], 1), want)
    if new_um < old_um and old_um % new_um == 0:  # the finer grid tiles the measured bins: (old / new)^2 each
        assert len(want) >= 0.9 * len(rows) * (old_um // new_um) ** 2


def test_a_new_grid_covers_the_measured_bins_whatever_was_predicted_before(sdata, model):
    """1 um bins on 2 um measured bins: four to each; a new grid is made from the measured tables, not predictions."""
    kw = {"model": model, "tile_px": 128, "context_px": 32, "progress": False, "layers": (), "map": False}
    first = pixnet.tl.predict(sdata, bin_size=3, key_added="first", **kw)
    fine = pixnet.tl.predict(sdata, bin_size=1, key_added="fine", **kw)
    again = pixnet.tl.predict(sdata, bin_size=3, key_added="again", **kw)
    np.testing.assert_array_equal(again.obs_names, first.obs_names)
    np.testing.assert_array_equal(pixnet.tl.predict(sdata, bin_size=1, key_added="fine2", **kw).obs_names, fine.obs_names)
    two = pixnet.tl.predict(sdata, bin_size=2, key_added="two", **kw)  # the measured 2 um bins
    assert fine.n_obs == 4 * two.n_obs  # each 2 um bin holds four 1 um bins (their centres are inside it)
    total = fine.obs["predicted_total_counts"].sum() / two.obs["predicted_total_counts"].sum()
    assert abs(total - 1) < 0.01, total  # the same tissue: the same expected counts


@pytest.mark.parametrize("map_dtype", [True, "float16"])
@pytest.mark.parametrize("one_pass", [True, False])
@pytest.mark.parametrize("channel_chunk", [16, 3])
def test_a_backed_map_links_its_levels_and_equals_the_in_memory_one(tmp_path, monkeypatch, sdata, model, map_dtype,
                                                                    one_pass, channel_chunk):  # fmt: skip
    """The stored map's levels are the scratch arrays' chunk files, linked; every level as an in-memory map's.

    ``channel_chunk`` 3 (of 7 channels): the element is written with one chunk of channels, then
    widened and its channel names written.
    """
    from pixnet.infer import mapimage, onepass

    chunks = onepass.map_chunks
    monkeypatch.setattr(onepass, "map_chunks", lambda *a: (min(channel_chunk, a[1]), *chunks(*a)[1:]))
    path = _backed(tmp_path, sdata)
    kw = {"model": model, "bin_size": 8, "tile_px": 128, "context_px": 32, "progress": False, "map": map_dtype}
    memory = sd.read_zarr(path)
    memory.path = None  # not backed: the map is computed in memory and its pyramid made by spatialdata
    if not one_pass:
        monkeypatch.setattr(_predict, "can_stream", lambda *a, **k: False)
    ref = pixnet.tl.predict(memory, key_added="ref", **kw)
    linked = []
    link = mapimage.link_chunks
    monkeypatch.setattr(mapimage, "link_chunks", lambda elem, dest: linked.append(link(elem, dest)) or linked[-1])
    got = pixnet.tl.predict(sd.read_zarr(path), key_added="new", **kw)
    _same(got, ref)
    stored = pixnet.data.image_levels(sd.read_zarr(path).images["new_map"])
    levels = pixnet.data.image_levels(memory.images["ref_map"])
    assert len(stored) == len(levels) > 1
    assert linked == [True] * len(levels)  # every level made tile by tile and linked, none written twice
    assert list(stored[0].c.values) == list(levels[0].c.values)
    for a, b in zip(stored, levels):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
    assert not list(tmp_path.glob(".pixnet-*"))  # no scratch left beside the store


def test_a_map_whose_chunks_cannot_be_linked_is_copied(tmp_path, monkeypatch, sdata, model):
    """Another file system (no hard links): level 0 is copied from the scratch array, with the same values."""
    from pixnet.infer import mapimage

    path = _backed(tmp_path, sdata)
    kw = {"model": model, "bin_size": 8, "tile_px": 128, "context_px": 32, "progress": False}
    ref = pixnet.tl.predict(sd.read_zarr(path), key_added="ref", **kw)
    monkeypatch.setattr(mapimage, "link_chunks", lambda elem, dest: False)  # as link_chunks says when it cannot
    got = pixnet.tl.predict(sd.read_zarr(path), key_added="new", **kw)
    _same(got, ref)
    stored = sd.read_zarr(path)
    for a, b in zip(pixnet.data.image_levels(stored.images["new_map"]), pixnet.data.image_levels(stored.images["ref_map"])):
        np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
    assert np.asarray(pixnet.data.image_levels(stored.images["new_map"])[0].data).any()


@pytest.mark.parametrize("backlog", [0, 2**30])
@pytest.mark.parametrize("stored", [False, True])
def test_the_sink_writes_every_block_once_whatever_order_the_tiles_come_in(tmp_path, monkeypatch, backlog, stored):
    """Tiles' rows in any order, blocks finished in bursts (as at the end of a row of tiles): each row's values."""
    from pixnet.infer import sink

    monkeypatch.setattr(sink, "BACKLOG", backlog)
    rng = np.random.default_rng(0)
    n, c = 203, 5
    sums = rng.random((n, c), dtype=np.float32)
    tiles = np.array_split(rng.permutation(n), 9)  # each tile's rows, scattered over the table

    kept = torch.empty(16, c)  # X in one buffer, block after block, as pixnet.infer.expect.outputs does

    def make(t):
        return {"X": torch.mul(t, 2, out=kept[: len(t)]), "total": t.sum(1)}

    s = sink.Sink(n, {"X": c, "total": 0}, make, rows=16, cols=2, device=torch.device("cpu"),
                  store=tmp_path if stored else None)  # fmt: skip
    for idx in tiles:
        idx = np.sort(idx)
        s.put_rows(idx, torch.from_numpy(sums[idx]))
    out = s.close()
    np.testing.assert_array_equal(np.asarray(out["X"][:]), sums * 2)
    np.testing.assert_allclose(np.asarray(out["total"][:]), sums.sum(1), rtol=1e-6)
    assert not s._ready and s._ready_bytes == 0


@pytest.mark.parametrize("width", [3, 16, 37])
def test_the_chunk_writer_writes_what_a_plain_write_does(tmp_path, width):
    """Rows written a chunk per value (regrouped columns, a narrower last chunk, a short last block) equal a plain write."""
    from pixnet.infer.chunklinks import ChunkWriter, scratch_array

    rng = np.random.default_rng(1)
    n, rows, cols = 21, 8, 16
    values = torch.from_numpy(rng.random((n, width + 1), dtype=np.float32))[:, :width]  # not contiguous, as a layer
    plain = scratch_array(tmp_path / "plain.zarr", (n, width), (rows, cols))
    chunked = scratch_array(tmp_path / "chunked.zarr", (n, width), (rows, cols))
    writer = ChunkWriter()
    for r0 in range(0, n, rows):
        plain[r0 : r0 + rows] = values[r0 : r0 + rows].numpy()
        writer.write(chunked, (r0, 0), values[r0 : r0 + rows])
    writer.close()
    np.testing.assert_array_equal(chunked[:], plain[:])
    np.testing.assert_array_equal(chunked[:], values.numpy())
    assert writer._loop is None


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_the_chunk_writer_writes_tiles_over_chunks_from_several_threads(tmp_path, dtype):
    """3-d tiles at offsets that do and do not fall on chunk edges, from threads at once: as a plain write."""
    from concurrent.futures import ThreadPoolExecutor

    from pixnet.infer.chunklinks import ChunkWriter, scratch_array

    rng = np.random.default_rng(2)
    shape, chunks = (7, 45, 50), (3, 8, 16)
    full = rng.random(shape, dtype=np.float32).astype(dtype)
    plain = scratch_array(tmp_path / "plain.zarr", shape, chunks, dtype)
    chunked = scratch_array(tmp_path / "chunked.zarr", shape, chunks, dtype)
    writer = ChunkWriter()
    tiles = [(y, x, h, w) for y, h in ((0, 16), (16, 13), (29, 16)) for x, w in ((0, 16), (16, 21), (37, 13))]

    def put(tile):  # tiles that share chunks: each write reads, merges and writes them (zarr's writes do not lock)
        y, x, h, w = tile
        writer.write(chunked, (0, y, x), torch.from_numpy(full[:, y : y + h, x : x + w].copy()))

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(put, tiles))
    for y, x, h, w in tiles:
        plain[:, y : y + h, x : x + w] = full[:, y : y + h, x : x + w]
    writer.write(chunked, (2, 5, 40), torch.from_numpy(full[2:6, 5:9, 40:50].copy()))  # inside chunks, not whole
    writer.close()
    np.testing.assert_array_equal(chunked[:], full)
    np.testing.assert_array_equal(plain[:], full)
    assert writer._loop is None


def test_pending_blocks_on_disk_read_back_what_was_written_and_reuse_their_slots(tmp_path):
    from pixnet.infer.spill import PendingBlocks

    rng = np.random.default_rng(1)
    rows, width = 10, 3
    pending = PendingBlocks(tmp_path / "pending.f32", rows, width)
    for rnd in range(3):  # three rounds of four blocks in progress at once: the file keeps four slots
        blocks = {b: rng.random((rows, width), dtype=np.float32) for b in range(4 * rnd, 4 * rnd + 4)}
        for part in np.array_split(rng.permutation(rows), 3):  # each block filled in three scattered pieces
            for b, values in blocks.items():
                r = np.sort(part)
                pending.write(b, r, values[r])
        for b, values in blocks.items():
            got = pending.read(b, np.empty((rows - 1 if b == 11 else rows, width), np.float32))
            np.testing.assert_array_equal(got, values[: len(got)])
    assert (tmp_path / "pending.f32").stat().st_size <= 4 * rows * width * 4
    pending.close()
    assert not (tmp_path / "pending.f32").exists()
