"""Real-world inputs (issue 15): every form Space Ranger and the ecosystem produce reads, and nothing is silently wrong."""

import gzip
import shutil
import warnings
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scipy.io
from scipy import sparse

import pixnet

FIT = {"n_genes": 8, "epochs": 1, "tiles_per_epoch": 2, "batch_size": 1, "tile_px": 128, "context_px": 8}


@pytest.fixture
def outs(slide_dir, tmp_path) -> Path:
    """A writable copy of the small synthetic run."""
    return Path(shutil.copytree(slide_dir, tmp_path / "outs"))


def _bins(outs: Path, b: int = 16) -> Path:
    return outs / "binned_outputs" / f"square_{b:03d}um"


def _reference(slide_dir, b: int = 16):
    return pixnet.io.visium_hd(slide_dir, bin_sizes=(b,)).tables[f"square_{b:03d}um"]


def _same_table(t, ref):
    assert list(t.obs_names) == list(ref.obs_names)
    assert list(t.var_names) == list(ref.var_names)
    np.testing.assert_array_equal(t.X.toarray(), ref.X.toarray())
    np.testing.assert_allclose(t.obsm["spatial"], ref.obsm["spatial"])
    np.testing.assert_array_equal(t.obs["array_row"], ref.obs["array_row"])


# ---- kind 1: every form of each file ------------------------------------------------------------


def _positions_csv(outs, name, *, header: bool, gz: bool = False, **to_csv):
    spatial = _bins(outs) / "spatial"
    df = pd.read_parquet(spatial / "tissue_positions.parquet")
    (spatial / "tissue_positions.parquet").unlink()
    path = spatial / (name + (".gz" if gz else ""))
    with gzip.open(path, "wt") if gz else open(path, "w") as f:
        df.to_csv(f, header=header, **{"index": False, **to_csv})


@pytest.mark.parametrize(
    ("name", "header", "gz"),
    [
        ("tissue_positions.csv", True, False),  # Space Ranger 2 form, a header row
        ("tissue_positions.csv", True, True),
        ("tissue_positions_list.csv", False, False),  # Space Ranger 1 form, no header
        ("tissue_positions_list.csv", False, True),
    ],
)
def test_positions_as_csv(outs, slide_dir, name, header, gz):
    _positions_csv(outs, name, header=header, gz=gz)
    _same_table(_reference(slide_dir), pixnet.io.visium_hd(outs, bin_sizes=(16,)).tables["square_016um"])


@pytest.mark.parametrize("resaved", [{"index": True}, {"sep": "\t"}])  # pandas' index column; tab-separated
def test_positions_resaved_by_hand(outs, slide_dir, resaved):
    """Re-saved tables were called 'truncated or corrupt? Re-copy it' (from the io breaker)."""
    _positions_csv(outs, "tissue_positions.csv", header=True, **resaved)
    _same_table(_reference(slide_dir), pixnet.io.visium_hd(outs, bin_sizes=(16,)).tables["square_016um"])


def test_positions_and_counts_with_a_dataset_prefix(outs, slide_dir):
    folder = _bins(outs)
    (folder / "spatial" / "tissue_positions.parquet").rename(folder / "spatial" / "Run1_tissue_positions.parquet")
    (folder / "filtered_feature_bc_matrix.h5").rename(folder / "Run1_filtered_feature_bc_matrix.h5")
    _same_table(_reference(slide_dir), pixnet.io.visium_hd(outs, bin_sizes=(16,)).tables["square_016um"])


def _write_mtx(h5: Path, folder: Path, *, gz: bool, old_genes: bool):
    ref = pixnet.io._matrix.read_10x_h5(h5)
    folder.mkdir()
    opener, ext = (gzip.open, ".gz") if gz else (open, "")
    with opener(folder / f"matrix.mtx{ext}", "wb") as f:
        scipy.io.mmwrite(f, sparse.csr_matrix(ref.X.T, dtype=np.int32).tocoo())
    with opener(folder / f"barcodes.tsv{ext}", "wt") as f:
        f.write("\n".join(ref.obs_names) + "\n")
    feats = ref.var.assign(name=ref.var_names)
    cols = ["gene_ids", "name"] if old_genes else ["gene_ids", "name", "feature_types"]
    with opener(folder / f"{'genes' if old_genes else 'features'}.tsv{ext}", "wt") as f:
        feats[cols].to_csv(f, sep="\t", header=False, index=False)


