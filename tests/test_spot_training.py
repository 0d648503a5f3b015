"""Training on spot-level data: several slides with different genes, and defaults chosen from the spot size."""

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import sparse

import pixnet
from pixnet.data import default_loss, default_val_fraction, working_resolution
from pixnet.pp import select_genes


def _table(genes, means, n=30, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.poisson(np.asarray(means, float)[None], size=(n, len(genes))).astype(np.float32)
    return ad.AnnData(sparse.csr_matrix(x), var=pd.DataFrame(index=genes))


def test_select_genes_of_several_tables_takes_the_shared_ones_by_pooled_mean(caplog):
    a = _table(["A", "B", "C", "D"], [50, 1, 20, 5], seed=1)
    b = _table(["D", "C", "B", "E"], [40, 1, 1, 90], seed=2)
    with caplog.at_level(logging.INFO, logger="pixnet.pp._genes"):
        genes = select_genes([a, b], n_top=3)
    assert genes == ["D", "C", "B"]  # pooled means: D ~22.5, C ~10.5, B ~1; A and E are not shared
    assert "share 3 genes" in caplog.text
    assert select_genes([a, b], n_top=2) == ["D", "C"]
    with pytest.raises(ValueError, match="share only 3 genes"):
        select_genes([a, b, _table(["B", "C", "D", "Z"], [1, 1, 1, 1])], n_top=4)
    with pytest.raises(KeyError, match="Slide 1 lacks 1"):
        select_genes([a, b], genes=["A", "C"])
    assert select_genes([a], n_top=2) == ["A", "C"]  # one table: as before


@pytest.mark.parametrize(
    ("diameter", "given", "expected"),
    [(2, None, (0.5, 256)), (16, None, (0.5, 256)), (16.000000000000004, None, (0.5, 256)), (55, None, (2.2, 128)), (100, None, (4.0, 128)),
     (100, 2.0, (2.0, 128)), (100, 0.5, (0.5, 256)), (100, 0.25, (0.25, 480))],
)  # fmt: skip
def test_working_resolution_from_the_spot_size(diameter, given, expected):
    um, tile = working_resolution(diameter, um_per_px=given, context_px=16)
    assert um == pytest.approx(expected[0]) and tile == expected[1]
    assert tile % 32 == 0 and diameter / um * 1.05 + 32 <= tile


@pytest.mark.parametrize(
    ("diameter", "semantics", "expected"),
    [(2, "density", "poisson_pcc"), (16, "density", "poisson_pcc"), (16.000000000000004, "density", "poisson_pcc"), (55, "density", "mse_pcc"),
     (100, "density", "mse_pcc"), (8, "sum", "mse_pcc"), (100, "mean", "mse_pcc")],
)  # fmt: skip
def test_default_loss_from_the_spot_size(diameter, semantics, expected):
    assert default_loss(diameter, semantics) == expected


@pytest.mark.parametrize(("diameter", "expected"), [(2, 0.15), (16, 0.15), (16.000000000000004, 0.15), (55, 0.0), (100, 0.0)])
def test_default_val_fraction_from_the_spot_size(diameter, expected):
    assert default_val_fraction(diameter) == expected
    assert default_val_fraction(diameter, early_stopping=True) == 0.15  # stopping needs validation spots


def test_early_stopping_without_validation_spots_is_refused_not_ignored():
    """val_fraction=0 with early_stopping used to train every epoch without a word; now it names both fixes."""
    from spatialdata import SpatialData

    from pixnet.train.config import TrainConfig

    with pytest.raises(ValueError, match=r"early_stopping=3 .*val_fraction=0.*early_stopping=None"):
        TrainConfig(val_fraction=0.0, early_stopping=3)
    assert TrainConfig(val_fraction=0.0).early_stopping is None and TrainConfig(val_fraction=0.1, early_stopping=3)
    with pytest.raises(ValueError, match="holds no spots"):  # refused before any work
        pixnet.tl.fit(SpatialData(), val_fraction=0, early_stopping=3)


def _spot_slide(folder, genes, seed, um_per_px=2.0, size_px=640):
    """A small legacy-ST-like slide: 100 um spots on a 200 um grid, expression following the image's colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size_px, :size_px]
    red = (128 + 100 * np.sin(xx / 60.0 + seed)).astype(np.uint8)
    img = np.stack([red, np.full_like(red, 90), 255 - red], -1)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(folder / "he.png")
    pitch = 200 / um_per_px
    centres = np.array([(x, y) for y in np.arange(pitch / 2, size_px, pitch) for x in np.arange(pitch / 2, size_px, pitch)])
    ids = [f"s{k}" for k in range(len(centres))]
    level = red[centres[:, 1].astype(int), centres[:, 0].astype(int)] / 255.0
    lam = 5 + 40 * np.outer(level, np.linspace(0, 1, len(genes)))
    counts = pd.DataFrame(rng.poisson(lam), index=ids, columns=genes)
    counts.to_csv(folder / "counts.tsv", sep="\t")
    pd.DataFrame({"x": centres[:, 0], "y": centres[:, 1]}, index=ids).to_csv(folder / "spots.csv")
    return pixnet.io.spots(
        image=folder / "he.png", counts=folder / "counts.tsv", positions=folder / "spots.csv",
        spot_diameter_um=100, pitch_um=200,
    )  # fmt: skip


def test_fit_on_spot_slides_with_different_genes_uses_shared_genes_and_spot_defaults(tmp_path, caplog):
    a = _spot_slide(tmp_path / "a", [f"G{i}" for i in range(12)], seed=0)
    b = _spot_slide(tmp_path / "b", [f"G{i}" for i in range(4, 16)], seed=1)
    with caplog.at_level(logging.INFO, logger="pixnet"):
        # no bin_size, table, um_per_px or tile_px: all come from what the reader recorded
        model = pixnet.tl.fit([a, b], n_genes=6, epochs=1, tiles_per_epoch=2, batch_size=2, progress=False)
    assert set(model.genes) <= {f"G{i}" for i in range(4, 12)} and len(model.genes) == 6
    assert model.genes[0] == "G11"  # the highest mean of the shared genes
    assert model.config.um_per_px == pytest.approx(4.0) and model.training["params"]["tile_px"] == 128
    assert model.training["params"]["table"] == ["table", "table"]
    assert model.config.loss == "mse_pcc"  # spots larger than 16 um: fitted on log-normalised values
    assert model.training["params"]["val_fraction"] == 0 and model.training["params"]["n_val_bins"] == 0  # every spot
    assert "share 8 genes" in caplog.text and "working at 4 um/px in 128 px tiles" in caplog.text
    with pytest.raises(ValueError, match="share only 8 genes"):
        pixnet.tl.fit([a, b], n_genes=10, epochs=1, progress=False)
    t = pixnet.tl.predict(b, model=model, progress=False)  # the spots the reader recorded
    assert t.n_obs == b.tables["table"].n_obs and list(t.var_names) == list(model.genes)
    assert "pixnet_spots" in b.tables
    scores = pixnet.tl.evaluate(b)
    assert scores["n_bins"] == t.n_obs and scores["n_genes"] == 6


def test_early_stopping_with_no_validation_spots_found_warns(tmp_path, caplog):
    """Held-out blocks that hold no spots (a small slide) leave nothing to stop on: said, not silent."""
    from pixnet.train.trainer import make_trainer

    with caplog.at_level(logging.WARNING, logger="pixnet"):
        trainer, _ = make_trainer(tmp_path, has_val=False, callbacks=[], checkpoint_every=None, epochs=1,
                                  accelerator="cpu", devices=1, precision=None, early_stopping=2, progress=False)  # fmt: skip
    assert "no validation spots" in caplog.text
    assert not any(type(c).__name__ == "EarlyStopping" for c in trainer.callbacks)
