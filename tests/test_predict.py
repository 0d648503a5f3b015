import os

import anndata as ad
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import shapely
import spatialdata as sd
import torch
import zarr
from scipy import sparse
from spatialdata.models import Image2DModel, ShapesModel, TableModel
from spatialdata.transformations import Identity

import pixnet
from pixnet.data import image_levels
from pixnet.model import ModelConfig, PixNet


def test_predict_matches_measured_bins(sdata, trained):
    table = pixnet.tl.predict(sdata, model=trained, bin_size=8, progress=False)
    meas = sdata.tables["square_008um"]
    assert list(table.obs_names) == list(meas.obs_names)
    assert list(table.var_names) == trained.genes
    assert table.X.shape == (meas.n_obs, len(trained.genes))
    assert {"counts", "lognorm"} <= set(table.layers)
    assert np.isfinite(table.X).all() and (table.layers["counts"] >= 0).all()
    # The map: one named channel per gene (plus the other genes), multiscale, in the slide's coordinates.
    m = sdata.images["pixnet_map"]
    assert list(image_levels(m)[0].coords["c"].values) == trained.genes + ["other_genes"]
    assert len(m.children) >= 2
    assert "pixnet_square_008um_shapes" in sdata.shapes
    assert table.uns["spatialdata_attrs"]["region"] == "pixnet_square_008um_shapes"
    assert table.uns["pixnet"]["source_table"] == "square_008um"


def test_predict_any_size_and_shapes(sdata, trained):
    t2 = pixnet.tl.predict(sdata, model=trained, bin_size=2, progress=False)
    assert list(t2.obs_names) == list(sdata.tables["square_002um"].obs_names)
    assert "pixnet_square_002um_labels" in sdata.labels
    t32 = pixnet.tl.predict(sdata, model=trained, bin_size=32, progress=False)
    assert t32.obs_names[0].startswith("s_032um_")
    # 32 um bins cover the measured tissue: about 1/16 as many as the 8 um bins.
    assert 0.5 < t32.n_obs * 16 / sdata.tables["square_008um"].n_obs < 1.6
    # Circles, as Visium spots: expected counts scale with area.
    centres = sdata.tables["square_016um"].obsm["spatial"][::40]
    circles = ShapesModel.parse(
        centres, geometry=0, radius=np.full(len(centres), 27.5 / 0.2737), transformations={"global": Identity()}
    )
    sdata.shapes["spots"] = circles
    t55 = pixnet.tl.predict(sdata, model=trained, shapes="spots", progress=False)
    assert t55.n_obs == len(centres)
    ratio = (
        t55.obs["predicted_total_counts"].mean()
        / pixnet.tl.predict(sdata, model=trained, bin_size=16, progress=False).obs["predicted_total_counts"].mean()
    )
    assert 3 < ratio < 30  # a 55 um circle has 9.3x the area of a 16 um square


def test_existing_elements_are_kept(sdata, trained):
    pixnet.tl.predict(sdata, model=trained, bin_size=16, progress=False)
    with pytest.raises(ValueError, match="overwrite=True"):
        pixnet.tl.predict(sdata, model=trained, bin_size=16, progress=False)
    pixnet.tl.predict(sdata, model=trained, bin_size=16, progress=False, overwrite=True)