@pytest.mark.parametrize(
    ("gz", "old_genes", "name"),
    [
        (True, False, "filtered_feature_bc_matrix"),
        (False, False, "filtered_feature_bc_matrix"),
        (True, True, "filtered_feature_bc_matrix"),
        (False, True, "filtered_feature_bc_matrix"),
        (True, False, "Run1_filtered_feature_bc_matrix"),  # a dataset-id prefix
        (True, False, "raw_feature_bc_matrix"),
    ],
)
def test_counts_as_a_matrix_folder(outs, slide_dir, gz, old_genes, name):
    folder = _bins(outs)
    _write_mtx(folder / "filtered_feature_bc_matrix.h5", folder / name, gz=gz, old_genes=old_genes)
    (folder / "filtered_feature_bc_matrix.h5").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the raw matrix is announced
        t = pixnet.io.visium_hd(outs, bin_sizes=(16,)).tables["square_016um"]
    _same_table(_reference(slide_dir), t)


def test_raw_counts_keep_the_bins_in_tissue(outs, slide_dir):
    folder = _bins(outs)
    pq = folder / "spatial" / "tissue_positions.parquet"
    pos = pd.read_parquet(pq)
    # A raw matrix lists every bin of the array: add two outside the tissue.
    extra = pd.DataFrame(
        {"barcode": ["s_016um_09998_09998-1", "s_016um_09999_09999-1"], "in_tissue": [0, 0],
         "array_row": [9998, 9999], "array_col": [9998, 9999],
         "pxl_row_in_fullres": [0.0, 1.0], "pxl_col_in_fullres": [0.0, 1.0]}
    )  # fmt: skip
    pd.concat([pos, extra]).astype(pos.dtypes.to_dict()).to_parquet(pq)
    h5 = folder / "filtered_feature_bc_matrix.h5"
    with h5py.File(h5, "r+") as f:
        g = f["matrix"]
        codes = np.concatenate([g["barcodes"][:], extra["barcode"].to_numpy().astype("S24")])
        del g["barcodes"]
        g["barcodes"] = codes
        indptr = np.concatenate([g["indptr"][:], [g["indptr"][-1]] * 2])
        del g["indptr"]
        g["indptr"] = indptr
        g["shape"][1] = len(codes)
    h5.rename(folder / "raw_feature_bc_matrix.h5")
    with pytest.warns(UserWarning, match="no filtered matrix"):
        t = pixnet.io.visium_hd(outs, bin_sizes=(16,)).tables["square_016um"]
    _same_table(_reference(slide_dir), t)


