"""Accuracy benchmark: train on slide A, predict slide B at 2, 8 and 16 um, score against the ceiling.

Two synthetic slides share one expression programme and differ in layout, stain, grid rotation
and file prefix. Every method is scored on slide B's observed counts (log-normalised, top genes)
with PCC@F/S/M, MSE and MAE; the ceiling is the perfect model (the true expected counts, through
the same noise-aware expectation pixnet reports).

    python benchmarks/accuracy.py                        # the full table, pixnet.tl.fit's defaults
    python benchmarks/accuracy.py --methods ablation --epochs 12
    python benchmarks/accuracy.py --methods pixnet --fit '{"loss": "mse_pcc"}' --tag mse
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
logging.getLogger("lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
logging.getLogger("pixnet.train.trainer").setLevel(logging.INFO)  # one line an epoch: a stopped run shows how far it got

import pixnet  # noqa: E402
from pixnet.datasets import expected_counts, visium_hd_demo  # noqa: E402
from pixnet.pp import Normalization, expected_log_normalized  # noqa: E402
from pixnet.tl import metrics  # noqa: E402

WORK = Path(__file__).parent / "_work"
SCALES = (2, 8, 16)


def _slide(path: Path, **kw) -> Path:
    try:
        return visium_hd_demo(path, **kw)
    except FileExistsError:  # made by an older generator: make it again
        return visium_hd_demo(path, overwrite=True, **kw)


def make_pair(size: float, n_genes: int = 400):
    """Slides A and B: one programme, different layout, stain, rotation and prefix."""
    a = _slide(WORK / f"A_{size:g}", size_um=size, seed=1, programme_seed=0, n_genes=n_genes, rotation_deg=1.5)
    b = _slide(
        WORK / f"B_{size:g}", size_um=size, seed=2, programme_seed=0, n_genes=n_genes, rotation_deg=-2.0,
        stain_variation=0.5, prefix="SlideB",
    )  # fmt: skip
    return a, b


def observed(sdata, b: int, genes: list[str]) -> tuple[np.ndarray, pd.Index]:
    t = sdata.tables[f"square_{b:03d}um"]
    x = t.X
    values = Normalization().apply(x[:, t.var_names.get_indexer(genes)].toarray(), np.asarray(x.sum(1)).ravel())
    return values, t.obs_names


def ceiling(path, sdata, genes: list[str]) -> dict:
    out = {}
    for b in SCALES:
        obs, names = observed(sdata, b, genes)
        truth = expected_counts(path, bin_size=b)[names]
        lam, total = truth[:, genes].X, truth.X.sum(1)
        out[f"ceiling@{b}"] = metrics(expected_log_normalized(lam, total), obs)[0]
        out[f"ceiling_naive@{b}"] = metrics(np.log1p(lam / total[:, None] * 1e4), obs)[0]
    return out


def run_pixnet(A, B, fit: dict, tag: str, scales=SCALES, table: str | None = None) -> dict:
    t0 = time.perf_counter()
    kw = {"bin_size": 16, **fit}
    if table is not None:
        kw = {**fit, "table": table, "bin_size": None}
    logging.getLogger(__name__).warning("fitting %s with %s", tag, kw)
    model = pixnet.tl.fit(A, progress=False, **kw)
    fit_s = time.perf_counter() - t0
    out = {}
    for b in scales:
        pixnet.tl.predict(B, model=model, bin_size=b, key_added=tag, overwrite=True, progress=False)
        out[f"{tag}@{b}"] = pixnet.tl.evaluate(B, bin_size=b, key_added=tag)
    out[f"{tag}@fit_seconds"] = fit_s
    out[f"{tag}@history"] = model.history
    return out


def _features(sdata, b: int, um_per_px: float = 0.5):
    from pixnet.baselines.features import colour_texture_features
    from pixnet.data import table_spots
    from pixnet.data.slide import resolve_slide

    slide = resolve_slide(sdata)
    work = slide.working_image(um_per_px)
    image = work.load()
    ts = table_spots(sdata, f"square_{b:03d}um", slide.cs)
    return colour_texture_features(image, ts.spots.scaled(work.f)), ts.table


def run_ridge(A, B, genes: list[str], scales=SCALES) -> dict:
    """Ridge regression from colour/texture features of each bin and its surroundings to its expression."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fa, ta = _features(A, 16)
    ya, _ = observed(A, 16, genes)
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13))).fit(fa, ya)
    out = {}
    for b in scales:
        fb, _ = _features(B, b)
        obs, _ = observed(B, b, genes)
        out[f"ridge@{b}"] = metrics(ridge.predict(fb), obs)[0]
    return out