class _Darkness(torch.nn.Module):
    """A stand-in network whose map is the image's darkness: where the map lands is then visible."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        s = self.config.map_stride
        dark = torch.nn.functional.avg_pool2d(1 - x.mean(1, keepdim=True), s)
        return dark.repeat(1, self.config.n_outputs, 1, 1) * self.w


def test_map_overlays_the_image(sdata):
    h, w = image_levels(sdata.images["_full_image"])[0].shape[1:]
    arr = np.full((3, h, w), 255, np.uint8)
    arr[:, 300:500, 500:800] = 0  # a dark rectangle at a known place
    sdata.images["_full_image"] = Image2DModel.parse(arr, dims=("c", "y", "x"), transformations={"global": Identity()})
    cfg = ModelConfig(genes=("A", "B"), map_stride=4)
    model = PixNet(cfg, _Darkness(cfg))
    t = pixnet.tl.predict(sdata, model=model, bin_size=16, progress=False, tile_px=256, context_px=32)
    xy = t.obsm["spatial"]
    bin_px = 16 / 0.2737
    inside = (
        (xy[:, 0] > 500 + bin_px) & (xy[:, 0] < 800 - bin_px) & (xy[:, 1] > 300 + bin_px) & (xy[:, 1] < 500 - bin_px)
    )
    outside = (
        (xy[:, 0] < 500 - bin_px) | (xy[:, 0] > 800 + bin_px) | (xy[:, 1] < 300 - bin_px) | (xy[:, 1] > 500 + bin_px)
    )
    full = (16 / cfg.map_um_per_px) ** 2  # map pixels per bin, each holding 1 where the image is black
    counts = t.layers["counts"][:, 0]
    assert inside.sum() > 5
    np.testing.assert_allclose(counts[inside], full, rtol=0.02)
    assert counts[outside].max() < 0.02 * full


def test_predictions_do_not_depend_on_tiling(sdata, trained):
    a = pixnet.tl.predict(sdata, model=trained, bin_size=16, tile_px=256, context_px=64, progress=False, key_added="a")
    b = pixnet.tl.predict(sdata, model=trained, bin_size=16, tile_px=512, context_px=96, progress=False, key_added="b")
    np.testing.assert_allclose(a.layers["counts"], b.layers["counts"], rtol=0.02, atol=1e-3)


def _backed(sdata, path, bin_size: int) -> sd.SpatialData:
    """The slide's image and one bin size written to a zarr store, read back (backed)."""
    name = f"square_{bin_size:03d}um"
    sd.SpatialData(
        images={"_full_image": sdata.images["_full_image"]},
        shapes={f"_{name}": sdata.shapes[f"_{name}"]},
        tables={name: sdata.tables[name]},
        attrs=sdata.attrs,
    ).write(path)
    return sd.read_zarr(path)


