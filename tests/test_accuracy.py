"""Cross-slide accuracy with the defaults: pixnet beats the colour ridge and the spot regressor (slow: 15-40 min CPU).

Margins come from a measured run of this test (see MEASURED); benchmarks/accuracy.py is the full version.
"""

import numpy as np
import pytest

import pixnet

# PCC@M on slide B measured by this test on 2026-11-25 (2-core CPU, seeds as below, 39 min on a shared machine):
MEASURED = {
    ("pixnet", 2): 0.185, ("spot", 2): 0.127, ("ridge", 2): 0.079,
    ("pixnet", 8): 0.379, ("spot", 8): 0.341, ("ridge", 8): 0.301,
}  # fmt: skip
# The test asks for about half of each measured gap.
MARGIN = {("ridge", 2): 0.05, ("ridge", 8): 0.04, ("spot", 2): 0.03, ("spot", 8): 0.02}


def _ridge(A, B, genes, scales):
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pixnet.baselines.features import colour_texture_features
    from pixnet.data import table_spots
    from pixnet.data.slide import resolve_slide

    def features(sdata, b):
        slide = resolve_slide(sdata)
        work = slide.working_image(0.5)
        spots = table_spots(sdata, f"square_{b:03d}um", slide.cs).spots.scaled(work.f)
        return colour_texture_features(work.load(), spots)

    y = pixnet.pp.log_normalize(A.tables["square_016um"], genes=genes).X
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13))).fit(features(A, 16), y)
    return {b: ridge.predict(features(B, b)) for b in scales}


@pytest.mark.slow
def test_defaults_beat_colour_ridge_and_spot_regressor(tmp_path):
    kw = {"size_um": 600, "programme_seed": 0, "n_genes": 300}
    pa = pixnet.datasets.visium_hd_demo(tmp_path / "A", seed=1, rotation_deg=1.5, **kw)
    pb = pixnet.datasets.visium_hd_demo(tmp_path / "B", seed=2, rotation_deg=-2.0, stain_variation=0.5, **kw)
    A, B = pixnet.io.visium_hd(pa), pixnet.io.visium_hd(pb)
    scales = (2, 8)
    dense = pixnet.tl.fit(A, progress=False)
    spot = pixnet.tl.fit(A, method="spot", epochs=10, progress=False)
    ridge = _ridge(A, B, dense.genes, scales)
    scores = {}
    for b in scales:
        measured = pixnet.pp.log_normalize(B.tables[f"square_{b:03d}um"], genes=dense.genes).X
        for name, model in (("pixnet", dense), ("spot", spot)):
            t = pixnet.tl.predict(B, model=model, bin_size=b, key_added=name, progress=False)
            scores[name, b] = pixnet.tl.metrics(np.asarray(t.X), measured)[0]["PCC@M"]
        scores["ridge", b] = pixnet.tl.metrics(ridge[b], measured)[0]["PCC@M"]
    print({f"{k[0]}@{k[1]}": round(float(v), 3) for k, v in scores.items()})
    for b in scales:
        for other in ("ridge", "spot"):
            assert scores["pixnet", b] > scores[other, b] + MARGIN[other, b], (other, b, scores)