def test_missing_counts_and_positions_list_what_was_found(outs):
    folder = _bins(outs)
    (folder / "filtered_feature_bc_matrix.h5").unlink()
    (folder / "filtered_feature_bc_matrix").mkdir()
    (folder / "filtered_feature_bc_matrix" / "barcodes.tsv.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="raw_feature_bc_matrix.h5") as err:
        pixnet.io.visium_hd(outs, bin_sizes=(16,))
    assert "found: filtered_feature_bc_matrix/, spatial/" in str(err.value)
    assert "holds barcodes.tsv.gz" in str(err.value)
    (folder / "spatial" / "tissue_positions.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="tissue_positions_list.csv") as err:
        pixnet.io._files.read_positions(folder)
    assert "found in" in str(err.value) and "scalefactors_json.json" in str(err.value)


def test_scalefactors_of_a_bin_folder_borrowed_from_the_run(outs, slide_dir):
    (_bins(outs) / "spatial" / "scalefactors_json.json").unlink()
    with pytest.warns(UserWarning, match="scalefactors_json.json is missing"):
        s = pixnet.io.visium_hd(outs, bin_sizes=(16,))
    _same_table(_reference(slide_dir), s.tables["square_016um"])


def test_run_with_only_some_bin_sizes_reads_what_it_has(outs, slide_dir):
    shutil.rmtree(_bins(outs, 2))
    s = pixnet.io.visium_hd(outs)  # by default, the sizes the run has
    assert {"square_008um", "square_016um"} <= set(s.tables) and "square_002um" not in s.tables
    with pytest.raises(ValueError, match="available: 8, 16"):
        pixnet.io.visium_hd(outs, bin_sizes=(2, 8))


def test_a_bin_folder_copied_empty_is_skipped_unless_asked_for(outs):
    shutil.rmtree(_bins(outs, 2))
    _bins(outs, 2).mkdir()
    with pytest.warns(UserWarning, match="Skipped the 2 um bins"):
        s = pixnet.io.visium_hd(outs)
    assert "square_002um" not in s.tables and s.attrs["pixnet"]["bin_tables"] == {
        "8": "square_008um",
        "16": "square_016um",
    }
    with pytest.raises(FileNotFoundError, match="No counts matrix"):
        pixnet.io.visium_hd(outs, bin_sizes=(2,))


# ---- kind 4: an optional part missing or empty ---------------------------------------------------


@pytest.mark.parametrize("what", ["empty", "no_geojson", "no_matrix"])
def test_incomplete_segmentation_is_skipped_with_a_warning(outs, what):
    seg = outs / "segmented_outputs"
    if what == "empty":
        shutil.rmtree(seg)
        seg.mkdir()
    else:
        (seg / ("cell_segmentations.geojson" if what == "no_geojson" else "filtered_feature_cell_matrix.h5")).unlink()
    with pytest.warns(UserWarning, match="Skipped the cell segmentation"):
        s = pixnet.io.visium_hd(outs, bin_sizes=(16,))
    assert "square_016um" in s.tables and "cell_segmentations" not in s.tables


def test_unreadable_segmentation_is_skipped_with_a_warning(outs):
    (outs / "segmented_outputs" / "cell_segmentations.geojson").write_text("{not json")
    with pytest.warns(UserWarning, match="Skipped the cell segmentation"):
        s = pixnet.io.visium_hd(outs, bin_sizes=(16,))
    assert "square_016um" in s.tables


def test_missing_downscaled_images_are_not_needed(outs):
    for png in (outs / "spatial").glob("*.png"):
        png.unlink()
    s = pixnet.io.visium_hd(outs, bin_sizes=(16,))
    assert list(s.images) == ["_full_image"]


def test_image_found_beside_an_empty_microscope_folder(outs):
    tif = outs / "microscope_image" / "tissue_image.tif"
    tif.rename(outs / "tissue_image.tif")
    s = pixnet.io.visium_hd(outs, bin_sizes=(16,))
    assert "_full_image" in s.images


# ---- kind 5: SpatialData made by other tools --------------------------------------------------------


def _sdio(path, **kw):
    import spatialdata_io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return spatialdata_io.visium_hd(path, load_segmentations_only=False, **kw)


def _fit_predict_evaluate(s, bin_size=16):
    model = pixnet.tl.fit(s, bin_size=bin_size, progress=False, **FIT)
    pred = pixnet.tl.predict(s, bin_size=bin_size, progress=False)
    scores = pixnet.tl.evaluate(s, bin_size=bin_size)
    return model, pred, scores


def _measured_one_to_one(s, pred, scores, name="square_016um"):
    meas = s.tables[name]
    assert list(pred.obs_names) == list(meas.obs_names)  # the measured bins, not a new grid
    np.testing.assert_allclose(pred.obsm["spatial"], meas.obsm["spatial"], atol=0.5)
    assert scores["n_bins"] == meas.n_obs and np.isfinite(scores["PCC@M"])


@pytest.mark.parametrize("bins_as_squares", [True, False], ids=["squares", "circles"])
def test_spatialdata_io_reader_fit_predict_evaluate(slide_dir, bins_as_squares):
    s = _sdio(slide_dir, bin_size=[16], bins_as_squares=bins_as_squares)
    _, pred, scores = _fit_predict_evaluate(s)
    _measured_one_to_one(s, pred, scores)
    # The same bins as pixnet's own reader: the fitted grid is the recorded one.
    grid = pixnet.data.grids.table_grid(s, "square_016um", "")
    ref = pixnet.io.read_table_grid(_reference(slide_dir))
    np.testing.assert_allclose(grid.affine, ref.affine, atol=1e-3)
    assert grid.um_per_px == pytest.approx(ref.um_per_px, rel=1e-4)


def test_spatialdata_io_bins_as_labels(slide_dir):
    s = _sdio(slide_dir, bin_size=[16], annotate_table_by_labels=True)
    assert s.tables["square_016um"].uns["spatialdata_attrs"]["region"] == "_square_016um_labels"
    model, pred, scores = _fit_predict_evaluate(s)
    _measured_one_to_one(s, pred, scores)  # on Space Ranger's centres: spatialdata-io puts them on pixel corners
    assert pixnet.pl.compare(s, model.genes[:1], bin_size=16, show=False).shape == (2, 1)  # a KeyError before
    # moved as a whole (each element's transformation wrapped once: spatialdata-io's elements share one dict)
    from spatialdata.transformations import Sequence, Translation, get_transformation, set_transformation

    old = {name: get_transformation(el, "") for _, name, el in s.gen_spatial_elements()}
    for _, name, el in s.gen_spatial_elements():
        set_transformation(el, Sequence([old[name], Translation([100, 50], axes=("x", "y"))]), "")
    moved = pixnet.tl.predict(s, model=model, bin_size=16, key_added="moved", progress=False, map=False)
    # half a bin off before: the pixel's centre was taken for spatialdata-io's corners once the labels moved
    shift = np.asarray(moved.obsm["spatial"]) - np.asarray(pred.obsm["spatial"])
    np.testing.assert_allclose(shift, np.broadcast_to([100.0, 50.0], shift.shape), atol=1e-6)
    assert np.isfinite(pixnet.tl.evaluate(s, bin_size=16, key_added="moved")["PCC@M"])
    plt.close("all")


def test_store_written_and_read_back(slide_dir, tmp_path):
    import spatialdata

    for s in (_sdio(slide_dir, bin_size=[16]), pixnet.io.visium_hd(slide_dir, bin_sizes=(16,))):
        path = tmp_path / f"s{len(list(tmp_path.iterdir()))}.zarr"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s.write(path)
        back = spatialdata.read_zarr(path)
        _, pred, scores = _fit_predict_evaluate(back)
        _measured_one_to_one(back, pred, scores)


def test_sopa_style_cells_table(slide_dir):
    # sopa writes cells as polygons with string ids, a table with region/instance keys and centroids in obsm.
    import geopandas as gpd
    import shapely
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    s = pixnet.io.visium_hd(slide_dir, bin_sizes=(16,))
    t = s.tables["square_016um"][::3].copy()
    xy = t.obsm["spatial"]
    ids = [f"cell-{i}" for i in range(t.n_obs)]
    cells = gpd.GeoDataFrame(geometry=shapely.buffer(shapely.points(xy), 20.0), index=pd.Index(ids, name="cell_id"))
    s.shapes["cellpose_boundaries"] = ShapesModel.parse(cells, transformations={"global": Identity()})
    table = pixnet.io._matrix.ad.AnnData(t.X.copy(), var=t.var.copy(), obs=pd.DataFrame(index=pd.Index(ids)))
    table.obs["cell_id"] = ids
    table.obs["region"] = pd.Categorical(["cellpose_boundaries"] * t.n_obs)
    table.obsm["spatial"] = xy
    s.tables["table"] = TableModel.parse(
        table, region="cellpose_boundaries", region_key="region", instance_key="cell_id"
    )
    pixnet.tl.fit(s, table="table", bin_size=None, progress=False, **FIT)
    pred = pixnet.tl.predict(s, shapes="cellpose_boundaries", progress=False)
    scores = pixnet.tl.evaluate(s, shapes="cellpose_boundaries")
    assert list(pred.obs_names) == ids and scores["n_bins"] == len(ids)


def test_evaluate_refuses_rows_named_alike_in_other_places(slide_dir, trained):
    # The bug: a grid laid anew reuses the measured barcodes for bins elsewhere; evaluate scored them.
    s = pixnet.io.visium_hd(slide_dir, bin_sizes=(16,))
    pixnet.tl.predict(s, model=trained, bin_size=16, progress=False)
    pred = s.tables["pixnet_square_016um"]
    pred.obsm["spatial"] = pred.obsm["spatial"] + 57 / 0.2737  # 57 um away, as in the report
    with pytest.raises(ValueError, match="lie in different places"):
        pixnet.tl.evaluate(s, bin_size=16)


def test_evaluate_pairs_by_place_after_a_new_grid(slide_dir, trained):
    # Without the measured table, predict lays a grid on the image whose names reuse the barcodes elsewhere.
    s = _sdio(slide_dir, bin_size=[16])
    meas = s.tables.pop("square_016um")
    pixnet.tl.predict(s, model=trained, bin_size=16, um_per_px=0.2737, progress=False)
    s.tables["square_016um"] = meas
    assert len(s.tables["pixnet_square_016um"].obs_names.intersection(meas.obs_names)) >= 2
    with pytest.raises(ValueError, match="lie in different places"):
        pixnet.tl.evaluate(s, bin_size=16)


# ---- kind 3: image files told by content, any channel order ------------------------------------------


def _rgb(h=96, w=128):
    return (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)


def _read(path):
    from spatialdata.transformations import Identity

    from pixnet.io._image import read_image

    el = read_image(Path(path), transformations={"global": Identity()})
    return np.moveaxis(pixnet.data.image_levels(el)[0].data.compute(), 0, -1)


def _write_tiff(path, data, **kw):
    import tifffile

    tifffile.imwrite(path, data, **kw)


def _write_pil(path, data, fmt, mode=None):
    from PIL import Image

    im = Image.fromarray(data)
    (im.convert(mode) if mode else im).save(path, format=fmt)


RGB_FORMS = {
    "planar tiff (c, y, x)": lambda p, a: _write_tiff(
        p, np.moveaxis(a, -1, 0), photometric="rgb", planarconfig="separate"
    ),
    "tiff (y, x, c)": lambda p, a: _write_tiff(p, a, photometric="rgb"),
    "tiled bigtiff": lambda p, a: _write_tiff(p, a, photometric="rgb", bigtiff=True, tile=(32, 32)),
    "ome-tiff (c, y, x)": lambda p, a: _write_tiff(p, np.moveaxis(a, -1, 0), ome=True, metadata={"axes": "CYX"}),
    "pyramidal tiff, as an svs": lambda p, a: _pyramid(p, a),
    "rgba tiff": lambda p, a: _write_tiff(p, np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], -1)),
    "jpeg-compressed tiff": lambda p, a: _write_tiff(p, a, photometric="rgb", compression="jpeg"),
    "png": lambda p, a: _write_pil(p, a, "PNG"),
    "rgba png": lambda p, a: _write_pil(p, a, "PNG", "RGBA"),
    "uint16 tiff": lambda p, a: _write_tiff(p, a.astype(np.uint16) * 257, photometric="rgb"),
}