def test_backed_zarr_round_trip(tmp_path, sdata, trained):
    import warnings

    path = tmp_path / "slide.zarr"
    backed = _backed(sdata, path, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = pixnet.tl.predict(backed, model=trained, bin_size=16, progress=False)
    # pixnet's own writes say how they shard (anndata warned on every array that its default will change)
    assert not [w for w in caught if "autosharding" in str(w.message)]
    again = sd.read_zarr(path)
    assert {"pixnet_map", "pixnet_square_016um_shapes", "pixnet_square_016um"} <= {
        *again.images,
        *again.shapes,
        *again.tables,
    }
    np.testing.assert_allclose(np.asarray(again.tables["pixnet_square_016um"].X), np.asarray(t.X), rtol=1e-6)
    assert list(image_levels(again.images["pixnet_map"])[0].coords["c"].values)[:2] == trained.genes[:2]
    assert again.tables["square_016um"].n_obs == sdata.tables["square_016um"].n_obs  # earlier elements intact


def test_obs_names_are_written_a_slice_at_a_time(tmp_path, sdata, trained, monkeypatch):
    """A table's long string arrays go to the store in slices; they read back whole and in order."""
    import zarr

    from pixnet.infer import store as _outputs

    monkeypatch.setattr(_outputs, "STRING_SLICE", 7)
    path = tmp_path / "slide.zarr"
    backed = _backed(sdata, path, 16)
    t = pixnet.tl.predict(backed, model=trained, bin_size=16, progress=False)
    assert t.n_obs > 7 * 3
    again = sd.read_zarr(path).tables["pixnet_square_016um"]
    assert list(again.obs_names) == list(sdata.tables["square_016um"].obs_names)
    np.testing.assert_allclose(np.asarray(again.X), np.asarray(t.X), rtol=1e-6)
    assert again.uns["spatialdata_attrs"] == t.uns["spatialdata_attrs"]  # spatialdata's table attributes kept
    index = zarr.open_group(str(path / "tables" / "pixnet_square_016um" / "obs"), mode="r")["_index"]
    assert index.chunks == (7,) and index.shape == (t.n_obs,)


def _tiny_sdata(pred_x, meas_counts):
    pts = ShapesModel.parse(np.array([[1.0, 1], [2, 2], [3, 3], [4, 4]]), geometry=0, radius=np.ones(4))
    meas = ad.AnnData(
        sparse.csr_matrix(meas_counts.astype(np.float32)),
        obs=pd.DataFrame({"id": np.arange(4), "r": "c"}, index=list("abcd")),
    )
    meas.var_names = ["G1", "G2", "G3"]
    meas.obs["r"] = meas.obs["r"].astype("category")
    meas = TableModel.parse(meas, region="c", region_key="r", instance_key="id")
    pred = ad.AnnData(pred_x.astype(np.float32), obs=pd.DataFrame(index=list("abcd")))
    pred.var_names = ["G1", "G2"]
    pred.uns["pixnet"] = {"source_table": "measured", "normalization": {"target_sum": 10.0, "log1p": True}}
    return sd.SpatialData(shapes={"c": pts}, tables={"measured": meas, "pixnet_c": pred})


def test_evaluate_by_hand():
    counts = np.array([[1, 1, 2], [2, 0, 2], [0, 3, 1], [4, 4, 2]])
    pred = np.array([[0.1, 0.2], [0.3, 0.1], [0.2, 0.5], [0.4, 0.4]])
    s = _tiny_sdata(pred, counts)
    out = pixnet.tl.evaluate(s, shapes="c")
    truth = np.log1p(counts[:, :2] / counts.sum(1, keepdims=True) * 10)
    pcc = [np.corrcoef(pred[:, g], truth[:, g])[0, 1] for g in range(2)]
    assert np.isclose(out["MSE"], np.mean((pred - truth) ** 2), rtol=1e-5)
    assert np.isclose(out["MAE"], np.mean(np.abs(pred - truth)), rtol=1e-5)
    assert np.isclose(out["PCC@M"], np.mean(pcc), rtol=1e-5)
    assert np.isclose(out["PCC@S"], np.median(pcc), rtol=1e-5)
    assert np.isclose(out["PCC@F"], np.percentile(pcc, 25), rtol=1e-5)
    np.testing.assert_allclose(s.tables["pixnet_c"].var["pcc"], pcc, rtol=1e-5)


def test_constant_genes_are_reported():
    counts = np.array([[1, 1, 2], [2, 1, 2], [0, 1, 1], [4, 1, 2]])
    pred = np.array([[0.1, 0.2], [0.3, 0.2], [0.2, 0.2], [0.4, 0.2]])
    out = pixnet.tl.evaluate(_tiny_sdata(pred, counts), shapes="c")
    assert out["n_constant_genes"] == 1
    assert np.isfinite(out["PCC@M"])


@pytest.mark.parametrize("lazy", [False, True])
def test_evaluate_streams_blocks_of_bins(monkeypatch, lazy):
    """Block by block (as for a 2 um table of a whole slide, lazy or not), evaluate equals the in-memory formulas."""
    import importlib

    ev = importlib.import_module("pixnet.tl.evaluate")  # the module, not the function of that name
    rng = np.random.default_rng(1)
    counts = rng.poisson(rng.gamma(1.0, 2.0, size=(1, 3)), size=(4, 3))
    counts[:, 0] += rng.poisson(3, size=4)
    pred = np.column_stack([rng.gamma(1, 1, 4), np.full(4, 0.7)])  # G2 predicted constant
    whole = pixnet.tl.evaluate(_tiny_sdata(pred, counts), shapes="c")
    monkeypatch.setattr(ev, "CHUNK", 3)  # 4 bins: blocks of 3 and 1
    s = _tiny_sdata(pred, counts)
    if lazy:
        s.tables["pixnet_c"].X = da.from_array(s.tables["pixnet_c"].X, chunks=(2, 2))
    blocks = pixnet.tl.evaluate(s, shapes="c")
    pd.testing.assert_series_equal(blocks, whole, rtol=1e-9)
    assert blocks["n_constant_genes"] == 1
    truth = np.log1p(counts[:, 0] / counts.sum(1) * 10)
    assert np.isclose(blocks["PCC@M"], np.corrcoef(pred[:, 0], truth)[0, 1])


def test_predict_needs_a_model(slide_dir):
    fresh = pixnet.io.visium_hd(slide_dir, bin_sizes=(16,))
    with pytest.raises(ValueError, match="tl.fit"):
        pixnet.tl.predict(fresh, bin_size=16)


@pytest.mark.parametrize("size", [0, -4, 0.1])
def test_predict_rejects_bad_bin_sizes(sdata, trained, size):
    with pytest.raises(ValueError, match="bin_size"):
        pixnet.tl.predict(sdata, model=trained, bin_size=size, progress=False)


def test_2um_bins_are_placed_to_the_micrometre(sdata):
    # A slanted dark edge: each 2 um bin's predicted darkness must equal the share of its area on the dark side.
    h, w = image_levels(sdata.images["_full_image"])[0].shape[1:]
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    dark = (xx - 600) * np.cos(0.3) + (yy - 500) * np.sin(0.3) < 0
    arr = np.full((3, h, w), 255, np.uint8)
    arr[:, dark] = 0
    sdata.images["_full_image"] = Image2DModel.parse(arr, dims=("c", "y", "x"), transformations={"global": Identity()})
    cfg = ModelConfig(genes=("A",), map_stride=2)
    t = pixnet.tl.predict(
        sdata, model=PixNet(cfg, _Darkness(cfg)), bin_size=2, progress=False, tile_px=256, context_px=32
    )
    grid = pixnet.io.read_table_grid(sdata.tables["square_002um"])
    u = (np.arange(8) + 0.5) / 8 - 0.5
    du, dv = np.meshgrid(u, u)
    p = grid.centres(
        (t.obs["array_row"].to_numpy()[:, None] + dv.ravel()).ravel(),
        (t.obs["array_col"].to_numpy()[:, None] + du.ravel()).ravel(),
    )
    frac = (((p[:, 0] - 600) * np.cos(0.3) + (p[:, 1] - 500) * np.sin(0.3)) < 0).reshape(t.n_obs, -1).mean(1)
    pred = np.asarray(t.layers["counts"][:, 0]) / (2 / cfg.map_um_per_px) ** 2
    edge = (frac > 0) & (frac < 1)
    assert edge.sum() > 50
    assert np.corrcoef(pred[edge], frac[edge])[0, 1] > 0.99
    assert abs((pred - frac)[edge].mean()) < 0.02


def test_occupied_blocks_match_a_brute_force_overlap():
    from pixnet.geometry import Spots
    from pixnet.infer.dense import occupied_blocks

    rng = np.random.default_rng(0)
    region, core = (10, 20, 300, 260), 64  # (y0, x0, h, w) map pixels, blocks of 64
    centres = rng.uniform([20, 10], [280, 310], size=(40, 2))
    size = np.concatenate([rng.uniform(1, 8, 38), [150.0, 90.0]])  # two spots span several blocks
    spots = Spots("square", centres, size, 0.0)
    got = occupied_blocks(spots, region, core)
    want = np.zeros(got.shape, bool)
    half = spots.extent()
    for (cx, cy), e in zip(centres, half, strict=True):
        for i in range(want.shape[0]):
            for j in range(want.shape[1]):
                by0, bx0 = region[0] + i * core, region[1] + j * core
                if cx + e >= bx0 and cx - e < bx0 + core and cy + e >= by0 and cy - e < by0 + core:
                    want[i, j] = True
    np.testing.assert_array_equal(got, want)
    assert want.any() and not want.all()


@pytest.mark.parametrize("mean", [False, True])
@pytest.mark.parametrize("shuffled", [False, True])
def test_lazy_aggregation_equals_a_pixel_mask_sum(mean, shuffled):
    """Chunks of spots x channel groups of the map give the brute-force mask sums (or means), in input order."""
    from pixnet.geometry import Spots
    from pixnet.infer.dense import aggregate_lazy

    rng = np.random.default_rng(3)
    h, w, c = 60, 80, 37
    centres = rng.uniform([3, 3], [w - 3, h - 3], size=(90, 2))
    if not shuffled:
        centres = centres[np.argsort(centres[:, 1])]  # row-sorted, as Visium HD tables are
    size = rng.uniform(0.8, 4, 90)
    spots = Spots("square", centres, size, 0.3)
    values = rng.random((c, h, w)).astype(np.float32)
    dmap = da.from_array(values, chunks=(10, 32, 32))  # channel groups of 10, 10, 10, 7
    got = aggregate_lazy(dmap, spots, mean=mean, supersample=1, chunk=16).compute()
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    want = np.zeros((90, c))
    for n, ((cx, cy), e) in enumerate(zip(centres, size, strict=True)):
        u = (xx - cx) * np.cos(0.3) + (yy - cy) * np.sin(0.3)
        v = (yy - cy) * np.cos(0.3) - (xx - cx) * np.sin(0.3)
        mask = (np.abs(u) <= e) & (np.abs(v) <= e)
        want[n] = values[:, mask].sum(1) / (mask.sum() if mean else 1)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5)


