import json

import h5py
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

from pixnet.datasets import expected_counts, visium_hd_demo


def _counts(path, b):
    return sc.read_10x_h5(path / "binned_outputs" / f"square_{b:03d}um" / "filtered_feature_bc_matrix.h5")


def test_layout_is_space_ranger(slide_dir):
    for b in (2, 8, 16):
        d = slide_dir / "binned_outputs" / f"square_{b:03d}um"
        assert (d / "filtered_feature_bc_matrix.h5").is_file()
        pos = pd.read_parquet(d / "spatial" / "tissue_positions.parquet")
        assert list(pos.columns) == [
            "barcode",
            "in_tissue",
            "array_row",
            "array_col",
            "pxl_row_in_fullres",
            "pxl_col_in_fullres",
        ]
        sf = json.loads((d / "spatial" / "scalefactors_json.json").read_text())
        assert sf["bin_size_um"] == b
        assert np.isclose(sf["bin_size_um"] / sf["spot_diameter_fullres"], sf["microns_per_pixel"])
    for f in (
        "spatial/tissue_hires_image.png",
        "spatial/tissue_lowres_image.png",
        "feature_slice.h5",
        "microscope_image/tissue_image.tif",
    ):
        assert (slide_dir / f).is_file(), f
    with h5py.File(slide_dir / "feature_slice.h5") as f:
        meta = json.loads(f.attrs["metadata_json"])
    assert json.loads(meta["hd_layout_json"])["file_format"] == "1.0"


def test_spatialdata_io_reads_it(slide_dir):
    import spatialdata_io

    sd = spatialdata_io.visium_hd(slide_dir, load_segmentations_only=False, bin_size=[8])
    assert sd.tables["square_008um"].n_obs == _counts(slide_dir, 8).n_obs


@pytest.mark.parametrize("b", [8, 16])
def test_coarse_bins_are_sums_of_2um_bins(slide_dir, b):
    fine, coarse = _counts(slide_dir, 2), _counts(slide_dir, b)
    rc = fine.obs_names.str.extract(r"s_002um_(\d+)_(\d+)-1").astype(int).to_numpy()
    f = b // 2
    keys = pd.Index([f"s_{b:03d}um_{r // f:05d}_{c // f:05d}-1" for r, c in rc])
    ok = keys.isin(coarse.obs_names)
    summed = pd.DataFrame(fine.X[ok].toarray(), index=keys[ok]).groupby(level=0).sum()
    np.testing.assert_array_equal(summed.loc[coarse.obs_names].to_numpy(), coarse.X.toarray())


def test_counts_follow_the_truth(slide_dir):
    obs = _counts(slide_dir, 16)
    truth = expected_counts(slide_dir, bin_size=16)
    assert list(truth.obs_names) == list(obs.obs_names)
    x, lam = obs.X.toarray(), truth.X
    # Poisson counts scatter around their means: totals agree to a few percent.
    assert abs(x.sum() / lam.sum() - 1) < 0.02
    r = np.corrcoef(x.sum(1), lam.sum(1))[0, 1]
    assert r > 0.9


def test_two_um_bins_hold_realistic_counts(slide_dir):
    total = np.asarray(_counts(slide_dir, 2).X.sum(1)).ravel()
    assert 5 < total.mean() < 30


def test_same_programme_different_layout(tmp_path):
    a = visium_hd_demo(tmp_path / "a", size_um=96, seed=1, programme_seed=7, n_genes=100)
    b = visium_hd_demo(tmp_path / "b", size_um=96, seed=2, programme_seed=7, n_genes=100)
    with h5py.File(a / "pixnet_truth.h5") as fa, h5py.File(b / "pixnet_truth.h5") as fb:
        np.testing.assert_array_equal(fa["profiles"][:], fb["profiles"][:])
        assert fa["weights"].shape != fb["weights"].shape or not np.allclose(fa["weights"][:], fb["weights"][:])


def test_cached_and_overwrite(tmp_path):
    p = visium_hd_demo(tmp_path / "s", size_um=96, n_genes=100)
    assert visium_hd_demo(tmp_path / "s", size_um=96, n_genes=100) == p  # reused
    with pytest.raises(FileExistsError, match="overwrite=True"):
        visium_hd_demo(tmp_path / "s", size_um=128, n_genes=100)
    visium_hd_demo(tmp_path / "s", size_um=128, n_genes=100, overwrite=True)


def test_rejects_tiny_slide(tmp_path):
    with pytest.raises(ValueError, match="too small"):
        visium_hd_demo(tmp_path / "x", size_um=10)