def _pyramid(path, a):
    import tifffile

    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(a, photometric="rgb", tile=(32, 32), subifds=1)
        tw.write(a[::2, ::2], photometric="rgb", tile=(32, 32), subfiletype=1)


@pytest.mark.parametrize("form", list(RGB_FORMS))
@pytest.mark.parametrize("suffix", [".tif", ".svs", ".img", ""])
def test_rgb_images_read_by_content_whatever_the_suffix(tmp_path, form, suffix):
    a = _rgb()
    path = tmp_path / f"slide{suffix}"
    RGB_FORMS[form](path, a)
    got = _read(path)
    assert got.shape == a.shape
    if form == "uint16 tiff":
        np.testing.assert_array_equal(got, a.astype(np.uint16) * 257)
    elif "jpeg" not in form:
        np.testing.assert_array_equal(got, a)


def test_jpeg_reads(tmp_path):
    yy, xx = np.mgrid[:96, :128]
    a = np.stack([yy * 2, xx * 2, (yy + xx)], -1).astype(np.uint8)  # smooth: JPEG keeps it close
    _write_pil(tmp_path / "x.tif", a, "JPEG")  # a JPEG named .tif
    got = _read(tmp_path / "x.tif")
    assert got.shape == a.shape and np.abs(got.astype(int) - a).mean() < 20