def _subset_shapes(sdata, keep):
    bins = sdata.shapes["_square_016um"]
    return ShapesModel.parse(bins.iloc[np.flatnonzero(keep)].reset_index(drop=True))  # keeps its transformations


def test_a_map_is_reused_only_where_it_was_computed(sdata, trained):
    """Tiles without spots are skipped; a later predict into spots there must compute them, not read 0."""
    xy = sdata.tables["square_016um"].obsm["spatial"]
    q = np.quantile(xy[:, 0], [0.15, 0.4, 0.6, 0.85])
    sdata.shapes["ends"] = _subset_shapes(sdata, (xy[:, 0] < q[0]) | (xy[:, 0] > q[3]))
    ends = (xy[:, 0] < q[0]) | (xy[:, 0] > q[3])
    lo, hi = xy[ends, 1].min() + 100, xy[ends, 1].max() - 100  # inside the first map's region
    sdata.shapes["middle"] = _subset_shapes(
        sdata, (xy[:, 0] > q[1]) & (xy[:, 0] < q[2]) & (xy[:, 1] > lo) & (xy[:, 1] < hi)
    )
    kw = {"model": trained, "tile_px": 128, "context_px": 32, "progress": False}
    pixnet.tl.predict(sdata, shapes="ends", **kw)
    stored = sdata.attrs["pixnet"]["maps"]["pixnet_map"]
    assert not np.asarray(stored["computed"]).all()  # the middle of the slide was not computed
    middle = pixnet.tl.predict(sdata, shapes="middle", **kw)  # same model: the map is reused only if it covers
    fresh = pixnet.tl.predict(sdata, shapes="middle", key_added="fresh", **kw)
    assert (middle.obs["predicted_total_counts"] > 0).all()
    np.testing.assert_allclose(middle.layers["counts"], fresh.layers["counts"], rtol=1e-5, atol=1e-6)


