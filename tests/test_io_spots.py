"""Spot-level readers on files the tests write: legacy ST (HER2ST, STNet), iStar, HEST-1k, plain Visium, spots."""

import json
import logging
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import shapely
import tifffile
from PIL import Image
from scipy import sparse

import pixnet

GENES = [f"G{i}" for i in range(12)]


def _he(path, h, w, seed=0):
    """A textured H&E-like RGB image (JPEG, PNG or TIFF by suffix)."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(200, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] //= 2  # "tissue"
    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, img, tile=(64, 64))
    else:
        Image.fromarray(img).save(path)
    return path


def _counts(ids, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.poisson(3.0, (len(ids), len(GENES))), index=pd.Index(ids, name="spot"), columns=GENES)


def _grid(n, pitch_px, offset=40.0):
    """Legacy ST array coordinates (1-based) and their pixel centres on a square grid."""
    ax, ay = np.meshgrid(np.arange(1, n + 1), np.arange(1, n + 1))
    ax, ay = ax.ravel(), ay.ravel()
    return ax, ay, offset + (ax - 1) * pitch_px, offset + (ay - 1) * pitch_px


def _radius(sdata) -> float:
    r = sdata.shapes["spots"]["radius"].to_numpy()
    assert np.allclose(r, r[0])
    return float(r[0])


def _check(sdata, *, n, um_per_px, diameter_um, counts: pd.DataFrame | None = None):
    attrs = sdata.attrs["pixnet"]
    assert attrs["table"] == "table" and attrs["shapes"] == "spots" and attrs["image"] in sdata.images
    assert np.isclose(attrs["um_per_px"], um_per_px, rtol=0.01)
    assert np.isclose(attrs["spot_diameter_um"], diameter_um, rtol=0.01)
    t = sdata.tables["table"]
    assert t.n_obs == n == len(sdata.shapes["spots"])
    assert t.uns["spatialdata_attrs"]["region"] == "spots"
    if counts is not None:  # raw counts preserved, row by row
        np.testing.assert_array_equal(np.asarray(t[:, GENES].X.todense()), counts.loc[t.obs_names, GENES].to_numpy())
    return t


# ---- legacy ST: HER2ST selection tables and STNet spot files --------------------------------------


@pytest.fixture
def her2st(tmp_path):
    """HER2ST-like files: 6 x 6 spots 200 um apart at 2.5 um/px; 4 not selected; 2 selected without counts."""
    ax, ay, px, py = _grid(6, pitch_px=80.0)
    sel = pd.DataFrame({"x": ax, "y": ay, "new_x": ax + 0.01, "new_y": ay, "pixel_x": px, "pixel_y": py})
    sel["selected"] = 1
    sel.loc[:3, "selected"] = 0
    ids = [f"{a}x{b}" for a, b in zip(ax, ay)]
    counts = _counts(ids[:-2])
    counts.to_csv(tmp_path / "A1.tsv.gz", sep="\t")
    sel.to_csv(tmp_path / "A1_selection.tsv", sep="\t", index=False)
    _he(tmp_path / "A1.jpg", 520, 520)
    return tmp_path, counts


def test_legacy_st_her2st_layout(her2st):
    d, counts = her2st
    sdata = pixnet.io.legacy_st(image=d / "A1.jpg", counts=d / "A1.tsv.gz", spots_file=d / "A1_selection.tsv")
    _check(sdata, n=36 - 4 - 2, um_per_px=2.5, diameter_um=100, counts=counts)
    assert np.isclose(_radius(sdata), 100 / 2 / 2.5, rtol=0.01)  # 20 px
    assert sdata.attrs["pixnet"]["image"] == "A1_image"
    every = pixnet.io.legacy_st(
        image=d / "A1.jpg", counts=d / "A1.tsv.gz", spots_file=d / "A1_selection.tsv", only_selected=False
    )
    assert every.tables["table"].n_obs == 34


def test_legacy_st_stnet_layout(tmp_path):
    ax, ay, px, py = _grid(5, pitch_px=100.0)  # 2 um/px
    ids = [f"{a}x{b}" for a, b in zip(ax, ay)]
    pd.DataFrame({"X": px, "Y": py}, index=ids).to_csv(tmp_path / "spots_BC1.csv.gz")
    counts = _counts(ids, seed=1)
    counts.to_csv(tmp_path / "BC1_stdata.tsv.gz", sep="\t")
    _he(tmp_path / "BC1.tif", 500, 500)
    sdata = pixnet.io.legacy_st(
        image=tmp_path / "BC1.tif", counts=tmp_path / "BC1_stdata.tsv.gz", spots_file=tmp_path / "spots_BC1.csv.gz"
    )
    _check(sdata, n=25, um_per_px=2.0, diameter_um=100, counts=counts)
    # the spot file re-saved with tabs under its .csv name reads the same
    pd.DataFrame({"X": px, "Y": py}, index=ids).to_csv(tmp_path / "spots_tabs.csv", sep="\t")
    again = pixnet.io.legacy_st(image=tmp_path / "BC1.tif", counts=counts, spots_file=tmp_path / "spots_tabs.csv")
    np.testing.assert_allclose(again.tables["table"].obsm["spatial"], sdata.tables["table"].obsm["spatial"])
    assert np.isclose(_radius(sdata), 25.0, rtol=0.01)
    xy = sdata.tables["table"].obsm["spatial"]
    np.testing.assert_allclose(xy, np.c_[px, py])


def test_legacy_st_refuses_other_spot_files(tmp_path):
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match="not a legacy ST spot file"):
        pixnet.io.legacy_st(image=tmp_path / "x.jpg", counts=tmp_path / "c.tsv", spots_file=tmp_path / "s.tsv")


# ---- iStar folders --------------------------------------------------------------------------------


@pytest.fixture
def istar_dir(tmp_path):
    d = tmp_path / "sampleA"
    d.mkdir()
    _, _, px, py = _grid(5, pitch_px=60.0)
    ids = [f"spot{i}" for i in range(25)]
    counts = _counts(ids, seed=2)
    counts.to_csv(d / "cnts.tsv", sep="\t")
    pd.DataFrame({"spot": ids, "x": px, "y": py}).to_csv(d / "locs-raw.tsv", sep="\t", index=False)
    (d / "pixel-size-raw.txt").write_text("0.5\n")
    (d / "radius-raw.txt").write_text("55.0\n")  # 55 px x 0.5 um = 27.5 um radius: a 55 um spot
    _he(d / "he-raw.jpg", 400, 400)
    return d, counts


def test_istar_folder(istar_dir):
    d, counts = istar_dir
    sdata = pixnet.io.istar(d)
    _check(sdata, n=25, um_per_px=0.5, diameter_um=55.0, counts=counts)
    assert np.isclose(_radius(sdata), 55.0)
    assert sdata.attrs["pixnet"]["image"] == "sampleA_image"


@pytest.mark.parametrize("name", ["radius-raw.txt", "pixel-size-raw.txt", "locs-raw.tsv", "cnts.tsv", "he-raw.jpg"])
def test_istar_missing_file_names_it(istar_dir, name):
    d, _ = istar_dir
    (d / name).unlink()
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.")):
        pixnet.io.istar(d)


def test_istar_bad_number(istar_dir):
    d, _ = istar_dir
    (d / "pixel-size-raw.txt").write_text("unknown")
    with pytest.raises(ValueError, match="one number"):
        pixnet.io.istar(d)


# ---- HEST-1k samples -------------------------------------------------------------------------------


def _hest(root, sid, *, meta: dict, pitch_px: float, n=5, seed=3):
    for sub in ("st", "wsis", "metadata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _, _, px, py = _grid(n, pitch_px=pitch_px, offset=60.0)
    ids = [f"{i:04d}x{j:04d}" for i in range(n) for j in range(n)]
    counts = _counts(ids, seed=seed)
    adata = ad.AnnData(sparse.csr_matrix(counts.to_numpy(np.float32)), obs=pd.DataFrame(index=ids))
    adata.var_names = GENES
    adata.obsm["spatial"] = np.c_[px, py]
    adata.obs["pxl_col_in_fullres"], adata.obs["pxl_row_in_fullres"] = px, py
    adata.uns["spatial"] = {"ST": {"images": {"downscaled_fullres": np.zeros((4, 4, 3), np.uint8)}}}
    adata.write_h5ad(root / "st" / f"{sid}.h5ad")
    size = int(2 * 60 + (n - 1) * pitch_px)
    _he(root / "wsis" / f"{sid}.tif", size, size)
    (root / "metadata" / f"{sid}.json").write_text(json.dumps(meta))
    return counts


def test_hest_visium_sample(tmp_path):
    meta = {"st_technology": "Visium", "pixel_size_um_estimated": 1.0, "pixel_size_um_embedded": 0.98,
            "spot_diameter": 55.0, "inter_spot_dist": 100.0, "fullres_px_width": 520, "fullres_px_height": 520}  # fmt: skip
    counts = _hest(tmp_path, "TENX0", meta=meta, pitch_px=100.0)
    sdata = pixnet.io.hest(tmp_path, "TENX0")
    _check(sdata, n=25, um_per_px=1.0, diameter_um=55.0, counts=counts)
    assert np.isclose(_radius(sdata), 27.5)
    assert "spatial" not in sdata.tables["table"].uns
    # the same sample from its three files, and an override of the pixel size
    direct = pixnet.io.hest(
        st=tmp_path / "st" / "TENX0.h5ad", wsi=tmp_path / "wsis" / "TENX0.tif", metadata=meta, um_per_px=0.5
    )
    assert np.isclose(direct.attrs["pixnet"]["um_per_px"], 0.5) and np.isclose(_radius(direct), 55.0)


def test_hest_visium_hd_sample_gives_squares(tmp_path, caplog):
    # HEST-1k's metadata give Visium HD's 2 um bins, but the AnnData holds 128 um pseudo-spots
    meta = {"st_technology": "Visium HD", "pixel_size_um_estimated": 2.0, "spot_diameter": 2, "inter_spot_dist": 2}
    counts = _hest(tmp_path, "TENX1", meta=meta, pitch_px=64.0)
    with caplog.at_level(logging.WARNING, logger="pixnet.io.hest"):
        sdata = pixnet.io.hest(tmp_path, "TENX1")
    assert "128.0 um squares" in caplog.text
    _check(sdata, n=25, um_per_px=2.0, diameter_um=128.0, counts=counts)
    geom = sdata.shapes["spots"].geometry
    assert set(shapely.get_type_id(geom.to_numpy())) == {3}  # polygons
    np.testing.assert_allclose(geom.area, 64.0**2)  # 128 um / 2 um per px
    np.testing.assert_allclose(shapely.get_coordinates(geom.centroid), sdata.tables["table"].obsm["spatial"])


def test_hest_metadata_without_pixel_size_lists_its_keys(tmp_path):
    _hest(tmp_path, "S1", meta={"st_technology": "Visium", "magnification": "40x"}, pitch_px=100.0)
    with pytest.raises(KeyError, match="magnification"):
        pixnet.io.hest(tmp_path, "S1")
    with pytest.raises(FileNotFoundError, match="S2.h5ad"):
        pixnet.io.hest(tmp_path, "S2")


def test_hest_unknown_spot_size(tmp_path):
    _hest(tmp_path, "X1", meta={"st_technology": "Xenium", "pixel_size_um_estimated": 0.5}, pitch_px=100.0)
    with pytest.raises(ValueError, match="spot_diameter_um"):
        pixnet.io.hest(tmp_path, "X1")
    assert np.isclose(_radius(pixnet.io.hest(tmp_path, "X1", spot_diameter_um=55.0)), 55.0)


# ---- pixnet.io.spots -------------------------------------------------------------------------------


@pytest.fixture
def spot_files(tmp_path):
    _, _, px, py = _grid(5, pitch_px=50.0)  # 4 um/px at a 200 um pitch
    ids = [f"s{i}" for i in range(25)]
    counts = _counts(ids, seed=4)
    pos = pd.DataFrame({"px": px, "py": py}, index=ids)
    _he(tmp_path / "img.png", 300, 300)
    return tmp_path, counts, pos


@pytest.mark.parametrize("kind", ["tsv", "csv", "h5ad", "dataframe", "anndata", "transposed", "txt_commas",
                                  "txt_spaces", "gz_commas"])  # fmt: skip
def test_spots_count_formats(spot_files, kind):
    """Counts as files, tables and AnnData; a text file's separator told from its first line, not its name."""
    d, counts, pos = spot_files
    adata = ad.AnnData(counts.to_numpy(np.float32), obs=pd.DataFrame(index=counts.index), var=pd.DataFrame(index=GENES))
    source = {
        "tsv": lambda: counts.to_csv(d / "c.tsv", sep="\t") or d / "c.tsv",
        "csv": lambda: counts.to_csv(d / "c.csv") or d / "c.csv",
        "h5ad": lambda: adata.write_h5ad(d / "c.h5ad") or d / "c.h5ad",
        "dataframe": lambda: counts,
        "anndata": lambda: adata,
        "transposed": lambda: counts.T.to_csv(d / "t.tsv", sep="\t") or d / "t.tsv",
        "txt_commas": lambda: counts.to_csv(d / "c.txt") or d / "c.txt",  # a spreadsheet's export
        "txt_spaces": lambda: counts.rename_axis("spot").to_csv(d / "c.txt", sep=" ") or d / "c.txt",
        "gz_commas": lambda: counts.to_csv(d / "c.tsv.gz") or d / "c.tsv.gz",
    }[kind]()
    pos.iloc[::-1].to_csv(d / "pos.csv", sep="\t" if kind == "txt_commas" else ",")  # another order than the matrix's
    sdata = pixnet.io.spots(
        image=d / "img.png", counts=source, positions=d / "pos.csv", x="px", y="py", spot_diameter_um=100,
        pitch_um=200,
    )  # fmt: skip
    t = _check(sdata, n=25, um_per_px=4.0, diameter_um=100, counts=counts)
    assert np.isclose(_radius(sdata), 12.5, rtol=0.01)
    np.testing.assert_allclose(t.obsm["spatial"], pos.loc[t.obs_names].to_numpy())