NOT_RGB = {
    "grey png": (lambda p: _write_pil(p, _rgb(), "PNG", "L"), "single-channel"),
    "grey tiff": (lambda p: _write_tiff(p, _rgb()[..., 0]), "single-channel"),
    "16-bit grey png": (lambda p: _write_pil(p, _rgb()[..., 0].astype(np.uint16) * 200, "PNG"), "single-channel"),
    "5-channel tiff": (lambda p: _write_tiff(p, np.zeros((5, 64, 64), np.uint8)), "5 channels"),
    "a z-stack": (lambda p: _write_tiff(p, np.zeros((4, 2, 64, 64, 3), np.uint8)), "not a 2-D colour image"),
    "a text file": (lambda p: Path(p).write_text("not an image"), "not an image pixnet can read"),
}


@pytest.mark.parametrize("form", list(NOT_RGB))
def test_images_that_are_not_rgb_are_refused_plainly(tmp_path, form):
    write, match = NOT_RGB[form]
    write(tmp_path / "x.tif")
    with pytest.raises(ValueError, match=match) as err:
        _read(tmp_path / "x.tif")
    assert "needs an RGB H&E image" in str(err.value)


def test_png_is_decoded_once_however_many_tiles_are_read(tmp_path, monkeypatch):
    from spatialdata.transformations import Identity

    from pixnet.io import _image

    _write_pil(tmp_path / "x.png", _rgb(300, 500), "PNG")
    calls = []
    decode = _image._decode
    monkeypatch.setattr(_image, "_decode", lambda *a: calls.append(a) or decode(*a))
    el = _image.read_image(tmp_path / "x.png", transformations={"global": Identity()})
    assert not calls  # nothing decoded at read time
    work = pixnet.data.SlideImage(el, cs="global", cs_um_per_px=0.5, work_um_per_px=0.5)
    tiles = [work.read(y, x, 64, 64) for y in range(0, 300, 40) for x in range(0, 500, 40)]
    coarse = pixnet.data.SlideImage(el, cs="global", cs_um_per_px=0.5, work_um_per_px=4.0).load()
    assert len(tiles) > 50 and coarse.shape == (38, 63, 3)
    assert len(calls) == 1


