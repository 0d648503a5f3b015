import subprocess
import sys

import numpy as np
import pytest
import spatialdata as sd
import torch

import pixnet
from pixnet.cli import main


def test_fit_predict_evaluate_match_the_api(tmp_path, slide_dir, capsys):
    model_dir, result = tmp_path / "model", tmp_path / "result.zarr"
    assert (
        main(
            [
                "-q",
                "fit",
                str(slide_dir),
                "--bin-size",
                "16",
                "--out",
                str(model_dir),
                "--epochs",
                "1",
                "--n-genes",
                "12",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    cli_model = pixnet.PixNet.load(model_dir)
    api_model = pixnet.tl.fit(pixnet.io.visium_hd(slide_dir), bin_size=16, epochs=1, n_genes=12, seed=3, progress=False)
    for (k, a), b in zip(cli_model.module.state_dict().items(), api_model.module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)

    capsys.readouterr()
    assert main(["predict", str(slide_dir), "--model", str(model_dir), "--bin-size", "8", "--out", str(result)]) == 0
    assert "\r" not in capsys.readouterr().err  # no progress bar drawn into a stream that is not a terminal
    cli_table = sd.read_zarr(result).tables["pixnet_square_008um"]
    api_table = pixnet.tl.predict(pixnet.io.visium_hd(slide_dir), model=cli_model, bin_size=8, progress=False)
    assert list(cli_table.obs_names) == list(api_table.obs_names)
    np.testing.assert_allclose(np.asarray(cli_table.X), np.asarray(api_table.X), rtol=1e-5, atol=1e-6)

    capsys.readouterr()
    assert main(["evaluate", str(result), "--bin-size", "8"]) == 0
    assert '"PCC@M"' in capsys.readouterr().out
    # -v in a process of its own (its logging set up by the command): pixnet's INFO lines, not ome_zarr's
    again = ["predict", str(slide_dir), "--model", str(model_dir), "--bin-size", "8", "--out", str(tmp_path / "v.zarr")]
    out = subprocess.run([sys.executable, "-m", "pixnet", "-v", *again], capture_output=True, text=True)
    assert out.returncode == 0 and "INFO pixnet." in out.stderr and "ome_zarr" not in out.stderr, out.stderr[-2000:]


def test_quiet_and_verbose_go_before_or_after_the_command():
    from pixnet.cli import parser

    rest = ["x", "--model", "m", "--out", "o"]
    for argv, quiet, verbose in [(["predict", *rest], False, False), (["-q", "predict", *rest], True, False),
                                 (["predict", "-q", *rest], True, False), (["-v", "predict", "-q", *rest], True, True),
                                 (["predict", *rest, "--verbose"], False, True)]:  # fmt: skip
        args = parser().parse_args(argv)
        assert (args.quiet, args.verbose) == (quiet, verbose), argv


def test_bad_input_exit_code(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "missing"), "--out", str(tmp_path / "m")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(["predict", str(tmp_path), "--model", str(tmp_path / "nomodel"), "--out", str(tmp_path / "r.zarr")]) == 2
    )


def test_help_and_entry_point(capsys):
    # the entry point once in a fresh interpreter (each costs pixnet's import: ~10-25 s); the commands' help in-process
    out = subprocess.run([sys.executable, "-m", "pixnet", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "fit" in out.stdout and "predict" in out.stdout
    for cmd in ("fit", "predict", "evaluate", "demo"):
        with pytest.raises(SystemExit) as exit_:
            main([cmd, "--help"])
        assert exit_.value.code == 0 and f"pixnet {cmd}" in capsys.readouterr().out


def test_predict_from_a_zarr_v2_store_writes_a_new_one(tmp_path, sdata, trained, capsys):
    """In place, a v2 store (older spatialdata) is refused, naming --out; to another --out, written in today's format."""
    from spatialdata._io.format import (
        RasterFormatV02,
        ShapesFormatV02,
        SpatialDataContainerFormatV01,
        TablesFormatV01,
    )

    v2, model_dir = tmp_path / "v2.zarr", tmp_path / "model"
    trained.save(model_dir)
    sd.SpatialData(images={"_full_image": sdata.images["_full_image"]}, shapes={"_square_016um": sdata.shapes["_square_016um"]},
                   tables={"square_016um": sdata.tables["square_016um"]}, attrs=sdata.attrs).write(
        v2, sdata_formats=[SpatialDataContainerFormatV01(), RasterFormatV02(), ShapesFormatV02(), TablesFormatV01()])  # fmt: skip
    args = ["-q", "predict", str(v2), "--model", str(model_dir), "--bin-size", "16"]
    assert main([*args, "--out", str(v2), "--overwrite"]) == 2
    assert "pass another --out" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "new.zarr")]) == 0
    assert "pixnet_square_016um" in sd.read_zarr(tmp_path / "new.zarr").tables


def test_demo_writes_its_figures_scores_and_per_gene_scores(tmp_path, capsys):
    """What the README says the demo writes, on a small slide with one epoch (~40 s)."""
    import pandas as pd

    assert main(["demo", "--out", str(tmp_path / "out"), "--size-um", "300", "--epochs", "1"]) in (0, None)
    out = tmp_path / "out"
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures[0].startswith("01_") and figures[-1] == "06_training.png" and len(figures) == 6
    scores = pd.read_csv(out / "scores.csv", index_col=0)
    assert list(scores.index) == ["8 um", "2 um"] and {"PCC@M", "MSE", "MAE"} <= set(scores.columns)
    genes = pd.read_csv(out / "gene_scores.csv", index_col="gene")
    assert list(genes.columns) == ["8 um", "2 um"] and len(genes) == 250
    assert genes["8 um"].is_monotonic_increasing  # worst first
    assert genes["8 um"].mean() == pytest.approx(scores.loc["8 um", "PCC@M"], abs=1e-6)  # evaluate's PCC@M: their mean
    assert (out / "model" / "config.json").exists() and "gene_scores.csv" in capsys.readouterr().out