def test_spots_errors(spot_files):
    d, counts, pos = spot_files
    kw = {"image": d / "img.png", "counts": counts, "spot_diameter_um": 100}
    with pytest.raises(ValueError, match="No spot id"):
        pixnet.io.spots(positions=pos.set_axis([f"o{i}" for i in range(25)]), x="px", y="py", um_per_px=4.0, **kw)
    with pytest.raises(ValueError, match="scale is unknown"):
        pixnet.io.spots(positions=pos, x="px", y="py", **kw)
    with pytest.raises(KeyError, match="lack the columns"):
        pixnet.io.spots(positions=pos, um_per_px=4.0, **kw)
    with pytest.raises(ValueError, match="spot_diameter_um must be positive"):
        pixnet.io.spots(positions=pos, x="px", y="py", um_per_px=4.0, **{**kw, "spot_diameter_um": 0})
    with pytest.raises(ValueError, match="two spots share a position|same place"):
        pixnet.io.spots(positions=pos.assign(px=1.0, py=1.0), x="px", y="py", pitch_um=200, **kw)


def test_fit_predict_evaluate_on_a_spot_slide(her2st):
    """A legacy ST slide trains, predicts and evaluates with the tools unchanged."""
    d, _ = her2st
    sdata = pixnet.io.legacy_st(image=d / "A1.jpg", counts=d / "A1.tsv.gz", spots_file=d / "A1_selection.tsv")
    pixnet.tl.fit(
        sdata, table="table", epochs=1, tiles_per_epoch=8, um_per_px=4.0, n_genes=8, batch_size=4, tile_px=64,
        context_px=8, decoder_hidden=32, progress=False,
    )  # fmt: skip
    pred = pixnet.tl.predict(sdata, shapes="spots", tile_px=64, context_px=32, progress=False)
    assert pred.n_obs == 30 and pred.n_vars == 8 and np.isfinite(np.asarray(pred.X)).all()
    assert list(pred.obs_names) == list(sdata.tables["table"].obs_names)
    scores = pixnet.tl.evaluate(sdata, shapes="spots")
    assert {"MSE", "MAE", "PCC@M"} <= set(scores.index) and np.isfinite(scores["MSE"])


