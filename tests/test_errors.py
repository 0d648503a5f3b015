"""Every bad input gets an error that names the problem and the fix (the table in docs/errors.md is made from CASES)."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from spatialdata.models import Image2DModel, ShapesModel, TableModel
from spatialdata.transformations import Identity, Scale, set_transformation

import pixnet
from pixnet.cli import main as cli


@dataclass
class Ctx:
    slide_dir: Path
    tmp: Path
    model: pixnet.PixNet

    def copy(self) -> Path:
        dst = self.tmp / "outs"
        if not dst.exists():
            shutil.copytree(self.slide_dir, dst)
        return dst

    def sdata(self, bins=(16,)):
        return pixnet.io.visium_hd(self.slide_dir, bin_sizes=bins)


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _bin16(c: Ctx) -> Path:
    return c.copy() / "binned_outputs" / "square_016um"


def _fit(s, **kw):
    args = {
        "bin_size": 16,
        "epochs": 1,
        "n_genes": 5,
        "tiles_per_epoch": 2,
        "batch_size": 1,
        "tile_px": 128,
        "context_px": 8,
    }
    return pixnet.tl.fit(s, progress=False, **{**args, **kw})


def _predict(s, c, **kw):
    return pixnet.tl.predict(s, model=c.model, progress=False, **{"bin_size": 16, **kw})


def _nan_counts(c):
    s = c.sdata()
    s.tables["square_016um"].X.data[:3] = np.nan
    _fit(s)


def _nan_image(c):
    s = c.sdata()
    img = pixnet.data.image_levels(s.images["_full_image"])[0].data.compute().astype(np.float32) / 255
    img[:, 100:200, 100:200] = np.nan
    s.images["_full_image"] = Image2DModel.parse(img, dims=("c", "y", "x"), transformations={"global": Identity()})
    _fit(s)


def _nan_loss(c):
    _fit(c.sdata(), lr=1e12, epochs=2, tiles_per_epoch=4)


def _other_cs(c):
    s = c.sdata()
    set_transformation(s.shapes["_square_016um"], {"elsewhere": Identity()}, set_all=True)
    _fit(s, table="square_016um", bin_size=None)


def _image_in_other_cs(c):
    s = c.sdata()
    set_transformation(s.images["_full_image"], {"elsewhere": Scale([2.0, 2.0], axes=("x", "y"))}, set_all=True)
    _fit(s)


def _table_region_missing(c):
    s = c.sdata()
    t = s.tables["square_016um"]
    del s.shapes["_square_016um"]
    s.tables["square_016um"] = t
    _fit(s)


def _duplicated_barcodes(c):
    import h5py

    h5 = _bin16(c) / "filtered_feature_bc_matrix.h5"
    with h5py.File(h5, "r+") as f:
        codes = f["matrix/barcodes"][:]
        codes[1] = codes[0]
        f["matrix/barcodes"][:] = codes
    pixnet.io.visium_hd(c.copy(), bin_sizes=(16,))


def _mixed_runs(c):
    pq = _bin16(c) / "spatial" / "tissue_positions.parquet"
    df = pd.read_parquet(pq)
    df["barcode"] = df["barcode"].str.replace("s_016um", "s_099um")
    df.to_parquet(pq)
    pixnet.io.visium_hd(c.copy(), bin_sizes=(16,))


def _positions_without_suffix(c):
    # positions re-saved by hand, their barcodes stripped of the '-1' the matrix's carry
    pq = _bin16(c) / "spatial" / "tissue_positions.parquet"
    df = pd.read_parquet(pq)
    df["barcode"] = df["barcode"].str.removesuffix("-1")
    df.to_parquet(pq)
    pixnet.io.visium_hd(c.copy(), bin_sizes=(16,))


def _empty_tissue(c):
    # A run whose bins hold no counts at all (no tissue under the capture area).
    s = c.sdata()
    t = s.tables["square_016um"]
    t.X = sparse.csr_matrix(t.shape, dtype=t.X.dtype)
    _fit(s, genes=["ERBB2"])


def _one_bin_table(c):
    s = c.sdata()
    t = s.tables["square_016um"][:1].copy()
    s.tables["square_016um"] = t
    _predict(s, c)


def _model_other_version(c):
    c.model.save(c.tmp / "m")
    cfg = json.loads((c.tmp / "m" / "config.json").read_text())
    cfg["format_version"] = 0
    (c.tmp / "m" / "config.json").write_text(json.dumps(cfg))
    pixnet.PixNet.load(c.tmp / "m")


def _model_corrupt(c):
    c.model.save(c.tmp / "m")
    _truncate(c.tmp / "m" / "model.safetensors", 1000)
    pixnet.PixNet.load(c.tmp / "m")


def _model_genes_missing(c):
    s = c.sdata()
    pred = _predict(s, c)
    s.tables["square_016um"] = s.tables["square_016um"][:, :3].copy()
    pixnet.tl.evaluate(s, bin_size=16)
    return pred


def _key_exists(c):
    s = c.sdata()
    _predict(s, c)
    _predict(s, c)


def _no_image(c):
    s = c.sdata()
    for name in list(s.images):
        del s.images[name]
    s.attrs["pixnet"] = {**s.attrs["pixnet"], "image": None}
    _predict(s, c)


def _circles_without_radius(c):
    s = c.sdata()
    s.shapes["pts"] = ShapesModel.parse(np.array([[10.0, 10.0], [20.0, 20.0]]), geometry=0, radius=np.ones(2))
    s.shapes["pts"].drop(columns="radius", inplace=True)  # after spatialdata's validation, as a user's edit would
    t = ad.AnnData(
        sparse.csr_matrix(np.ones((2, 3), np.float32)), obs=pd.DataFrame({"i": [0, 1], "r": "pts"}, index=["a", "b"])
    )
    t.obs["r"] = t.obs["r"].astype("category")
    s.tables["t"] = TableModel.parse(t, region="pts", region_key="r", instance_key="i")
    _fit(s, table="t", bin_size=None, genes=None)


def _with_shapes(c, shapes):
    s = c.sdata()
    s.shapes["x"] = shapes
    return _predict(s, c, bin_size=None, shapes="x")


def _empty_polygon(c):
    import geopandas as gpd
    import shapely

    gdf = gpd.GeoDataFrame(geometry=[shapely.box(100, 100, 200, 200), shapely.Polygon()])
    _with_shapes(c, ShapesModel.parse(gdf, transformations={"global": Identity()}))


def _circle_nan_centre(c):
    xy = np.array([[150.0, 150.0], [np.nan, 150.0]])
    _with_shapes(c, ShapesModel.parse(xy, geometry=0, radius=np.full(2, 20.0), transformations={"global": Identity()}))


def _unknown_shapes(c):
    _predict(c.sdata(), c, bin_size=None, shapes="nope")


def _existing_model_dir(c):
    (c.tmp / "taken").mkdir()
    _fit(c.sdata(), model_dir=c.tmp / "taken")


def _cli_bad(c):
    code = cli(["predict", str(c.slide_dir), "--model", str(c.tmp / "none"), "--out", str(c.tmp / "r.zarr")])
    raise SystemExit(code)


def _no_counts_in_any_form(c):
    folder = _bin16(c)
    (folder / "filtered_feature_bc_matrix.h5").unlink()
    (folder / "filtered_feature_bc_matrix").mkdir()
    (folder / "filtered_feature_bc_matrix" / "barcodes.tsv.gz").write_bytes(b"")
    pixnet.io.visium_hd(c.copy(), bin_sizes=(16,))


def _positions_in_no_form(c):
    (_bin16(c) / "spatial" / "tissue_positions.parquet").rename(_bin16(c) / "spatial" / "positions.parquet")
    pixnet.io.visium_hd(c.copy(), bin_sizes=(16,))


def _image_as(c, write):
    tif = c.copy() / "microscope_image" / "tissue_image.tif"
    tif.unlink()
    write(tif)
    pixnet.io.visium_hd(c.copy(), bin_sizes=(16,))


def _grey_image(c):
    from PIL import Image

    _image_as(c, lambda p: Image.fromarray(np.zeros((64, 64), np.uint8)).save(p, format="PNG"))


def _five_channels(c):
    import tifffile

    _image_as(c, lambda p: tifffile.imwrite(p, np.zeros((5, 64, 64), np.uint8)))


def _not_an_image(c):
    (c.tmp / "scan.tif").write_text("a scan note")
    pixnet.io.visium_hd(c.slide_dir, bin_sizes=(16,), fullres_image_file=c.tmp / "scan.tif")


def _hires_as_fullres(c):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reader warns; fit refuses
        hires = c.slide_dir / "spatial" / "tissue_hires_image.png"
        s = pixnet.io.visium_hd(c.slide_dir, bin_sizes=(16,), fullres_image_file=hires)
    _fit(s)


def _predict_off_image(c):
    s = c.sdata()
    s.images["_full_image"] = s.images.pop("_hires_image")
    set_transformation(s.images["_full_image"], Identity(), "global")
    _predict(s, c)


def _predict_into_a_zarr_v2_store(c):
    import spatialdata as sd
    from spatialdata._io.format import (
        RasterFormatV02,
        ShapesFormatV02,
        SpatialDataContainerFormatV01,
        TablesFormatV01,
    )

    s, path = c.sdata(), c.tmp / "v2.zarr"
    old = [SpatialDataContainerFormatV01(), RasterFormatV02(), ShapesFormatV02(), TablesFormatV01()]
    sd.SpatialData(images={"_full_image": s.images["_full_image"]}, shapes={"_square_016um": s.shapes["_square_016um"]},
                   tables={"square_016um": s.tables["square_016um"]}, attrs=s.attrs).write(path, sdata_formats=old)  # fmt: skip
    _predict(sd.read_zarr(path), c)


def _predict_from_a_store_gone(c):
    import spatialdata as sd

    s, path = c.sdata(), c.tmp / "gone.zarr"
    sd.SpatialData(images={"_full_image": s.images["_full_image"]}, attrs=s.attrs).write(path)
    backed = sd.read_zarr(path)
    shutil.rmtree(path)
    _predict(backed, c)


def _predict_on_a_mirrored_image(c):
    from spatialdata.transformations import Sequence, Translation

    s = c.sdata()
    width = pixnet.data.image_levels(s.images["_full_image"])[0].sizes["x"]
    flip = Sequence([Scale([-1.0, 1.0], axes=("x", "y")), Translation([width, 0.0], axes=("x", "y"))])
    for name in ("_full_image", "_square_016um"):
        set_transformation(s[name], flip, "global")
    _predict(s, c)


def _evaluate_other_places(c):
    s = c.sdata()
    _predict(s, c)
    t = s.tables["pixnet_square_016um"]
    t.obsm["spatial"] = t.obsm["spatial"] + 200.0
    pixnet.tl.evaluate(s, bin_size=16)


def _cli_missing_bin_size(c):
    raise SystemExit(cli(["fit", str(c.slide_dir), "--bin-size", "4", "--out", str(c.tmp / "m")]))


def _hub_raising(error: str):
    """``huggingface_hub.hf_hub_download`` replaced by one that fails as the hub does (no network here)."""
    from types import SimpleNamespace
    from unittest import mock

    from huggingface_hub import errors

    cls = getattr(errors, error)
    exc = cls("offline") if error == "LocalEntryNotFoundError" else cls("403", response=SimpleNamespace(headers={}, request=None))
    return mock.patch("huggingface_hub.hf_hub_download", side_effect=exc)


def _hub_gated(c):
    with _hub_raising("GatedRepoError"):
        pixnet.model.build_encoder("hf-hub:MahmoodLab/UNI2-h")


def _hub_offline(c):
    with _hub_raising("LocalEntryNotFoundError"):
        pixnet.model.build_encoder("hf-hub:paige-ai/Virchow2")


CASES = [
    # (area, input, callable, exception, message fragment)
    (
        "io",
        "a path that does not exist",
        lambda c: pixnet.io.visium_hd(c.tmp / "nope"),
        FileNotFoundError,
        "does not exist",
    ),
    (
        "io",
        "a folder that is not a Space Ranger HD output",
        lambda c: pixnet.io.visium_hd(c.tmp),
        FileNotFoundError,
        "binned_outputs",
    ),
    (
        "io",
        "a bin size the run does not have",
        lambda c: pixnet.io.visium_hd(c.slide_dir, bin_sizes=(4,)),
        ValueError,
        "available: 2, 8, 16",
    ),
    ("io", "no bin sizes", lambda c: pixnet.io.visium_hd(c.slide_dir, bin_sizes=()), ValueError, "bin_sizes is empty"),
    (
        "io",
        "a bin size that is not a whole number",
        lambda c: pixnet.io.visium_hd(c.slide_dir, bin_sizes=(2.5,)),
        ValueError,
        "whole micrometres",
    ),
    (
        "io",
        "the full-resolution image missing",
        lambda c: (shutil.rmtree(c.copy() / "microscope_image"), pixnet.io.visium_hd(c.copy())),
        FileNotFoundError,
        "fullres_image_file",
    ),
    (
        "io",
        "a truncated image",
        lambda c: (_truncate(c.copy() / "microscope_image" / "tissue_image.tif", 500), pixnet.io.visium_hd(c.copy())),
        ValueError,
        "cannot be read as an image",
    ),
    (
        "io",
        "the counts matrix missing",
        lambda c: (
            (_bin16(c) / "filtered_feature_bc_matrix.h5").unlink(),
            pixnet.io.visium_hd(c.copy(), bin_sizes=(16,)),
        ),
        FileNotFoundError,
        "filtered_feature_bc_matrix.h5 is missing",
    ),
    (
        "io",
        "a truncated counts matrix",
        lambda c: (
            _truncate(_bin16(c) / "filtered_feature_bc_matrix.h5", 3000),
            pixnet.io.visium_hd(c.copy(), bin_sizes=(16,)),
        ),
        ValueError,
        "Re-copy it",
    ),
    (
        "io",
        "an empty counts matrix file",
        lambda c: (
            _truncate(_bin16(c) / "filtered_feature_bc_matrix.h5", 0),
            pixnet.io.visium_hd(c.copy(), bin_sizes=(16,)),
        ),
        ValueError,
        "cannot be read as a 10x HDF5 matrix",
    ),
    (
        "io",
        "the bin positions missing",
        lambda c: (
            (_bin16(c) / "spatial" / "tissue_positions.parquet").unlink(),
            pixnet.io.visium_hd(c.copy(), bin_sizes=(16,)),
        ),
        FileNotFoundError,
        "tissue_positions.parquet is missing",
    ),
    (
        "io",
        "truncated bin positions",
        lambda c: (
            _truncate(_bin16(c) / "spatial" / "tissue_positions.parquet", 100),
            pixnet.io.visium_hd(c.copy(), bin_sizes=(16,)),
        ),
        ValueError,
        "cannot be read as parquet",
    ),
    (
        "io",
        "an empty bin positions file",
        lambda c: (
            _truncate(_bin16(c) / "spatial" / "tissue_positions.parquet", 0),
            pixnet.io.visium_hd(c.copy(), bin_sizes=(16,)),
        ),
        ValueError,
        "cannot be read as parquet",
    ),
    (
        "io",
        "scale factors that are not JSON",
        lambda c: (
            (_bin16(c) / "spatial" / "scalefactors_json.json").write_text("{"),
            pixnet.io.visium_hd(c.copy(), bin_sizes=(16,)),
        ),
        ValueError,
        "not valid JSON",
    ),
    (
        "io",
        "an empty scale factors file",
        lambda c: (
            (_bin16(c) / "spatial" / "scalefactors_json.json").write_text(""),
            pixnet.io.visium_hd(c.copy(), bin_sizes=(16,)),
        ),
        ValueError,
        "not valid JSON",
    ),
    (
        "io",
        "scale factors without microns_per_pixel",
        lambda c: (
            (_bin16(c) / "spatial" / "scalefactors_json.json").write_text("{}"),
            pixnet.io.visium_hd(c.copy(), bin_sizes=(16,)),
        ),
        ValueError,
        "microns_per_pixel",
    ),
    (
        "io",
        "the feature slice missing",
        lambda c: ((c.copy() / "feature_slice.h5").unlink(), pixnet.io.visium_hd(c.copy())),
        FileNotFoundError,
        "feature_slice",
    ),
    ("io", "barcodes listed twice", _duplicated_barcodes, ValueError, "barcodes twice"),
    ("io", "counts and positions from different runs", _mixed_runs, ValueError, "different runs"),
    ("io", "positions' barcodes without the '-1' suffix", _positions_without_suffix, ValueError,
     "carry a '-1' the positions lack"),
    ("io", "no counts matrix in any form (h5, mtx, raw)", _no_counts_in_any_form, FileNotFoundError, "so are"),
    ("io", "bin positions in no known form", _positions_in_no_form, FileNotFoundError, "tissue_positions.csv"),
    ("io", "a greyscale image", _grey_image, ValueError, "needs an RGB H&E image"),
    ("io", "an image with 5 channels", _five_channels, ValueError, "5 channels"),
    ("io", "a slide image that is not an image", _not_an_image, ValueError, "not an image pixnet can read"),
    (
        "pp",
        "unknown genes",
        lambda c: pixnet.pp.select_genes(c.sdata().tables["square_016um"], genes=["NOPE"]),
        KeyError,
        "not in the table",
    ),
    (
        "pp",
        "a gene given twice",
        lambda c: pixnet.pp.select_genes(c.sdata().tables["square_016um"], genes=["ERBB2", "ERBB2"]),
        ValueError,
        "twice",
    ),
    (
        "pp",
        "n_top below 1",
        lambda c: pixnet.pp.select_genes(c.sdata().tables["square_016um"], n_top=0),
        ValueError,
        "at least 1",
    ),
    ("tl", "fit: genes not in the table", lambda c: _fit(c.sdata(), genes=["NOPE"]), KeyError, "not in the table"),
    ("tl", "fit: a bin size with no table", lambda c: _fit(c.sdata(), bin_size=8), KeyError, "No table of 8 um bins"),
    ("tl", "fit: a tile smaller than a bin", lambda c: _fit(c.sdata(), tile_px=64), ValueError, "do not fit"),
    (
        "tl",
        "fit: a tile size that is not a multiple of 32",
        lambda c: _fit(c.sdata(), tile_px=100),
        ValueError,
        "multiple of 32",
    ),
    ("tl", "fit: NaN in the counts", _nan_counts, ValueError, "NaN, inf or negative"),
    ("tl", "fit: NaN in the image", _nan_image, ValueError, "NaN or inf pixels"),
    ("tl", "fit: a loss that becomes NaN", _nan_loss, ValueError, "Lower the learning rate"),
    ("tl", "fit: bins in another coordinate system than the image", _other_cs, ValueError, "share a coordinate system"),
    ("tl", "fit: an image in another coordinate system", _image_in_other_cs, ValueError, "coordinate system"),
    (
        "tl",
        "fit: a table whose region matches no element",
        _table_region_missing,
        KeyError,
        "not in the SpatialData object",
    ),
    ("tl", "fit: an empty tissue (no counts in any bin)", _empty_tissue, ValueError, "zero counts"),
    ("tl", "fit: the hires image given as the full-resolution one", _hires_as_fullres, ValueError, "looks like"),
    ("tl", "predict: most bins beyond the image", _predict_off_image, ValueError, "lie beyond the image"),
    ("tl", "evaluate: rows named alike in other places", _evaluate_other_places, ValueError, "different places"),
    ("tl", "fit: circles without a radius", _circles_without_radius, ValueError, "radius"),
    ("tl", "fit: no epochs", lambda c: _fit(c.sdata(), epochs=0), ValueError, "epochs must be at least 1"),
    ("tl", "fit: a model folder that exists", _existing_model_dir, FileExistsError, "overwrite=True"),
    (
        "tl",
        "predict: no model fitted and none given",
        lambda c: pixnet.tl.predict(c.sdata(), bin_size=16),
        ValueError,
        "tl.fit",
    ),
    ("tl", "predict: bin size 0", lambda c: _predict(c.sdata(), c, bin_size=0), ValueError, "positive"),
    ("tl", "predict: a negative bin size", lambda c: _predict(c.sdata(), c, bin_size=-8), ValueError, "positive"),
    (
        "tl",
        "predict: bins smaller than a pixel",
        lambda c: _predict(c.sdata(), c, bin_size=0.1),
        ValueError,
        "smaller than a pixel",
    ),
    (
        "tl",
        "predict: both bin_size and shapes",
        lambda c: _predict(c.sdata(), c, shapes="x"),
        ValueError,
        "exactly one",
    ),
    ("tl", "predict: an unknown shapes element", _unknown_shapes, KeyError, "No shapes element"),
    ("tl", "predict: shapes holding an empty polygon", _empty_polygon, ValueError, "1 with an empty polygon"),
    ("tl", "predict: a circle whose centre is NaN", _circle_nan_centre, ValueError, "1 with non-finite coordinates"),
    ("tl", "predict: a key_added that already exists", _key_exists, ValueError, "overwrite=True"),
    ("tl", "predict: a SpatialData without an image", _no_image, ValueError, "no image"),
    (
        "tl",
        "predict: tile_px not a multiple of 32",
        lambda c: _predict(c.sdata(), c, tile_px=100),
        ValueError,
        "multiples of 32",
    ),
    (
        "tl",
        "predict: a negative context_px",
        lambda c: _predict(c.sdata(), c, context_px=-32),
        ValueError,
        "context_px one >= 0",
    ),
    (
        "tl",
        "predict: a layer it cannot write",
        lambda c: _predict(c.sdata(), c, layers=("counts", "raw")),
        ValueError,
        "Unknown layers",
    ),
    (
        "tl",
        "predict: into a zarr v2 store (older spatialdata)",
        _predict_into_a_zarr_v2_store,
        ValueError,
        "is a zarr v2 store",
    ),
    (
        "tl",
        "predict: the store the slide was read from, deleted or moved",
        _predict_from_a_store_gone,
        FileNotFoundError,
        "is gone",
    ),
    (
        "tl",
        "predict: an image mirrored in its coordinate system",
        _predict_on_a_mirrored_image,
        ValueError,
        "is mirrored",
    ),
    (
        "tl",
        "evaluate: before predict",
        lambda c: pixnet.tl.evaluate(c.sdata(), bin_size=16),
        KeyError,
        "run pixnet.tl.predict",
    ),
    (
        "tl",
        "evaluate: the model's genes missing from the measurement",
        _model_genes_missing,
        KeyError,
        "shares no gene",
    ),
    (
        "model",
        "a model folder that does not exist",
        lambda c: pixnet.PixNet.load(c.tmp / "nothing"),
        FileNotFoundError,
        "not a saved PixNet model",
    ),
    ("model", "a model saved by another format version", _model_other_version, ValueError, "format version 0"),
    ("model", "a corrupt model file", _model_corrupt, ValueError, "cannot be loaded"),
    (
        "model",
        "an encoder checkpoint of another architecture",
        lambda c: (np.save(c.tmp / "x.npy", 1), pixnet.model.build_encoder("resnet18", weights=c.tmp / "x.npy")),
        ValueError,
        "cannot be read as a PyTorch checkpoint",
    ),
    ("model", "a gated hub encoder whose licence is not accepted", _hub_gated, ValueError, "accept its licence"),
    ("model", "a hub encoder while offline, not in the cache", _hub_offline, ValueError, "cannot be reached"),
    (
        "datasets",
        "a synthetic slide smaller than 64 um",
        lambda c: pixnet.datasets.visium_hd_demo(c.tmp / "s", size_um=10),
        ValueError,
        "too small",
    ),
    ("cli", "pixnet predict with a missing model", _cli_bad, SystemExit, "2"),
    ("cli", "pixnet fit with a --bin-size the run does not have", _cli_missing_bin_size, SystemExit, "2"),
]


@pytest.fixture(scope="module")
def model(slide_dir):
    return _fit(pixnet.io.visium_hd(slide_dir, bin_sizes=(16,)))


@pytest.mark.parametrize(("area", "what", "fn", "exc", "match"), CASES, ids=[c[1] for c in CASES])
def test_bad_input(area, what, fn, exc, match, slide_dir, tmp_path, model):
    with pytest.raises(exc, match=match):
        fn(Ctx(slide_dir, tmp_path, model))


def test_a_single_bin_and_a_small_slide_work(slide_dir, tmp_path, model):
    # Edge scales: one bin predicts; a slide smaller than one tile trains and predicts.
    c = Ctx(slide_dir, tmp_path, model)
    s = c.sdata()
    s.tables["square_016um"] = s.tables["square_016um"][:1].copy()
    assert _predict(s, c).n_obs == 1
    small = pixnet.datasets.visium_hd_demo(tmp_path / "tiny", size_um=96, n_genes=60)
    t = pixnet.io.visium_hd(small, bin_sizes=(16,))
    m = _fit(t, tile_px=256, val_fraction=0.0)
    assert _predict(t, Ctx(small, tmp_path, m)).n_obs == t.tables["square_016um"].n_obs


def test_genes_with_zero_counts_everywhere(slide_dir, tmp_path, model):
    s = pixnet.io.visium_hd(slide_dir, bin_sizes=(16,))
    t = s.tables["square_016um"]
    x = t.X.tolil()
    x[:, t.var_names.get_loc("ERBB2")] = 0
    t.X = x.tocsr()
    m = _fit(s, genes=["ERBB2", "FASN", "PTPRC"])
    pixnet.tl.predict(s, model=m, bin_size=16, progress=False)
    out = pixnet.tl.evaluate(s, bin_size=16)
    assert out["n_constant_genes"] == 1  # reported, not counted as 0


def test_errors_table_in_docs_is_current():
    text = (Path(__file__).parents[1] / "docs" / "errors.md").read_text()
    missing = [what for _, what, *_ in CASES if what not in text]
    assert not missing, f"docs/errors.md lacks {missing}: run python docs/make_errors_table.py"