def test_planar_tiff_as_the_slide_image(outs):
    import tifffile

    tif = outs / "microscope_image" / "tissue_image.tif"
    a = tifffile.imread(tif)
    tif.unlink()
    _write_tiff(
        outs / "microscope_image" / "scan.btf", np.moveaxis(a, -1, 0), photometric="rgb", planarconfig="separate"
    )
    (outs / "microscope_image" / "notes.txt").write_text("scanned 2024")
    s = pixnet.io.visium_hd(outs, bin_sizes=(16,))
    np.testing.assert_array_equal(
        pixnet.data.image_levels(s.images["_full_image"])[0].data.compute(), np.moveaxis(a, -1, 0)
    )


# ---- kind 2: the image checked against the bins --------------------------------------------------------


def test_hires_image_given_as_full_resolution_is_named_and_refused(slide_dir):
    hires = slide_dir / "spatial" / "tissue_hires_image.png"
    with pytest.warns(UserWarning, match=r"looks like tissue_hires_image.png \(0.5 of full resolution\)"):
        s = pixnet.io.visium_hd(slide_dir, bin_sizes=(16,), fullres_image_file=hires)
    t = s.tables["square_016um"]
    assert 0 < t.obs["pixnet_on_image"].sum() < 0.5 * t.n_obs  # marked
    with pytest.raises(ValueError, match=r"lie beyond the image.*Scale\(\[2, 2\]") as err:
        pixnet.tl.fit(s, bin_size=16, progress=False, **FIT)
    assert "will not train on" in str(err.value)


def test_hires_image_given_to_predict_is_refused(slide_dir, trained):
    from spatialdata.transformations import Identity, set_transformation

    s = pixnet.io.visium_hd(slide_dir, bin_sizes=(16,))
    s.images["_full_image"] = s.images.pop("_hires_image")  # as a user who picked the wrong element would
    set_transformation(s.images["_full_image"], Identity(), "global")
    with pytest.raises(ValueError, match="will not predict"):
        pixnet.tl.predict(s, model=trained, bin_size=16, progress=False)


def test_spatialdata_io_with_the_hires_image_as_the_slide(slide_dir, trained):
    s = _sdio(slide_dir, bin_size=[16], fullres_image_file=slide_dir / "spatial" / "tissue_hires_image.png")
    with pytest.raises(ValueError, match="looks like _hires_image"):
        pixnet.tl.predict(s, model=trained, bin_size=16, progress=False)