# ---- images that are not tiled: one decode, not one per tile -----------------------------------------


def _one_chunk_element(calls, h=2600, w=2400):
    """An image as spatialdata-io reads a JPEG: one dask chunk (a decode), rechunked by Image2DModel."""
    import dask
    import dask.array as da
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity
    from xarray import DataArray

    def decode():
        calls.append(1)
        return np.random.default_rng(0).integers(0, 255, (3, h, w), dtype=np.uint8)

    arr = da.from_delayed(dask.delayed(decode)(), shape=(3, h, w), dtype=np.uint8)
    return Image2DModel.parse(
        DataArray(arr, dims=("c", "y", "x")), scale_factors=[2, 2], transformations={"global": Identity()}, rgb=None
    )


@pytest.mark.parametrize("work_um_per_px", [0.5, 1.0, 3.0])
def test_one_chunk_image_is_decoded_once(work_um_per_px):
    from pixnet.data import SlideImage

    calls = []
    img = SlideImage(_one_chunk_element(calls), cs="global", cs_um_per_px=0.5, work_um_per_px=work_um_per_px)
    assert not calls
    tiles = [img.read(y, x, 96, 96) for y in range(0, 300, 60) for x in range(0, 300, 75)]
    whole = img.load()
    assert len(calls) == 1
    # the same pixels as a read of the lazy image
    calls2 = []
    lazy = SlideImage(_one_chunk_element(calls2), cs="global", cs_um_per_px=0.5, work_um_per_px=work_um_per_px)
    lazy._source_bytes = [0] * len(lazy._source_bytes)  # never materialise
    # a coarser level is the block mean of the decoded image, not spatialdata's pyramid: equal to rounding
    diff = np.abs(tiles[3].astype(int) - lazy.read(0, 225, 96, 96))
    assert diff.max() <= 3 and diff.mean() < 1.5  # spatialdata truncates (-0.5 a level), we round
    assert len(calls2) == 1 and whole.shape[:2] == img.shape


