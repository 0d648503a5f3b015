import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from scipy import sparse

import pixnet
from pixnet.pp import Normalization, expected_log_normalized, log_normalize, select_genes


def _tiny():
    x = np.array([[1, 0, 3, 0], [0, 0, 5, 5], [2, 2, 0, 0]], np.float32)
    a = ad.AnnData(sparse.csr_matrix(x))
    a.var_names = ["A", "B", "C", "D"]
    return a, x


def test_select_genes_by_hand():
    a, _ = _tiny()
    # means: A 1, B 0.67, C 2.67, D 1.67
    assert select_genes(a, n_top=2) == ["C", "D"]
    assert select_genes(a, genes=["B", "A"]) == ["B", "A"]
    with pytest.raises(KeyError, match="not in the table"):
        select_genes(a, genes=["A", "ZZZ"])
    with pytest.raises(ValueError, match="twice"):
        select_genes(a, genes=["A", "A"])


def test_log_normalize_by_hand():
    a, x = _tiny()
    out = log_normalize(a, genes=["C", "A"])
    expect = np.log1p(x[:, [2, 0]] / x.sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(out.X, expect, rtol=1e-6)
    np.testing.assert_array_equal(out.layers["counts"], x[:, [2, 0]])
    assert out.uns["pixnet"]["normalization"] == {"target_sum": 1e4, "log1p": True}
    # Same as scanpy's normalize_total + log1p on all genes, then subset.
    b = a.copy()
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    np.testing.assert_allclose(out.X, b[:, ["C", "A"]].X.toarray(), rtol=1e-5)


def test_empty_bins_stay_zero():
    v = Normalization().apply(np.zeros((2, 3)), np.zeros(2))
    assert (v == 0).all()


@pytest.mark.parametrize(
    ("lam", "total"), [(0.05, 15.0), (1.0, 15.0), (0.3, 3.0), (2.0, 900.0), (50.0, 900.0), (0.01, 0.5)]
)
def test_expected_log_normalized_matches_monte_carlo(lam, total):
    rng = np.random.default_rng(0)
    x = rng.poisson(lam, 400_000)
    t = x + rng.poisson(total - lam, 400_000)
    mc = np.where(t > 0, np.log1p(1e4 * x / np.maximum(t, 1)), 0.0)
    got = expected_log_normalized(np.array([[lam]]), np.array([total]))[0, 0]
    assert abs(got - mc.mean()) < 4 * mc.std() / np.sqrt(len(mc)) + 2e-3


def test_pseudo_visium_counts_the_bins_inside_each_spot(sdata):
    from pixnet.data import table_spots

    t = pixnet.pp.pseudo_visium(sdata)
    b2 = sdata.tables["square_002um"]
    xy = table_spots(sdata, "square_002um", sdata.attrs["pixnet"]["coordinate_system"]).spots.centres
    circles = sdata.shapes["visium_spots"]
    assert len(circles) == t.n_obs > 3
    for i in range(t.n_obs):  # brute force: every bin centre against every spot
        inside = ((xy - circles.geometry.iloc[i].coords[0]) ** 2).sum(1) <= circles.radius.iloc[i] ** 2
        np.testing.assert_array_equal(np.asarray(b2.X[inside].sum(0)).ravel(), t.X[i].toarray().ravel())
    spacing = np.diff(np.sort(np.unique(np.round(circles.geometry.x.to_numpy(), 3))))[0]
    assert spacing * sdata.attrs["pixnet"]["um_per_px"] == pytest.approx(
        50.0, rel=1e-4
    )  # rows offset by half the 100 um pitch
    with pytest.raises(ValueError, match="overwrite=True"):
        pixnet.pp.pseudo_visium(sdata)
