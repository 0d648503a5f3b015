import numpy as np
import pytest
import torch

import pixnet

# Held-out 8 um PCC@M measured on the test slide (seed 0, CPU): pixnet 0.398 after 8 epochs (0.410 after 20),
# a ridge on the mean colour of each bin 0.359. The test asks for half the measured gap.
MARGIN_OVER_COLOUR = 0.02
TINY = {"n_genes": 20, "tile_px": 128, "context_px": 8, "batch_size": 2, "progress": False}


def test_fit_lowers_validation_loss(sdata):
    model = pixnet.tl.fit(sdata, bin_size=16, epochs=4, tiles_per_epoch=12, lr=1e-3, **TINY)
    h = model.history
    assert len(h) == 4 and all("val_loss" in r and "val_pcc" in r for r in h)
    assert min(r["val_loss"] for r in h[1:]) < h[0]["val_loss"]
    assert model.training["params"]["n_val_bins"] > 0 and model.training["params"]["val_fraction"] == 0.15  # 16 um bins
    assert sdata.attrs["pixnet"]["last_model"] == "pixnet"


def test_fit_keeps_lightnings_console_lines_back(sdata, capfd, caplog):
    """Lightning's device lines and advert are not printed (nor logged twice); pixnet logs the device once."""
    import logging

    import lightning.pytorch  # noqa: F401  (it sets its logger's level when imported)

    lightning_logger = logging.getLogger("lightning.pytorch")
    before = lightning_logger.level
    with caplog.at_level(logging.INFO):
        pixnet.tl.fit(sdata, bin_size=16, epochs=1, tiles_per_epoch=4, **TINY)
    err = capfd.readouterr().err
    assert "GPU available" not in err and "litlogger" not in err and "LeafSpec" not in err, err
    assert not [r for r in caplog.records if r.name.startswith("lightning")]
    assert sum("training on cpu" in r.getMessage() for r in caplog.records) == 1
    assert lightning_logger.level == before  # restored after fit
    pixnet.tl.fit(sdata, bin_size=16, epochs=1, tiles_per_epoch=4, val_fraction=0, **TINY)  # no validation: no warning
    assert "val_dataloader" not in capfd.readouterr().err


def test_epochs_are_counted_from_one_in_the_log_and_on_the_progress_bar(sdata, capfd, caplog):
    """The per-epoch log line and Lightning's bar say epoch k of n as the history counts them (not from 0)."""
    import logging

    with caplog.at_level(logging.INFO, logger="pixnet.train"):
        pixnet.tl.fit(sdata, bin_size=16, epochs=2, tiles_per_epoch=4, **{**TINY, "progress": True})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split(" (")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"], lines
    assert "train loss" in lines[0] and "val PCC" in lines[0], lines[0]
    bar = "".join(capfd.readouterr())  # Lightning's bar writes to stdout
    assert "Epoch 2/2" in bar and "Epoch 0" not in bar, bar[-500:]


def test_epoch_lines_start_a_line_of_their_own_above_the_progress_bar(sdata, monkeypatch):
    """With the root logger writing to the console (as ``logging.basicConfig`` sets it), an epoch's line is not glued to the bar."""
    import io
    import logging
    import re
    import sys

    out = io.StringIO()  # stdout and stderr in one stream, as a terminal or `> log 2>&1` shows them
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", out)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    level = root.level
    root.setLevel(logging.INFO)
    try:
        pixnet.tl.fit(sdata, bin_size=16, epochs=2, tiles_per_epoch=4, **{**TINY, "progress": True})
    finally:
        root.setLevel(level)
    text = out.getvalue()
    starts = [m.start() for m in re.finditer(r"INFO pixnet\.train\.trainer: epoch \d/2", text)]
    assert len(starts) == 2, text[-2000:]
    assert all(text[i - 1] in "\r\n" for i in starts), [text[i - 80 : i + 40] for i in starts]
    assert "Epoch 2/2" in text  # the bar was there
    assert root.handlers == [handler]  # the console handler is back after fit


def test_same_seed_same_model(sdata):
    a = pixnet.tl.fit(sdata, bin_size=16, epochs=1, tiles_per_epoch=4, seed=5, **TINY)
    b = pixnet.tl.fit(sdata, bin_size=16, epochs=1, tiles_per_epoch=4, seed=5, **TINY)
    for (k, va), vb in zip(a.module.state_dict().items(), b.module.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)
    pa = pixnet.tl.predict(sdata, model=a, bin_size=16, key_added="a", progress=False)
    pb = pixnet.tl.predict(sdata, model=b, bin_size=16, key_added="b", progress=False)
    np.testing.assert_array_equal(np.asarray(pa.X), np.asarray(pb.X))  # and the same predictions