def test_one_chunk_image_over_budget_warns_once(monkeypatch, caplog):
    from pixnet.data import image as image_module

    monkeypatch.setattr(image_module, "MATERIALISE_MAX_BYTES", 1000)
    calls = []
    img = image_module.SlideImage(_one_chunk_element(calls), cs="global", cs_um_per_px=0.5, work_um_per_px=0.5)
    with caplog.at_level(logging.WARNING, logger="pixnet.data.image"):
        for i in range(3):
            img.read(i * 100, 0, 64, 64)
    assert len(calls) == 3  # still read, one decode each
    assert caplog.text.count("sdata.write") == 1


def test_tiled_images_are_not_materialised(tmp_path):
    from spatialdata.transformations import Identity

    from pixnet.data import SlideImage
    from pixnet.io._image import read_image

    el = read_image(  # pixnet's TIFF reader: chunks of 1024 x 1024, nothing to keep in memory
        _he(tmp_path / "big.tif", 3000, 2800), transformations={"global": Identity()}
    )
    img = SlideImage(el, cs="global", cs_um_per_px=0.5, work_um_per_px=0.5)
    img.read(0, 0, 64, 64)
    assert all(not isinstance(a, np.ndarray) for a, _ in img._arrays)


# ---- plain Visium folders ---------------------------------------------------------------------------