def test_a_large_table_is_written_chunk_by_chunk(tmp_path, sdata, trained, monkeypatch):
    """Above the in-memory limit a backed table stays lazy: read back from the store, values unchanged."""
    from pixnet.infer import expression as _outputs

    path = tmp_path / "slide.zarr"
    _backed(sdata, path, 8)
    ref = pixnet.tl.predict(sd.read_zarr(path), model=trained, bin_size=8, key_added="ref", progress=False)
    monkeypatch.setattr(_outputs, "TABLE_IN_MEMORY", 0)
    monkeypatch.setattr(_outputs, "TABLE_CHUNK", (7, 3))  # several blocks of bins and of genes
    backed = sd.read_zarr(path)
    lazy = pixnet.tl.predict(backed, model=trained, bin_size=8, key_added="lazy", progress=False)
    assert isinstance(lazy.X, da.Array) and isinstance(lazy.layers["counts"], da.Array)
    stored = zarr.open_group(str(path / "tables" / "lazy_square_008um"), mode="r")
    for name in ("X", "layers/counts", "layers/lognorm"):  # zarr chunks = dask blocks: no chunk rewritten
        assert stored[name].chunks == (7, 3), name
    assert not list(tmp_path.glob(".pixnet-*"))  # no scratch left beside the store
    np.testing.assert_allclose(np.asarray(lazy.X), ref.X, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(lazy.layers["lognorm"]), ref.layers["lognorm"], rtol=1e-6)
    np.testing.assert_allclose(lazy.obs["predicted_total_counts"], ref.obs["predicted_total_counts"], rtol=1e-6)
    again = sd.read_zarr(path).tables["lazy_square_008um"]
    np.testing.assert_allclose(np.asarray(again.layers["counts"]), ref.layers["counts"], rtol=1e-6)
    # pixnet.io.read_zarr opens the store with the large tables lazy: the prediction and the measured counts
    opened = pixnet.io.read_zarr(path, in_memory_limit=1000)
    assert isinstance(opened.tables["lazy_square_008um"].X, da.Array)
    assert isinstance(opened.tables["square_008um"].X, da.Array)  # CSR counts: chunks of rows read on demand
    assert set(opened.tables) == set(sd.read_zarr(path).tables) and opened.is_backed()
    scores = pixnet.tl.evaluate(opened, bin_size=8, key_added="lazy")
    np.testing.assert_allclose(scores, pixnet.tl.evaluate(backed, bin_size=8, key_added="ref"), rtol=1e-6)
    measured, lazy_measured = backed.tables["square_008um"], opened.tables["square_008um"]
    assert pixnet.pp.select_genes(lazy_measured, n_top=5) == pixnet.pp.select_genes(measured, n_top=5)
    np.testing.assert_allclose(pixnet.pp.log_normalize(lazy_measured).X, pixnet.pp.log_normalize(measured).X)