def test_fit_on_several_slides_and_spots(sdata, prefixed_dir):
    other = pixnet.io.visium_hd(prefixed_dir, bin_sizes=(8, 16))
    model = pixnet.tl.fit([sdata, other], bin_size=16, epochs=1, tiles_per_epoch=4, **TINY)
    assert model.training["params"]["n_slides"] == 2
    assert other.attrs["pixnet"]["last_model"] == "pixnet"
    # Any table annotating circles trains too (here: circles at the 16 um bins, as Visium spots would be).
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    t = sdata.tables["square_016um"].copy()
    sdata.shapes["circles"] = ShapesModel.parse(
        t.obsm["spatial"], geometry=0, radius=np.full(t.n_obs, 25.0), transformations={"global": Identity()}
    )
    del t.uns["pixnet"]
    t.obs["region"] = "circles"
    t.obs["region"] = t.obs["region"].astype("category")
    del t.uns["spatialdata_attrs"]
    sdata.tables["circle_table"] = TableModel.parse(
        t, region="circles", region_key="region", instance_key="location_id"
    )
    m = pixnet.tl.fit(sdata, table="circle_table", epochs=1, tiles_per_epoch=4, **TINY)
    assert len(m.genes) == 20


def test_fit_paper_semantics(sdata):
    m = pixnet.tl.fit(sdata, bin_size=16, epochs=1, tiles_per_epoch=4, semantics="sum", **TINY)
    assert m.config.n_outputs == 20
    t = pixnet.tl.predict(sdata, model=m, bin_size=8, progress=False, key_added="paper")
    assert "counts" not in t.layers


def test_fit_errors(sdata):
    with pytest.raises(KeyError, match="not in the table"):
        pixnet.tl.fit(sdata, bin_size=16, genes=["NOT_A_GENE"], epochs=1, progress=False)
    with pytest.raises(KeyError, match="No table of 4 um bins"):
        pixnet.tl.fit(sdata, bin_size=4, epochs=1, progress=False)
    with pytest.raises(ValueError, match="do not fit"):
        pixnet.tl.fit(sdata, bin_size=16, epochs=1, tile_px=64, context_px=8, progress=False)
    with pytest.raises(ValueError, match="multiple of 32"):
        pixnet.tl.fit(sdata, bin_size=16, epochs=1, tile_px=100, progress=False)


@pytest.mark.parametrize("half", [16.0, 16.00000000000003, 15.99999999999997])
def test_validation_tiles_score_every_bin_once(half):
    # A grid whose bins sit exactly on tile boundaries, with the rounding a rotated grid's affine leaves.
    from scipy import sparse

    from pixnet.geometry import Spots
    from pixnet.train.dataset import SlideData, TileSpec, ValTiles

    yy, xx = np.mgrid[0:20, 0:20]
    centres = np.stack([xx.ravel(), yy.ravel()], 1) * 2 * half + 448.0
    n = len(centres)
    slide = SlideData(
        np.zeros((2000, 2000, 3), np.uint8),
        Spots("square", centres, np.full(n, half), 0.0),
        sparse.identity(n, np.float32, format="csr"),
        np.ones(n),
    )  # fmt: skip  (counts: one indicator gene per bin, to see which bins each tile scores)
    tiles = ValTiles([slide], [np.ones(n, bool)], TileSpec(tile=256, context=16, map_stride=4))
    times_scored = sum(tiles[k]["counts"].sum(0) for k in range(len(tiles)))
    assert (times_scored == 1).all()


def _mean_colour(sdata, table: str, um_per_px: float = 0.5) -> np.ndarray:
    from pixnet.baselines.features import colour_texture_features
    from pixnet.data import table_spots
    from pixnet.data.slide import resolve_slide

    slide = resolve_slide(sdata)
    work = slide.working_image(um_per_px)
    spots = table_spots(sdata, table, slide.cs).spots.scaled(work.f)
    return colour_texture_features(work.load(), spots, rings=(1.0,))[:, :3]  # mean R, G, B of each bin


def test_beats_a_mean_colour_baseline_on_a_held_out_region(slide_dir):
    # Train on the left 60% of the slide's 16 um bins; score the 8 um bins of the right 40%, never seen.
    from sklearn.linear_model import RidgeCV

    from pixnet.data import table_spots

    sd = pixnet.io.visium_hd(slide_dir, bin_sizes=(8, 16))
    cs = sd.attrs["pixnet"]["coordinate_system"]
    x16 = table_spots(sd, "square_016um", cs).spots.centres[:, 0]
    cut = np.quantile(x16, 0.6)
    sd.tables["square_016um"] = sd.tables["square_016um"][x16 < cut].copy()
    model = pixnet.tl.fit(sd, bin_size=16, n_genes=50, epochs=8, val_fraction=0.0, progress=False)
    pred = pixnet.tl.predict(sd, model=model, bin_size=8, progress=False)

    held = table_spots(sd, "square_008um", cs).spots.centres[:, 0] > cut + 16 / sd.attrs["pixnet"]["um_per_px"]
    measured = pixnet.pp.log_normalize(sd.tables["square_008um"], genes=model.genes).X[held]
    train_y = pixnet.pp.log_normalize(sd.tables["square_016um"], genes=model.genes).X
    ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(_mean_colour(sd, "square_016um"), train_y)
    baseline = ridge.predict(_mean_colour(sd, "square_008um")[held])
    ours = pixnet.tl.metrics(np.asarray(pred.X)[held], measured)[0]["PCC@M"]
    colour = pixnet.tl.metrics(baseline, measured)[0]["PCC@M"]
    print(f"held-out 8 um PCC@M: pixnet {ours:.3f}, mean colour {colour:.3f}")
    assert ours > colour + MARGIN_OVER_COLOUR
