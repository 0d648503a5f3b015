import shutil

import numpy as np
import pytest
import scanpy as sc

import pixnet
from pixnet.data import image_levels
from pixnet.datasets import expected_counts


def test_reader_elements(sdata, slide_dir):
    for b in (2, 8, 16):
        t = sdata.tables[f"square_{b:03d}um"]
        raw = sc.read_10x_h5(slide_dir / "binned_outputs" / f"square_{b:03d}um" / "filtered_feature_bc_matrix.h5")
        assert t.n_obs == raw.n_obs
        assert list(t.obs_names) == list(raw.obs_names)
        assert (t.X != raw.X).nnz == 0
        assert {"array_row", "array_col", "in_tissue", "location_id", "region"} <= set(t.obs)
        assert t.uns["pixnet"]["bin_size_um"] == b
    assert "_square_008um" in sdata.shapes and "_square_016um" in sdata.shapes
    assert "_square_002um_labels" in sdata.labels
    assert sdata.attrs["pixnet"]["image"] == "_full_image"
    assert np.isclose(sdata.attrs["pixnet"]["um_per_px"], 0.2737)


def test_grid_is_exact_and_rotated(sdata):
    t = sdata.tables["square_008um"]
    grid = pixnet.io.read_table_grid(t)
    np.testing.assert_allclose(grid.centres(t.obs["array_row"], t.obs["array_col"]), t.obsm["spatial"], atol=1e-6)
    assert np.isclose(np.rad2deg(grid.angle), 2.0, atol=1e-6)
    assert np.isclose(grid.side_px * 0.2737, 8.0)
    # The squares in the shapes element are the grid's rotated squares.
    poly = sdata.shapes["_square_008um"].geometry.iloc[0]
    assert np.isclose(poly.area, grid.side_px**2)


def test_labels_place_2um_bins(sdata):
    from spatialdata.transformations import get_transformation

    t = sdata.tables["square_002um"]
    labels = sdata.labels["_square_002um_labels"]
    m = get_transformation(labels, "global").to_affine_matrix(("x", "y"), ("x", "y"))
    arr = labels.data.compute()
    iy, ix = np.nonzero(arr)
    ids = arr[iy, ix] - 1
    xy = (m @ np.stack([ix + 0.5, iy + 0.5, np.ones(len(ix))]))[:2].T
    np.testing.assert_allclose(xy, t.obsm["spatial"][ids], atol=1e-6)


def test_prefixed_run(prefixed_dir):
    sd = pixnet.io.visium_hd(prefixed_dir, bin_sizes=(8,))
    assert sd.attrs["pixnet"]["dataset_id"] == "Visium_HD_Test"
    assert "Visium_HD_Test_square_008um" in sd.shapes
    assert "Visium_HD_Test_full_image" in sd.images
    # The cell segmentation Space Ranger writes is read too, with the prefix removed from its table name.
    assert list(sd.tables) == ["square_008um", "cell_segmentations"]
    assert "Visium_HD_Test_cell_segmentations" in sd.shapes


def _brightness(sdata, b, shift_um=0.0):
    t = sdata.tables[f"square_{b:03d}um"]
    grid = pixnet.io.read_table_grid(t)
    img = image_levels(sdata.images["_full_image"])[0].data.compute().mean(0)
    u = np.linspace(-0.4, 0.4, 5)
    du, dv = np.meshgrid(u, u)
    r = t.obs["array_row"].to_numpy()[:, None] + dv.ravel() + shift_um / b
    c = t.obs["array_col"].to_numpy()[:, None] + du.ravel()
    xy = grid.centres(r.ravel(), c.ravel())
    px = np.clip(np.floor(xy).astype(int), 0, np.array(img.shape[::-1]) - 1)
    return img[px[:, 1], px[:, 0]].reshape(len(t), -1).mean(1)


def test_bins_land_where_their_tissue_is(sdata, slide_dir):
    # Cells are dark and hold the transcripts; matrix and fat are pale and hold few.
    truth = expected_counts(slide_dir, bin_size=8)
    t = sdata.tables["square_008um"]
    lam = truth[t.obs_names].X.sum(1)
    r_true = np.corrcoef(_brightness(sdata, 8), lam)[0, 1]
    r_shift = np.corrcoef(_brightness(sdata, 8, shift_um=8.0), lam)[0, 1]
    assert r_true < -0.5
    assert r_true < r_shift - 0.15


# ----- bad input -------------------------------------------------------------------------


@pytest.fixture
def broken(tmp_path, slide_dir):
    dst = tmp_path / "outs"
    shutil.copytree(slide_dir, dst)
    return dst


def test_not_a_spaceranger_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pixnet.io.visium_hd(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="binned_outputs"):
        pixnet.io.visium_hd(tmp_path / "empty")