def test_predict_runs_on_a_dask_distributed_cluster(tmp_path, sdata, trained, monkeypatch):
    """With a distributed client active, the map is computed on its worker processes, with the same values."""
    import distributed

    from pixnet.model import PixNetModule

    path = tmp_path / "slide.zarr"
    _backed(sdata, path, 16)
    ref = pixnet.tl.predict(sdata, model=trained, bin_size=16, progress=False)
    calls = []
    forward = PixNetModule.forward
    monkeypatch.setattr(PixNetModule, "forward", lambda self, x: calls.append(1) or forward(self, x))  # this process
    environ = dict(os.environ)  # distributed leaves OMP_NUM_THREADS=1 and more in this process's environment
    try:
        with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as c:
            with distributed.Client(c):
                got = pixnet.tl.predict(sd.read_zarr(path), model=trained, bin_size=16, progress=False)
    finally:
        os.environ.clear()
        os.environ.update(environ)
    assert not calls  # no tile went through the network here: the worker ran them
    np.testing.assert_allclose(got.layers["counts"], ref.layers["counts"], rtol=1e-5, atol=1e-6)


def test_map_chunks_follow_the_tiles_and_are_never_one_row():
    from pixnet.infer.mapimage import map_chunks

    # two tiles of 256 map pixels down, 251 channels: chunks divide the tile height
    assert map_chunks(((251,), (256, 100), (256, 256)), 251) == (16, 64, 256)
    assert map_chunks(((251,), (240, 240, 7), (600,)), 251) == (16, 60, 512)
    # a map within one tile whose height is prime (197) was written in chunks of one row
    assert map_chunks(((251,), (197,), (201,)), 251) == (16, 64, 201)
    assert map_chunks(((3,), (40,), (40,)), 3) == (3, 40, 40)


def test_shapes_are_found_by_their_table_name(sdata, trained):
    """A run without a file prefix names the element ``_cell_segmentations`` and its table ``cell_segmentations``."""
    assert "cell_segmentations" not in sdata.shapes and "_cell_segmentations" in sdata.shapes
    by_table = pixnet.tl.predict(sdata, model=trained, shapes="cell_segmentations", progress=False)
    by_element = pixnet.tl.predict(sdata, model=trained, shapes="_cell_segmentations", progress=False)
    assert list(by_table.obs_names) == list(by_element.obs_names) == list(sdata.tables["cell_segmentations"].obs_names)
    np.testing.assert_allclose(by_table.X, by_element.X, rtol=1e-5, atol=1e-6)
    assert "pixnet_cell_segmentations" in sdata.tables and "pixnet_cell_segmentations_shapes" in sdata.shapes
    scores = pixnet.tl.evaluate(sdata, shapes="cell_segmentations")  # the same name finds the prediction
    assert scores.name == "pixnet_cell_segmentations" and np.isfinite(scores["PCC@M"])
    with pytest.raises(KeyError, match="No shapes element 'nuclei'"):
        pixnet.tl.predict(sdata, model=trained, shapes="nuclei", progress=False)