ABLATIONS = {
    "reference": {},
    "no_learnable_skip": {"learnable_skip": False},
    "no_pcc_loss": {"loss": "poisson"},
    "frozen_encoder": {"freeze_encoder": True},
}


def run_visium(A, B, fit: dict) -> dict:
    """Train on Visium-like 55 um circles counted from slide A's 2 um bins; predict slide B's 2 and 8 um bins."""
    pixnet.pp.pseudo_visium(A, key_added="visium_spots", overwrite=True)
    return run_pixnet(A, B, fit, "visium55", scales=(2, 8), table="visium_spots_counts")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=float, default=1000.0, help="side of each slide's capture area, um")
    p.add_argument("--epochs", type=int, default=None, help="pixnet's epochs (default: pixnet.tl.fit's)")
    p.add_argument("--spot-epochs", type=int, default=10, help="epochs of the spot baseline (passes over the bins)")
    p.add_argument("--methods", default="ceiling,ridge,pixnet,paper,spot,visium", help="or 'ablation'")
    p.add_argument("--fit", default="{}", help="JSON of extra pixnet.tl.fit arguments")
    p.add_argument("--tag", default="pixnet")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "accuracy.jsonl"))
    args = p.parse_args()
    methods = args.methods.split(",")
    pa, pb = make_pair(args.size)
    A, B = pixnet.io.visium_hd(pa), pixnet.io.visium_hd(pb)
    genes = pixnet.pp.select_genes(A.tables["square_016um"], n_top=250)
    fit = {**({"epochs": args.epochs} if args.epochs else {}), **json.loads(args.fit)}
    t0 = time.perf_counter()
    res: dict = {}
    partial = Path(args.out).with_suffix(".running.json")

    def step(out: dict) -> None:  # keep what is done, so an interrupted long run is not lost
        res.update(out)
        _write_atomic(partial, _record(args, t0, res))

    if "ceiling" in methods:
        step(ceiling(pb, B, genes))
    if "ridge" in methods:
        step(run_ridge(A, B, genes))
    if "pixnet" in methods:
        step(run_pixnet(A, B, fit, args.tag))
    if "paper" in methods:  # the paper's choices: Eq. 5 sum, MSE + PCC, constant lr 5e-4
        paper = {"semantics": "sum", "loss": "mse_pcc", "schedule": "constant", "lr": 5e-4}
        step(run_pixnet(A, B, {**fit, **paper}, "paper_sum"))
    if "spot" in methods:
        step(run_pixnet(A, B, {**fit, "method": "spot", "epochs": args.spot_epochs}, "spot"))
    if "visium" in methods:
        step(run_visium(A, B, fit))
    if "ablation" in methods:
        for tag, change in ABLATIONS.items():
            step(run_pixnet(A, B, {**fit, **change}, f"ablation_{tag}"))
    rows = {k: v for k, v in res.items() if isinstance(v, pd.Series)}
    table = pd.DataFrame(rows).T[["PCC@F", "PCC@S", "PCC@M", "MSE", "MAE"]]
    print(table.round(3).to_string())
    for k, v in res.items():
        if k.endswith("fit_seconds"):
            print(f"{k}: {v:.0f} s")
    with open(args.out, "a") as f:
        f.write(json.dumps(_record(args, t0, res), default=float) + "\n")
    partial.unlink(missing_ok=True)


def _record(args, t0: float, res: dict) -> dict:
    return {
        "date": str(date.today()), "machine": f"{platform.node()} {platform.machine()} {platform.processor()}",
        "args": vars(args), "seconds": time.perf_counter() - t0,
        "results": {k: (v.to_dict() if isinstance(v, pd.Series) else v) for k, v in res.items()},
    }  # fmt: skip


def _write_atomic(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, default=float))
    tmp.replace(path)


if __name__ == "__main__":
    main()