def _visium_outs(d, *, um_per_px=0.8, diameter_fullres_um=65.0, prefix=""):
    """A Space Ranger 2 Visium ``outs/`` folder: hexagonal 100 um grid, 5 x 6 spots in tissue."""
    from pixnet.datasets._spaceranger import MatrixWriter

    (d / "spatial").mkdir(parents=True)
    rows, cols = np.meshgrid(np.arange(5), np.arange(6), indexing="ij")
    rows, cols = rows.ravel(), 2 * cols.ravel() + rows.ravel() % 2  # Visium's array: odd rows shifted
    x_um, y_um = 100 + cols * 50.0, 100 + rows * 50.0 * np.sqrt(3)
    codes = np.array([f"AAAC{i:04d}-1" for i in range(len(rows))])
    pos = pd.DataFrame({
        "barcode": codes, "in_tissue": 1, "array_row": rows, "array_col": cols,
        "pxl_row_in_fullres": y_um / um_per_px, "pxl_col_in_fullres": x_um / um_per_px,
    })  # fmt: skip
    pos.to_csv(d / "spatial" / "tissue_positions.csv", index=False)
    sf = {"spot_diameter_fullres": diameter_fullres_um / um_per_px, "tissue_hires_scalef": 0.5,
          "tissue_lowres_scalef": 0.1, "fiducial_diameter_fullres": 100.0}  # fmt: skip
    (d / "spatial" / "scalefactors_json.json").write_text(json.dumps(sf))
    counts = sparse.csr_matrix(np.random.default_rng(5).poisson(2.0, (len(codes), len(GENES))).astype(np.int32))
    w = MatrixWriter(d / f"{prefix}filtered_feature_bc_matrix.h5", GENES, [f"ENSG{i:05d}" for i in range(len(GENES))])
    w.append(counts, codes)
    w.close()
    h, wd = int((y_um.max() + 100) / um_per_px), int((x_um.max() + 100) / um_per_px)
    _he(d / "image.tif", h, wd)
    return pd.DataFrame(counts.toarray(), index=codes, columns=GENES)


@pytest.mark.parametrize("stated", [65.0, 55.0])
def test_visium_plain_folder_without_prefix(tmp_path, stated, caplog):
    outs = tmp_path / "run42" / "outs"
    counts = _visium_outs(outs, um_per_px=0.8, diameter_fullres_um=stated)
    with caplog.at_level(logging.INFO, logger="pixnet.io.visium"):
        sdata = pixnet.io.visium(outs, fullres_image_file="image.tif")
    assert "run42" in sdata.shapes and sdata.attrs["pixnet"]["image"] == "run42_full_image"
    attrs = sdata.attrs["pixnet"]
    assert np.isclose(attrs["um_per_px"], 0.8, rtol=0.01)  # from the 100 um pitch
    assert attrs["spot_diameter_um"] == 55.0 and attrs["shapes"] == "run42" and attrs["table"] == "table"
    r = sdata.shapes["run42"]["radius"].to_numpy()
    np.testing.assert_allclose(r, 55.0 / 2 / 0.8, rtol=0.01)  # the true 55 um spot, not Space Ranger's 65 um
    assert ("theoretical 65 um" in caplog.text) == (stated == 65.0)
    t = sdata.tables["table"]
    np.testing.assert_array_equal(t[:, GENES].X.toarray(), counts.loc[t.obs_names, GENES].to_numpy())


