"""Every bin size, whole or not, round-trips through fit, predict, evaluate, the plots and the CLI (issue 16).

Each verb finds the elements named by :mod:`pixnet._keys` for its bin size, or refuses with an
error that names what it looked for. The synthetic slide has measured tables at 2, 8 and 16 um
only: 2.5 um must never be read as 2 um (what ``int(2.5)`` used to do).
"""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import spatialdata as sd

import pixnet
from pixnet._keys import barcode_prefix, bin_size_of, bin_table_name, check_bin_size, prediction_table
from pixnet.cli import main

SIZES = (2.5, 4, 8, 32, 55)
MEASURED = 8  # the one size of SIZES with a measured table
FIT = {"n_genes": 8, "epochs": 1, "tiles_per_epoch": 2, "batch_size": 2, "tile_px": 64, "context_px": 8}


def test_names_are_unambiguous():
    assert bin_table_name(8) == bin_table_name(8.0) == "square_008um"
    assert bin_table_name(2.5) == "square_002.5um"
    assert bin_table_name(2) == "square_002um" != bin_table_name(2.5)
    assert bin_table_name(55) == "square_055um"
    assert bin_table_name(12.25) == "square_012.25um"
    assert barcode_prefix(2.5) == "s_002.5um_" and barcode_prefix(16) == "s_016um_"
    for size in (*SIZES, 2, 16, 12.25, 0.75, 100):
        assert bin_size_of(bin_table_name(size)) == size
    for bad in (0, -8, "8", True, 2.0001, float("nan")):
        with pytest.raises(ValueError, match="bin_size"):
            bin_table_name(bad)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    return pixnet.datasets.visium_hd_demo(tmp_path_factory.mktemp("bins") / "slide", size_um=160, seed=5)


@pytest.fixture(scope="module")
def fitted(slide):
    sdata = pixnet.io.visium_hd(slide)
    model = pixnet.tl.fit(sdata, bin_size=MEASURED, progress=False, **FIT)
    assert model.training["params"]["table"] == [bin_table_name(MEASURED)]
    return sdata, model


@pytest.mark.parametrize("size", [s for s in SIZES if s != MEASURED])
def test_fit_refuses_sizes_without_a_measured_table(fitted, size):
    sdata, _ = fitted
    assert bin_table_name(2) in sdata.tables  # the 2 um table is there: 2.5 must not fall back to it
    with pytest.raises(KeyError, match=rf"No table of {size:g} um bins \('{bin_table_name(size)}'\)"):
        pixnet.tl.fit(sdata, bin_size=size, progress=False, **FIT)


def test_predict_evaluate_plot_find_their_elements(fitted, tmp_path):
    sdata, model = fitted
    pixnet.tl.predict(sdata, model=model, bin_size=2, progress=False)  # a 2 um prediction 2.5 must not pick up
    for size in SIZES:
        name = prediction_table("pixnet", bin_table_name(size))
        table = pixnet.tl.predict(sdata, model=model, bin_size=size, overwrite=True, progress=False)
        assert name in sdata.tables and sdata.tables[name] is table
        assert table.uns["pixnet"]["target"] == bin_table_name(size)
        assert f"{name}_shapes" in sdata.shapes or f"{name}_labels" in sdata.labels
        assert table.uns["pixnet"]["grid"]["bin_size_um"] == pytest.approx(size)
        if size == MEASURED:  # the measured bins, exactly
            assert list(table.obs_names) == list(sdata.tables[bin_table_name(size)].obs_names)
            scores = pixnet.tl.evaluate(sdata, bin_size=size)
            assert scores.name == name and np.isfinite(scores["PCC@M"])
        else:  # a new grid of this size, named for it; nothing measured to score it against
            assert all(n.startswith(barcode_prefix(size)) for n in table.obs_names)
            with pytest.raises(KeyError, match=f"No measured table for '{bin_table_name(size)}'"):
                pixnet.tl.evaluate(sdata, bin_size=size)
        pixnet.pl.expression(sdata, model.genes[:1], bin_size=size, show=False, save=tmp_path / f"{size}.png")
        assert (tmp_path / f"{size}.png").is_file()
        plt.close("all")


def test_cli_at_every_size(fitted, tmp_path, capsys):
    sdata, model = fitted
    model_dir, store = tmp_path / "model", tmp_path / "slide.zarr"
    model.save(model_dir)
    sdata.write(store)
    for size in SIZES:
        arg = f"{size:g}"
        name = prediction_table("pixnet", bin_table_name(size))
        assert main(["-q", "predict", str(store), "--model", str(model_dir), "--bin-size", arg, "--out", str(store),
                     "--overwrite"]) == 0  # fmt: skip
        assert f"(table {name})" in capsys.readouterr().out
        assert name in sd.read_zarr(store).tables
        code = main(["evaluate", str(store), "--bin-size", arg])
        err = capsys.readouterr().err
        if size == MEASURED:
            assert code == 0
        else:
            assert code == 2 and bin_table_name(size) in err
            assert main(["-q", "fit", str(store), "--bin-size", arg, "--out", str(tmp_path / "m")]) == 2
            assert bin_table_name(size) in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse refuses it before anything runs
        main(["predict", str(store), "--model", str(model_dir), "--bin-size", "2.0001", "--out", str(store)])
    assert exit_.value.code == 2 and "decimals" in capsys.readouterr().err


def test_check_bin_size_keeps_whole_sizes_whole():
    assert check_bin_size(8) == 8.0 and check_bin_size(2.5) == 2.5


def test_predict_names_the_slide_scale_as_fit_does(fitted):
    sdata, model = fitted
    with pytest.raises(ValueError, match="slide_um_per_px"):
        pixnet.tl.predict(sdata, model=model, bin_size=8, slide_um_per_px=0.5, um_per_px=0.25)
    scale = sdata.attrs["pixnet"]["um_per_px"]
    table = pixnet.tl.predict(sdata, model=model, bin_size=16, slide_um_per_px=scale, key_added="s", progress=False)
    assert "s_square_016um" in sdata.tables and table.uns["pixnet"]["um_per_px"] == pytest.approx(scale)
