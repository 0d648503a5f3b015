"""The ``pixnet`` command line: fit, predict, evaluate and the demo.

Exit codes: 0 success, 2 bad input (a message says what to fix), 1 unexpected error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

from ._keys import DEFAULT_KEY_ADDED, bin_table_name, check_bin_size, is_bin_table, prediction_table

logger = logging.getLogger("pixnet")


def _bin_size(text: str) -> int | float:
    """``--bin-size``: micrometres, whole (8) or not (2.5), named as :mod:`pixnet._keys` names every bin size."""
    try:
        size = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of micrometres: {text!r}") from None
    try:
        size = check_bin_size(size)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return int(size) if size.is_integer() else size


def _read(path: str, bin_size: float, *, measured: bool):
    """A Space Ranger ``outs/`` folder (only the bins a command needs) or a SpatialData zarr store.

    ``measured``: the command needs the measured bins of ``bin_size`` (fit); otherwise (predict) a
    run without them is read at its nearest size, and a new grid of ``bin_size`` bins is laid on its array.
    """
    import spatialdata

    from . import io
    from .io import _files

    p = Path(path)
    if p.suffix == ".zarr" or (p / "zarr.json").exists() or (p / ".zgroup").exists():
        sdata = spatialdata.read_zarr(p)
        if measured and bin_table_name(bin_size) not in sdata.tables:
            have = sorted(t for t in sdata.tables if is_bin_table(t))
            raise ValueError(f"{p} has no table of {bin_size:g} um bins ({bin_table_name(bin_size)}; it has {have}). "
                             "Pass --bin-size with one of those.")  # fmt: skip
        return sdata
    outs = _files.outs_folder(p)
    have = _files.available_bin_sizes(outs)
    if not have:
        raise FileNotFoundError(
            f"{outs / 'binned_outputs'} holds no bin folders (square_002um, square_008um, square_016um); "
            f"it holds {_files.listing(outs / 'binned_outputs')}. Re-copy binned_outputs/ from the Space Ranger run."
        )
    if bin_size in have:
        return io.visium_hd(outs, bin_sizes=(bin_size,))
    if measured:
        raise ValueError(
            f"No {bin_size:g} um bins in {outs / 'binned_outputs'} (available: {', '.join(map(str, have))}). "
            "Pass --bin-size with one of those."
        )
    nearest = max([b for b in have if b <= bin_size], default=min(have))
    return io.visium_hd(outs, bin_sizes=(nearest,))


def _fit(args) -> None:
    from . import tl

    sdata = _read(args.outs, args.bin_size, measured=True)
    genes = args.genes.split(",") if args.genes else None
    model = tl.fit(
        sdata, bin_size=args.bin_size, genes=genes, n_genes=args.n_genes, epochs=args.epochs, seed=args.seed,
        checkpoint_dir=args.checkpoint_dir, accelerator=args.accelerator, progress=args.progress,
    )  # fmt: skip
    model.save(args.out, overwrite=args.overwrite)
    print(f"saved {model} to {args.out}")


def _predict(args) -> None:
    from . import tl
    from .model import PixNet

    model = PixNet.load(args.model)
    sdata = _read(args.outs, args.bin_size, measured=False)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it, or choose another --out.")
    if sdata.is_backed() and Path(sdata.path).resolve() == out.resolve():  # in place: a store pixnet can write into
        from .infer.store import check_store

        try:
            check_store(sdata)
        except ValueError as e:
            raise ValueError(f"{e} Here: pass another --out (the slide is written there in today's format).") from None
    else:
        from .infer.store import unsharded

        with unsharded():  # anndata's zarr layout of today, said (else it warns of sharding on every table)
            sdata.write(out, overwrite=args.overwrite)  # the prediction then streams into the store
        import spatialdata

        sdata = spatialdata.read_zarr(out)
    table = tl.predict(
        sdata, model=model, bin_size=args.bin_size, key_added=args.key_added, overwrite=True, progress=args.progress
    )
    name = prediction_table(args.key_added, bin_table_name(args.bin_size))
    print(f"wrote {table.n_obs} x {table.n_vars} predictions to {out} (table {name})")


def _evaluate(args) -> None:
    from . import tl

    sdata = _read(args.result, args.bin_size, measured=True)
    scores = tl.evaluate(sdata, bin_size=args.bin_size, key_added=args.key_added)
    print(json.dumps({k: (float(v) if k.startswith(("PCC", "M")) else int(v)) for k, v in scores.items()}, indent=2))


def _demo(args) -> None:
    from ._logging import logger_levels
    from .demo import run_demo

    # the demo's summary is its output; with no progress bar to watch, a line per epoch too
    names = ["pixnet.demo"] + ([] if args.progress else ["pixnet.train"])
    with logger_levels(dict.fromkeys(names, logging.INFO)):
        table = run_demo(Path(args.out), size_um=args.size_um, epochs=args.epochs, progress=args.progress)
    print("\nPrediction at bin sizes the model was not trained on (it was fitted on this slide's 16 um bins;")
    print("PCC@F, PCC@S, PCC@M: first quartile, median and mean of the per-gene Pearson correlations;")
    print("MSE, MAE: mean squared and absolute error over bins and genes of log1p(1e4 x / total)):")
    print(table.round(3).to_string())
    print(f"\nfigures, scores.csv, gene_scores.csv (per-gene PCC), the model and the synthetic slide: {args.out}/")


def _common(default) -> argparse.ArgumentParser:
    """The options of every command, with this default (each parser its own: argparse shares a parent's actions)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="no progress bars (the default when stderr is not a terminal)")  # fmt: skip
    common.add_argument("-v", "--verbose", action="store_true", default=default, help="log more")
    return common


def parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pixnet`` command."""
    p = argparse.ArgumentParser(prog="pixnet", description="Spatially dense gene expression from H&E images.",
                                parents=[_common(False)])  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, **kw) -> argparse.ArgumentParser:
        # -q and -v after the command too: set there only when given (SUPPRESS), so not undoing those given before
        return sub.add_parser(name, parents=[_common(argparse.SUPPRESS)], **kw)

    f = command("fit", help="train a model on a Visium HD run")
    f.add_argument("outs", help="Space Ranger outs/ folder (or a SpatialData .zarr)")
    f.add_argument("--bin-size", type=_bin_size, default=16, help="train on these bins (um)")
    f.add_argument("--out", required=True, help="folder to save the model to")
    f.add_argument("--epochs", type=int, default=48)
    f.add_argument("--n-genes", type=int, default=250)
    f.add_argument("--genes", help="comma-separated gene list (default: the top --n-genes)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--checkpoint-dir", help="keep checkpoints here; a killed run resumes from them")
    f.add_argument("--accelerator", default="auto", help="auto, cpu or gpu")
    f.add_argument("--overwrite", action="store_true")
    f.set_defaults(func=_fit)

    pr = command("predict", help="predict bins of a slide with a saved model")
    pr.add_argument("outs", help="Space Ranger outs/ folder (or a SpatialData .zarr)")
    pr.add_argument("--model", required=True, help="a model folder saved by `pixnet fit`")
    pr.add_argument("--bin-size", type=_bin_size, default=8, help="predict bins of this size (um; 2.5 works too)")
    pr.add_argument("--out", required=True, help="SpatialData .zarr to write (the slide with the predictions)")
    pr.add_argument("--key-added", default=DEFAULT_KEY_ADDED)
    pr.add_argument("--overwrite", action="store_true")
    pr.set_defaults(func=_predict)

    e = command("evaluate", help="score predictions against the measured bins")
    e.add_argument("result", help="SpatialData .zarr written by `pixnet predict`")
    e.add_argument("--bin-size", type=_bin_size, default=8)
    e.add_argument("--key-added", default=DEFAULT_KEY_ADDED)
    e.set_defaults(func=_evaluate)

    d = command("demo", help="fit and predict on the synthetic Visium HD slide, writing figures")
    d.add_argument("--out", default="demo_output", help="folder for the figures, scores.csv and the model")
    d.add_argument("--size-um", type=float, default=1000.0, help="side of the synthetic capture area (um)")
    d.add_argument("--epochs", type=int, default=None, help="default: the demo's short schedule")
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = parser().parse_args(argv)
    # bars redraw a line with carriage returns: in a log file (a batch job, `> log 2>&1`) they are noise
    args.progress = not args.quiet and sys.stderr.isatty()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # -v: pixnet's own INFO lines, not every library's (ome_zarr logs ~190 INFO lines reading a small store)
    logging.getLogger("pixnet").setLevel(logging.INFO if args.verbose else logging.WARNING)
    # ome_zarr warns "no parent found for <Label>" on every labels element spatialdata reads: noise here
    logging.getLogger("ome_zarr").setLevel(logging.ERROR)
    if not args.verbose:
        warnings.filterwarnings("ignore", category=FutureWarning)
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        args.func(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"pixnet {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pixnet: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