def test_visium_reports_a_spot_diameter_that_fits_neither(tmp_path, caplog):
    outs = tmp_path / "outs"
    _visium_outs(outs, um_per_px=0.8, diameter_fullres_um=90.0, prefix="S1_")
    with caplog.at_level(logging.WARNING, logger="pixnet.io.visium"):
        sdata = pixnet.io.visium(outs, fullres_image_file="image.tif")
    assert "S1" in sdata.shapes  # the prefix names the elements, as spatialdata-io does
    assert "neither 55 um" in caplog.text


def test_visium_spots_missing_from_the_positions_are_refused(tmp_path):
    """spatialdata-io left the spots the positions lack at NaN, and the read went on (found by the io breaker)."""
    for case, edit in (("suffix", lambda p: p.assign(barcode=p.barcode.str[:-2])), ("five", lambda p: p.iloc[5:])):
        outs = tmp_path / case / "outs"
        _visium_outs(outs)
        pos = outs / "spatial" / "tissue_positions.csv"
        edit(pd.read_csv(pos)).to_csv(pos, index=False)
        match = "30 of 30 spots.*lack the '-1' suffix" if case == "suffix" else "5 of 30 spots"
        with pytest.raises(ValueError, match=match):
            pixnet.io.visium(outs, fullres_image_file="image.tif")