def test_missing_bin_size(slide_dir):
    with pytest.raises(ValueError, match=r"No 4 um bins .*available: 2, 8, 16"):
        pixnet.io.visium_hd(slide_dir, bin_sizes=(4,))


def test_bin_sizes_and_image_paths_as_users_give_them(slide_dir, tmp_path, monkeypatch):
    """numpy's integers as bin sizes (refused as not whole, or not iterable) and ~ in the image's path (not found)."""
    import shutil

    for sizes in (np.array([8, 16]), [np.int64(8)], np.int64(16)):
        got = pixnet.io.visium_hd(slide_dir, bin_sizes=sizes)
        assert sorted(t for t in got.tables if t.startswith("square")) == [
            f"square_{int(b):03d}um" for b in np.atleast_1d(sizes)
        ]
    image = next((slide_dir / "microscope_image").iterdir())
    shutil.copy(image, tmp_path / f"he{image.suffix}")
    monkeypatch.setenv("HOME", str(tmp_path))
    got = pixnet.io.visium_hd(slide_dir, bin_sizes=(16,), fullres_image_file=f"~/he{image.suffix}")
    assert (
        image_levels(got.images["_full_image"])[0].shape
        == image_levels(pixnet.io.visium_hd(slide_dir, bin_sizes=(16,)).images["_full_image"])[0].shape
    )


def test_missing_image(broken):
    shutil.rmtree(broken / "microscope_image")
    with pytest.raises(FileNotFoundError, match="fullres_image_file"):
        pixnet.io.visium_hd(broken, bin_sizes=(16,))


def test_truncated_matrix(broken):
    h5 = broken / "binned_outputs" / "square_016um" / "filtered_feature_bc_matrix.h5"
    h5.write_bytes(h5.read_bytes()[:3000])
    with pytest.raises(ValueError, match=r"filtered_feature_bc_matrix.h5 cannot be read .*Re-copy"):
        pixnet.io.visium_hd(broken, bin_sizes=(16,))


def test_truncated_positions(broken):
    pq = broken / "binned_outputs" / "square_016um" / "spatial" / "tissue_positions.parquet"
    pq.write_bytes(pq.read_bytes()[:100])
    with pytest.raises(ValueError, match="tissue_positions.parquet cannot be read"):
        pixnet.io.visium_hd(broken, bin_sizes=(16,))


def test_missing_positions(broken):
    (broken / "binned_outputs" / "square_016um" / "spatial" / "tissue_positions.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="tissue_positions.parquet is missing"):
        pixnet.io.visium_hd(broken, bin_sizes=(16,))


def test_corrupt_scalefactors(broken):
    (broken / "binned_outputs" / "square_016um" / "spatial" / "scalefactors_json.json").write_text("{ not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        pixnet.io.visium_hd(broken, bin_sizes=(16,))


def test_missing_feature_slice(broken):
    (broken / "feature_slice.h5").unlink()
    with pytest.raises(FileNotFoundError, match="feature_slice"):
        pixnet.io.visium_hd(broken, bin_sizes=(16,))


def test_truncated_image(broken):
    tif = broken / "microscope_image" / "tissue_image.tif"
    tif.write_bytes(tif.read_bytes()[:500])
    with pytest.raises(ValueError, match="cannot be read as an image"):
        pixnet.io.visium_hd(broken, bin_sizes=(16,))


def test_a_slide_read_from_spaceranger_writes_with_overwrite(sdata, slide_dir, tmp_path):
    # spatialdata looks up the files an element reads from before overwriting; the TIFF is one
    pixnet.io.visium_hd(slide_dir, bin_sizes=(16,)).write(tmp_path / "a.zarr")  # an earlier run's store
    sdata.write(tmp_path / "a.zarr", overwrite=True)
    back = pixnet.io.read_zarr(tmp_path / "a.zarr")
    assert set(back.images) == set(sdata.images) and set(back.tables) == set(sdata.tables)
    assert (back.tables["square_016um"].X != sdata.tables["square_016um"].X).nnz == 0


def test_barcodes_missing_from_the_positions_say_why():
    """A '-1' suffix stripped or added by hand on one side is named, in either direction; else another run."""
    import pyarrow as pa

    from pixnet.io.visium_hd import _why_missing

    with_suffix = pa.chunked_array([["s_016um_00000_00001-1", "s_016um_00000_00002-1"]])
    without = pa.chunked_array([["s_016um_00000_00001", "s_016um_00000_00002"]])
    assert "lack the positions' '-1' suffix" in _why_missing(["s_016um_00000_00001"], with_suffix)
    assert "carry a '-1' the positions lack" in _why_missing(["s_016um_00000_00002-1"], without)
    assert "different runs" in _why_missing(["s_099um_00000_00001-1"], with_suffix)