def _cropped(s, keep: float):
    """The slide with its image cut to the first ``keep`` of its width: bins beyond have no pixels."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    img = s.images["_full_image"]
    level = pixnet.data.image_levels(img)[0]
    cut = level.isel(x=slice(0, int(level.sizes["x"] * keep)))
    tr = get_transformation(level, get_all=True)
    s.images["_full_image"] = Image2DModel.parse(cut.data, dims=("c", "y", "x"), transformations=tr)
    return s


def test_bins_partly_off_the_image_are_marked_left_out_and_not_scored(slide_dir, caplog):
    s = _cropped(pixnet.io.visium_hd(slide_dir, bin_sizes=(16,)), 0.7)
    width = pixnet.data.image_levels(s.images["_full_image"])[0].sizes["x"]
    on = s.tables["square_016um"].obsm["spatial"][:, 0] < width
    assert 0 < (~on).sum() < 0.5 * len(on)
    with pytest.warns(UserWarning, match="left out of training"):
        model = pixnet.tl.fit(s, bin_size=16, progress=False, **FIT)
    p = model.training["params"]
    assert p["n_train_bins"] + p["n_val_bins"] == on.sum()
    with pytest.warns(UserWarning, match="marked False"):
        pred = pixnet.tl.predict(s, model=model, bin_size=16, progress=False)
    np.testing.assert_array_equal(pred.obs["pixnet_on_image"].to_numpy(), on)
    with caplog.at_level("WARNING"):
        scores = pixnet.tl.evaluate(s, bin_size=16)
    assert scores["n_bins"] == on.sum() and "are not scored" in caplog.text


# ---- the command line reads only the bins it needs -------------------------------------------------------


def test_cli_on_a_run_with_only_8_and_16_um_bins(outs, tmp_path, trained, capsys, caplog):
    from pixnet.cli import main

    shutil.rmtree(_bins(outs, 2))
    trained.save(tmp_path / "m")
    result = tmp_path / "r.zarr"
    args = ["-q", "predict", str(outs), "--model", str(tmp_path / "m"), "--out", str(result)]
    assert main([*args, "--bin-size", "8"]) == 0
    assert main(["evaluate", str(result), "--bin-size", "8"]) == 0
    assert '"PCC@M"' in capsys.readouterr().out
    assert main([*args, "--bin-size", "4", "--overwrite"]) == 0  # a new grid on the 2-um-less run's array
    capsys.readouterr()
    assert main(["-q", "fit", str(outs), "--bin-size", "2", "--out", str(tmp_path / "m2"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "available: 8, 16" in err and "--bin-size" in err and "bin_sizes=" not in err
    assert main(["evaluate", str(result), "--bin-size", "16"]) == 2
    assert "--bin-size" in capsys.readouterr().err
    # reading the store's labels (the 4 um grid's), ome_zarr's "no parent found" warnings stay out of the log
    assert not [r for r in caplog.records if r.name.startswith("ome_zarr")]


def test_truncated_downscaled_image_is_skipped_with_a_warning(outs):
    png = outs / "spatial" / "tissue_hires_image.png"
    png.write_bytes(png.read_bytes()[:2000])
    with pytest.warns(UserWarning, match="Skipped tissue_hires_image.png"):
        s = pixnet.io.visium_hd(outs, bin_sizes=(16,))
    assert "_hires_image" not in s.images and "_lowres_image" in s.images


def test_outs_found_from_inside_and_archives_named(outs, tmp_path):
    assert "square_016um" in pixnet.io.visium_hd(outs / "binned_outputs", bin_sizes=(16,)).tables
    assert "square_016um" in pixnet.io.visium_hd(_bins(outs), bin_sizes=(16,)).tables
    packed = tmp_path / "download"
    packed.mkdir()
    (packed / "Visium_HD_binned_outputs.tar.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="extract it there first"):
        pixnet.io.visium_hd(packed)


def test_spatialdata_io_with_a_dataset_id(prefixed_dir, tmp_path):
    s = _sdio(prefixed_dir, bin_size=[16])
    assert "Visium_HD_Test_square_016um" in s.shapes
    _, pred, scores = _fit_predict_evaluate(s)
    _measured_one_to_one(s, pred, scores)


def test_a_scale_that_disagrees_with_the_bins_is_named(slide_dir):
    from pixnet.data.slide import resolve_slide

    s = pixnet.io.visium_hd(slide_dir, bin_sizes=(16,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_slide(s).um_per_px == pytest.approx(0.2737)  # consistent: silent
    with pytest.warns(UserWarning, match=r"bins measure 0.2737.*um_per_px=0.2737"):
        resolve_slide(s, um_per_px=0.5)
    sdio = _sdio(slide_dir, bin_size=[16])
    assert resolve_slide(sdio).um_per_px == pytest.approx(0.2737, rel=1e-3)  # from the bins, no attrs


def test_a_bin_folder_with_spatial_flattened(outs, slide_dir):
    folder = _bins(outs)
    for f in (folder / "spatial").iterdir():
        f.rename(folder / f.name)
    (folder / "spatial").rmdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing borrowed: the bin folder's own files are found
        t = pixnet.io.visium_hd(outs, bin_sizes=(16,), load_segmentations=False).tables["square_016um"]
    _same_table(_reference(slide_dir), t)


@pytest.mark.parametrize("scale_factors", [None, [2, 2]])
def test_a_zarr_image_is_read_straight_from_zarr_with_the_values_of_dask(tmp_path, scale_factors):
    """Reads of an image stored in zarr skip dask's graph (data.image.zarr_source) and zarr's event loop; the pixels are dask's."""
    import spatialdata as sd
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale

    from pixnet.data.image import zarr_source
    from pixnet.data.zarr_window import LocalWindows

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(3, 700, 900), dtype=np.uint8)
    el = Image2DModel.parse(img, dims=("c", "y", "x"), chunks=(3, 128, 128), scale_factors=scale_factors,
                            transformations={"global": Scale([0.5, 0.5], axes=("y", "x"))})  # fmt: skip
    sd.SpatialData(images={"he": el}).write(tmp_path / "s.zarr")
    back = sd.read_zarr(tmp_path / "s.zarr").images["he"]
    for work_um in (0.25, 0.6, 1.1):
        direct = pixnet.data.SlideImage(back, cs="global", cs_um_per_px=1.0, work_um_per_px=work_um)
        # read by pixnet.data.zarr_window from the chunk files (spatialdata writes zarr v3, zstd)
        assert all(isinstance(z, LocalWindows) for z in direct._zarr[: len(direct._zarr) - (work_um > 1)])
        via_dask = pixnet.data.SlideImage(back, cs="global", cs_um_per_px=1.0, work_um_per_px=work_um)
        via_dask._zarr = [None] * len(via_dask._zarr)
        for y, x, h, w in [(0, 0, 64, 64), (-30, 50, 96, 128), (200, 300, 160, 160), (500, 700, 300, 300)]:
            assert np.array_equal(direct.read(y, x, h, w), via_dask.read(y, x, h, w))
    # anything but the plain zarr read (rechunked, in memory) is read through dask as before
    data = back.data if scale_factors is None else back["scale0"]["image"].data
    assert zarr_source(data) is not None
    assert zarr_source(data.rechunk((3, 64, 64))) is None and zarr_source(data + 0) is None
    assert zarr_source(np.asarray(data)) is None