def test_visium_folders_as_users_give_them(tmp_path, monkeypatch):
    """The run's folder, an image path from the working folder or with ~, numpy bin sizes; clear errors otherwise."""
    outs = tmp_path / "run" / "outs"
    _visium_outs(outs)
    # the run's folder (the parent of outs/), as visium_hd takes it; the image relative to it
    assert (
        pixnet.io.visium(outs.parent, fullres_image_file="outs/image.tif").attrs["pixnet"]["image"] == "run_full_image"
    )
    # an image relative to the working folder or under ~ is the one read, not the hires PNG in its place
    Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(outs / "spatial" / "tissue_hires_image.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for given in ("run/outs/image.tif", "~/run/outs/image.tif"):
        sdata = pixnet.io.visium(outs, fullres_image_file=given)
        assert sdata.attrs["pixnet"]["image"] == "run_full_image"
    with pytest.raises(FileNotFoundError, match="fullres_image_file='run/outs/imgae.tif' was not found"):
        pixnet.io.visium(outs, fullres_image_file="run/outs/imgae.tif")  # a typo: it fell back to the hires PNG
    # a matrix in another form than the filtered HDF5 one: named, with what to pass
    (outs / "filtered_feature_bc_matrix.h5").rename(outs / "raw_feature_bc_matrix.h5")
    with pytest.raises(FileNotFoundError, match="counts_file='raw_feature_bc_matrix.h5'"):
        pixnet.io.visium(outs, fullres_image_file="image.tif")
    # scale factors spatialdata-io needs: named (a KeyError from inside it before)
    sf = json.loads((outs / "spatial" / "scalefactors_json.json").read_text())
    del sf["tissue_lowres_scalef"]
    (outs / "spatial" / "scalefactors_json.json").write_text(json.dumps(sf))
    with pytest.raises(ValueError, match="lacks \\['tissue_lowres_scalef'\\]"):
        pixnet.io.visium(outs, counts_file="raw_feature_bc_matrix.h5", fullres_image_file="image.tif")


def test_spots_ids_listed_twice_in_the_counts_are_refused(tmp_path):
    """A pandas InvalidIndexError before, after a log line that said the spot had no position."""
    _he(tmp_path / "he.tif", 64, 64)
    counts = pd.DataFrame(np.ones((3, 2), int), index=["1x1", "1x2", "1x1"], columns=["A", "B"])
    pos = pd.DataFrame({"x": [10.0, 30.0], "y": [10.0, 10.0]}, index=["1x1", "1x2"])
    with pytest.raises(ValueError, match="lists 1 spot id\\(s\\) more than once \\(\\['1x1'\\]\\)"):
        pixnet.io.spots(image=tmp_path / "he.tif", counts=counts, positions=pos, spot_diameter_um=55, um_per_px=1.0)


def _nan_polygon():
    with np.errstate(invalid="ignore"):  # shapely's ufunc warns of the NaN it is given (on purpose here)
        return shapely.Polygon([(0, 0), (np.nan, 0), (5, 5)])


_POLYGONS = {
    "no geometry (None)": None,
    "an empty polygon": shapely.Polygon(),
    "non-finite coordinates": _nan_polygon(),
    "zero area": shapely.Polygon([(0, 0), (2, 2), (4, 4)]),  # on a line: make_valid collapses it
}
_CIRCLES = {  # (centre, radius)
    "no geometry (None)": (None, 3.0),
    "an empty point": (shapely.Point(), 3.0),
    "non-finite coordinates": (shapely.Point(np.inf, 4), 3.0),
    "a radius that is not a positive finite number": (shapely.Point(4, 4), np.nan),
}


@pytest.mark.parametrize("reason", list(_POLYGONS) + [f"circle: {r}" for r in _CIRCLES] + ["circle: radius 0"])
def test_shapes_that_cover_no_pixel_are_refused_by_name(reason):
    # Each way a shape can cover no pixel, alone among good shapes: one ValueError naming the reason and the shape
    # (it gave a broadcast or index error, "outside the image", or a silent 0 before).
    from geopandas import GeoDataFrame

    from pixnet.data import shapes_to_spots

    good = [
        shapely.box(10, 10, 20, 20),
        shapely.MultiPolygon([shapely.box(30, 30, 35, 35), shapely.box(40, 40, 45, 45)]),
    ]
    if reason.startswith("circle"):
        key = reason.removeprefix("circle: ")
        point, radius = _CIRCLES.get(key, (shapely.Point(4, 4), 0.0))
        gdf = GeoDataFrame({"radius": [2.0, radius, 2.0]}, geometry=[shapely.Point(1, 1), point, shapely.Point(9, 9)])
        key = "a radius that is not a positive finite number" if key == "radius 0" else key
    else:
        key = reason
        gdf = GeoDataFrame(geometry=[good[0], _POLYGONS[reason], good[1]])
    gdf.index = ["cell_a", "cell_bad", "cell_c"]
    with pytest.raises(
        ValueError,
        match=rf"Shapes element 'x': of its 3 shapes, 1 with {re.escape(key)} \(e\.g\. \['cell_bad'\]\).*Drop them",
    ) as err:
        shapes_to_spots(gdf, np.eye(3), what="Shapes element 'x'")
    fix = re.search(r"Drop them first \((.*)\) and parse", str(err.value)).group(1)
    kept = eval(fix, {"np": np, "shapely": shapely, "gdf": gdf})  # the message's own fix, as the user would run it
    assert list(kept.index) == ["cell_a", "cell_c"]
    ok = shapes_to_spots(kept, np.eye(3), what="Shapes element 'x'")
    assert len(ok) == 2 and np.isfinite(ok.centres).all()


def test_shapes_with_several_faults_name_each_and_invalid_polygons_are_repaired(caplog):
    from geopandas import GeoDataFrame

    from pixnet.data import shapes_to_spots
    from pixnet.geometry import spot_weights

    gdf = GeoDataFrame(geometry=[None, shapely.Polygon(), shapely.Polygon(), shapely.box(0, 0, 4, 4)])
    with pytest.raises(
        ValueError, match=r"1 with no geometry \(None\).*; 2 with an empty polygon \(e\.g\. \['1', '2'\]\)"
    ):
        shapes_to_spots(gdf, np.eye(3))
    # a ring that crosses itself (a bow tie): repaired as shapely.make_valid repairs it, with a warning
    bowtie = shapely.Polygon([(0, 0), (8, 8), (8, 0), (0, 8)])
    assert not bowtie.is_valid
    scale = np.array([[2.0, 0, 1], [0, 2.0, 3], [0, 0, 1]])  # the affine still applies after the repair
    with caplog.at_level(logging.WARNING, logger="pixnet"):
        spots = shapes_to_spots(GeoDataFrame(geometry=[bowtie, shapely.box(0, 0, 4, 4)]), scale)
    assert "1 of 2 polygons are invalid" in caplog.text and "Self-intersection" in caplog.text
    repaired = shapely.affinity.affine_transform(shapely.make_valid(bowtie), [2, 0, 0, 2, 1, 3])
    assert spots.polygons[0].equals(repaired) and np.isclose(spots.polygons[0].area, 4 * 32.0)
    s, _, w = spot_weights(spots, (40, 40))
    assert abs(w[s == 0].sum() - 4 * 32.0) < 0.05 * 4 * 32  # the two triangles' area (supersampled), not 0


def _as_mex(counts: pd.DataFrame, folder, prefix=""):
    """The counts as Space Ranger's matrix folder: genes x barcodes Matrix Market, gzipped, with its two lists."""
    import gzip

    from scipy import io as sio

    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"{prefix}matrix.mtx.gz", "wb") as f:
        sio.mmwrite(f, sparse.coo_matrix(counts.to_numpy().T), field="integer")
    with gzip.open(folder / f"{prefix}barcodes.tsv.gz", "wt") as f:
        f.write("".join(f"{b}\n" for b in counts.index))
    with gzip.open(folder / f"{prefix}features.tsv.gz", "wt") as f:
        f.write("".join(f"ENSG{i:05d}\t{g}\tGene Expression\n" for i, g in enumerate(counts.columns)))