def test_progress_bars_name_the_prediction_they_belong_to(sdata, trained, capsys):
    # Two predictions in a row: each bar says which table it fills ("predicting" alone did not). The 2 um one
    # aggregates the map the 8 um one stored (same model): a bar of the other path, named too.
    for size, bar in ((8, "predicting"), (2, "aggregating")):
        pixnet.tl.predict(sdata, model=trained, bin_size=size, progress=True)
        assert f"pixnet_square_00{size}um: {bar}" in capsys.readouterr().err
    pixnet.tl.predict(sdata, model=trained, bin_size=8, key_added="other", map=False, progress=True)
    assert "other_square_008um: predicting" in capsys.readouterr().err
    from pixnet.infer.progress import describe

    assert describe("x") == "x"  # the label ends with the call


@pytest.mark.parametrize("cropped", [False, True])  # a crop by spatialdata's query leaves the region as a list
def test_a_slide_moved_as_a_whole_predicts_the_same_bins(sdata, trained, cropped):
    """Image and bins translated together after the reader recorded its grid: the same values, where the bins lie now.

    The reader's grid was trusted as it was: the bins were predicted 100 px from where they lie, from the wrong tissue.
    """
    from spatialdata.transformations import Translation, set_transformation

    ref = pixnet.tl.predict(sdata, model=trained, bin_size=8, key_added="ref", progress=False)
    moved = sd.SpatialData(
        images={"_full_image": sd.deepcopy(sdata.images["_full_image"])},
        shapes={"_square_008um": sd.deepcopy(sdata.shapes["_square_008um"])},
        tables={"square_008um": sdata.tables["square_008um"].copy()},
        attrs=sdata.attrs,
    )
    for name in ("_full_image", "_square_008um"):
        set_transformation(moved[name], Translation([100, -40], axes=("x", "y")), to_coordinate_system="global")
    if cropped:  # the whole slide, through the query: the table then annotates ['_square_008um'] (it was trusted)
        moved = sd.bounding_box_query(moved, axes=("x", "y"), min_coordinate=[-1e5, -1e5], max_coordinate=[1e5, 1e5],
                                      target_coordinate_system="global")  # fmt: skip
        assert moved.tables["square_008um"].uns["spatialdata_attrs"]["region"] == ["_square_008um"]
    got = pixnet.tl.predict(moved, model=trained, bin_size=8, key_added="moved", progress=False)
    assert list(got.obs_names) == list(ref.obs_names)
    # evaluated on the bins where they lie now (the measured centres were the reader's: 'in different places')
    assert np.isfinite(pixnet.tl.evaluate(moved, bin_size=8, key_added="moved")["PCC@M"])
    # the tiles now start elsewhere on the tissue: equal as two tilings are (test_predictions_do_not_depend_on_tiling)
    np.testing.assert_allclose(np.asarray(got.X), np.asarray(ref.X), rtol=0.02, atol=1e-3)
    # the prediction's squares lie on the measured ones, in the coordinate system (they lay 100 px off)
    from pixnet.data.image import element_to_cs

    def centres(name, ids):
        gdf = moved.shapes[name]
        xy = shapely.get_coordinates(gdf.loc[ids].centroid)
        a = element_to_cs(gdf, "global")
        return xy @ a[:2, :2].T + a[:2, 2]

    measured = moved.tables["square_008um"]
    key, own = (t.uns["spatialdata_attrs"]["instance_key"] for t in (measured, got))
    np.testing.assert_allclose(centres(got.uns["spatialdata_attrs"]["region"], got.obs[own].to_numpy()),
                               centres("_square_008um", measured.obs.loc[got.obs_names, key].to_numpy()), atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("moved", ["image and bins", "image alone"])
def test_2um_bins_as_labels_are_predicted_where_the_labels_lie(sdata, trained, moved):
    """A 2 um table annotating a labels image, after the slide or only its image was moved (a registration fix).

    The bins' places were taken from what the reader recorded (its grid, ``obsm["spatial"]``), which do not follow
    the labels: moved with the image, the bins were predicted 100 px from where they lie, from other tissue.
    """
    from spatialdata.transformations import Sequence, Translation, get_transformation, set_transformation

    from pixnet.data.image import element_to_cs

    lab = "_square_002um_labels"
    slide = sd.SpatialData(
        images={"_full_image": sd.deepcopy(sdata.images["_full_image"])},
        labels={lab: sd.deepcopy(sdata.labels[lab])},
        tables={"square_002um": sdata.tables["square_002um"].copy()},
        attrs=sdata.attrs,
    )
    shift = Translation([100, -40], axes=("x", "y"))
    set_transformation(slide["_full_image"], shift, to_coordinate_system="global")
    if moved == "image and bins":
        set_transformation(slide[lab], Sequence([get_transformation(slide[lab], "global"), shift]), "global")
    got = pixnet.tl.predict(slide, model=trained, bin_size=2, key_added="moved", progress=False, map=False)
    assert np.isfinite(pixnet.tl.evaluate(slide, bin_size=2, key_added="moved")["PCC@M"])

    def centres(name, table, rows):  # of the labels' pixels holding these rows' ids, in the coordinate system
        raster = np.asarray(image_levels(slide.labels[name])[0])
        ys, xs = np.nonzero(raster)
        at = pd.Series(np.arange(len(ys)), index=raster[ys, xs])[table.obs[table.uns["spatialdata_attrs"]["instance_key"]]
                                                                .to_numpy()[rows]].to_numpy()  # fmt: skip
        return (
            np.stack([xs[at] + 0.5, ys[at] + 0.5, np.ones(len(at))]).T
            @ element_to_cs(slide.labels[name], "global")[:2].T
        )

    measured = slide.tables["square_002um"]
    rows = np.arange(0, got.n_obs, 101)
    np.testing.assert_allclose(centres(got.uns["spatialdata_attrs"]["region"], got, rows),
                               centres(lab, measured, measured.obs_names.get_indexer(got.obs_names[rows])), atol=1e-6)  # fmt: skip


def test_tables_normalised_by_scanpy_are_refused_as_counts(slide_dir, sdata, trained):
    """From the verbs breaker: fit trained on log-normalised values as counts, evaluate normalised them twice."""
    import scanpy as sc

    slide = pixnet.io.visium_hd(slide_dir, bin_sizes=(16,))
    t = slide.tables["square_016um"]
    t.layers["counts"] = t.X.copy()
    sc.pp.normalize_total(t)
    with pytest.raises(ValueError, match=r"non-integer values in X .*layers\['counts'\]"):
        pixnet.tl.fit(slide, bin_size=16, genes=list(trained.genes[:2]), epochs=1, tiles_per_epoch=1, progress=False)
    sc.pp.log1p(t)
    with pytest.raises(ValueError, match=r"Table 'square_016um' holds non-integer .* log-transformed \(uns\['log1p'\]"):
        pixnet.tl.fit(slide, bin_size=16, genes=list(trained.genes[:2]), epochs=1, tiles_per_epoch=1, progress=False)
    pixnet.tl.predict(sdata, model=trained, bin_size=np.int64(8), progress=False, map=False)  # numpy's sizes too
    measured = sdata.tables["square_008um"]
    counts = measured.X.copy()
    sc.pp.log1p(measured)
    with pytest.raises(ValueError, match="log-transformed"):
        pixnet.tl.evaluate(sdata, bin_size=np.int64(8))
    measured.X = counts  # the counts put back: scanpy's mark stays, and is no cause to refuse (from the re-check)
    assert "log1p" in measured.uns and np.isfinite(pixnet.tl.evaluate(sdata, bin_size=8)["PCC@M"])
    with pytest.raises(KeyError, match=r"No layer 'lognrom' in the prediction \(its layers: \['counts', 'lognorm'\]"):
        pixnet.tl.evaluate(sdata, bin_size=8, layer="lognrom")
    with pytest.raises(ValueError, match="layer='counts' is not log-normalised"):
        pixnet.tl.evaluate(sdata, bin_size=8, layer="counts")


def test_cells_predicted_from_space_rangers_segmentation_can_be_written(sdata, trained, tmp_path):
    """spatialdata-io keys the cells' table with an enum; predict recorded it and anndata could not write it."""
    table = pixnet.tl.predict(sdata, model=trained, shapes="_cell_segmentations", progress=False, map=False)
    assert type(table.uns["pixnet"]["source_table"]) is str and all(type(k) is str for k in sdata.tables)
    pixnet.tl.evaluate(sdata, shapes="_cell_segmentations")
    assert type(table.uns["pixnet"]["evaluation"]["measured"]) is str
    sdata.write(tmp_path / "cells.zarr")
    assert "pixnet__cell_segmentations" in sd.read_zarr(tmp_path / "cells.zarr").tables