def test_a_read_at_the_images_own_scale_is_its_pixels_channels_last_and_white_outside():
    """SlideImage.read moves (c, y, x) into (y, x, c) pixel for pixel; the window past the image's edges is white."""
    from spatialdata.models import Image2DModel

    rng = np.random.default_rng(11)
    img = rng.integers(0, 255, size=(3, 40, 50), dtype=np.uint8)
    work = pixnet.data.SlideImage(Image2DModel.parse(img, dims=("c", "y", "x")), cs="global", cs_um_per_px=1.0,
                                  work_um_per_px=1.0)  # fmt: skip
    got = work.read(-5, 30, 20, 30)  # rows -5..15, columns 30..60: 5 rows above, 10 columns right of the image
    want = np.full((20, 30, 3), 255, np.uint8)
    want[5:, :20] = np.moveaxis(img[:, :15, 30:], 0, -1)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fmt", ["TIFF", "PNG"])
def test_a_palette_image_reads_as_its_colours(tmp_path, fmt):
    """Indexed colours (PIL's mode P): the TIFF was refused as a 'single-channel (greyscale)' image."""
    from PIL import Image
    from spatialdata.transformations import Identity

    from pixnet.io._image import read_image

    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, :32], rgb[:, 32:] = (200, 80, 160), (240, 200, 220)  # two H&E-like colours
    _write_pil(tmp_path / "he", rgb, fmt, "P")
    got = read_image(tmp_path / "he", transformations={"global": Identity()})
    colours = np.asarray(Image.open(tmp_path / "he").convert("RGB"))  # through the file's own palette
    np.testing.assert_array_equal(np.moveaxis(np.asarray(got.data), 0, -1), colours)


def test_hest_refuses_a_pixel_size_that_is_not_positive(tmp_path):
    """um_per_px=0 fell back to the metadata silently; -1 was blamed on the metadata."""
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="um_per_px must be a positive number"):
            pixnet.io.hest(tmp_path, "S1", um_per_px=bad)