def test_visium_reads_the_matrix_folder_where_the_hdf5_matrix_is_absent(tmp_path, caplog):
    """A run shared as filtered_feature_bc_matrix/ (or its three files flat, with a GEO prefix): the same table."""
    ref_outs = tmp_path / "ref" / "outs"
    counts = _visium_outs(ref_outs)
    ref = pixnet.io.visium(ref_outs, fullres_image_file="image.tif").tables["table"]
    for case in ("folder", "flat", "named"):
        outs = tmp_path / case / "outs"
        _visium_outs(outs)
        (outs / "filtered_feature_bc_matrix.h5").unlink()
        kwargs = {}
        if case == "folder":
            _as_mex(counts, outs / "filtered_feature_bc_matrix")
        elif case == "flat":
            _as_mex(counts, outs, prefix="GSM123_")
        else:
            _as_mex(counts, outs / "raw_feature_bc_matrix")
            kwargs["counts_file"] = "raw_feature_bc_matrix"
        with caplog.at_level(logging.INFO, logger="pixnet.io.visium"):
            sdata = pixnet.io.visium(outs, fullres_image_file="image.tif", **kwargs)
        assert "reading the matrix in" in caplog.text
        t = sdata.tables["table"]
        assert list(t.obs_names) == list(ref.obs_names) and list(t.var_names) == list(ref.var_names)
        np.testing.assert_array_equal(t.X.toarray(), ref.X.toarray())
        np.testing.assert_allclose(t.obsm["spatial"], ref.obsm["spatial"])
        assert sdata.attrs["pixnet"]["shapes"] == case and np.isfinite(sdata.attrs["pixnet"]["um_per_px"])
    # a folder that is not complete, or not gzipped: named, with what it needs
    outs = tmp_path / "plain" / "outs"
    _visium_outs(outs)
    (outs / "filtered_feature_bc_matrix.h5").unlink()
    (outs / "filtered_feature_bc_matrix").mkdir()
    for name in ("matrix.mtx", "barcodes.tsv", "features.tsv"):
        (outs / "filtered_feature_bc_matrix" / name).write_text("")
    with pytest.raises(FileNotFoundError, match="needs matrix.mtx.gz, barcodes.tsv.gz and features.tsv.gz"):
        pixnet.io.visium(outs, fullres_image_file="image.tif")


def test_a_greyscale_image_is_refused_when_read_not_at_fit(tmp_path):
    """spatialdata-io reads a greyscale full-resolution image; fit refused it later as 'dims (c, y, x)'."""
    outs = tmp_path / "outs"
    _visium_outs(outs)
    img = tifffile.imread(outs / "image.tif")
    tifffile.imwrite(outs / "image.tif", img[..., 0])
    with pytest.raises(ValueError, match=r"image.tif has 1 channel\(s\).*RGB H&E image"):
        pixnet.io.visium(outs, fullres_image_file="image.tif")
    # a SpatialData made by other means, its image greyscale: fit says what is wrong with it
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import get_transformation

    tifffile.imwrite(outs / "image.tif", img)
    sdata = pixnet.io.visium(outs, fullres_image_file="image.tif")
    name = sdata.attrs["pixnet"]["image"]
    transformations = get_transformation(sdata.images[name], get_all=True)
    grey = Image2DModel.parse(img[None, ..., 0], dims=("c", "y", "x"), transformations=transformations)
    sdata.images[name] = grey
    with pytest.raises(ValueError, match=r"3 channels; got dims \('c', 'y', 'x'\), sizes \{'c': 1.*single-channel"):
        pixnet.tl.fit(sdata, epochs=1, progress=False)
