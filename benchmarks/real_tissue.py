"""Real tissue: leave-one-section-out on HER2ST C2-C5 (legacy ST, 100 um spots), pixnet against baselines.

Each fold trains on three sections and predicts the spots of the fourth from its H&E alone.
Methods: pixnet (``pixnet.tl.fit``'s defaults unless ``--fit`` says otherwise), the spot
regressor (``method="spot"``, an ST-Net-like CNN from each spot's crop) and a ridge regression
on colour/texture features, all on the 250 genes of highest mean count in the training
sections (among the genes all four sections measured). Scores: PCC@F/S/M, MSE, MAE on the
log-normalised counts, the PCC of a few markers, and ``PCC@M-res``: each gene's PCC after the
spot's mean over the 250 genes (the shared factor: cellularity, total expression) is regressed
out of prediction and measurement, i.e. the gene-specific structure.

The data are read from ``../shared/data/her2st`` (never copied into the repository).

    python benchmarks/real_tissue.py                              # all folds, all methods
    python benchmarks/real_tissue.py --methods pixnet --folds C2 --fit '{"epochs": 12}' --tag e12
    python benchmarks/real_tissue.py --methods pixnet --seeds 0,1,2 --tta 8 --keep   # + the 3 seeds' ensemble, views
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
for name in ("lightning", "lightning.pytorch"):
    logging.getLogger(name).setLevel(logging.ERROR)
logging.getLogger("pixnet.train.trainer").setLevel(logging.INFO)

import pixnet  # noqa: E402
from pixnet.pp import Normalization  # noqa: E402
from pixnet.tl import metrics  # noqa: E402

HERE = Path(__file__).parent
DATA = HERE.parent.parent / "shared" / "data" / "her2st"
SECTIONS = ("C2", "C3", "C4", "C5")
MARKERS = ("ERBB2", "GRB7", "MGP", "TFF3", "IGKC", "FASN", "SCD", "COL1A1")
RESULTS = HERE / "results" / "real_tissue.jsonl"
RUNNING = HERE / "results" / "real_tissue.running.json"
WORK = HERE / "_work"  # as benchmarks/_common.py: ignored by git
log = logging.getLogger("her2st")
log.setLevel(logging.INFO)


def read_section(name: str, data: Path = DATA):
    image = next((data / "ST-imgs" / name).glob("*.jpg"))
    return pixnet.io.legacy_st(
        image=image, counts=data / "ST-cnts" / f"{name}.tsv.gz",
        spots_file=data / "ST-spotfiles" / f"{name}_selection.tsv", sample_id=name,
    )  # fmt: skip


def top_genes(train, everyone, n: int = 250) -> list[str]:
    """The ``n`` genes of highest mean count over the training spots, among genes every section has."""
    shared = everyone[0].tables["table"].var_names
    for s in everyone[1:]:
        shared = shared.intersection(s.tables["table"].var_names)
    sums = sum(np.asarray(s.tables["table"][:, shared].X.sum(0)).ravel() for s in train)
    n_spots = sum(s.tables["table"].n_obs for s in train)
    order = np.argsort(-sums / n_spots, kind="stable")[:n]
    return shared[order].tolist()


def measured(sdata, genes, names=None) -> np.ndarray:
    t = sdata.tables["table"]
    if names is not None:
        t = t[names]
    x = t.X
    return Normalization().apply(x[:, t.var_names.get_indexer(genes)].toarray(), np.asarray(x.sum(1)).ravel())


def residual_pcc(pred: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Per-gene PCC after each side's per-spot mean over genes is regressed out (gene-specific structure)."""

    def resid(v):
        f = v.mean(1, keepdims=True)
        f = f - f.mean()
        vc = v - v.mean(0)
        beta = (f * vc).sum(0) / max(float((f * f).sum()), 1e-12)
        return vc - f * beta

    p, m = resid(pred), resid(obs)
    den = np.sqrt((p * p).sum(0) * (m * m).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (p * m).sum(0) / den, np.nan)


def score(pred: np.ndarray, obs: np.ndarray, genes: list[str]) -> dict:
    summary, per_gene = metrics(pred, obs, genes)
    out = {k: float(v) for k, v in summary.items()}
    res = residual_pcc(pred, obs)
    out["PCC@M-res"] = float(np.nanmean(res))
    for g in MARKERS:
        if g in genes:
            out[f"pcc:{g}"] = float(per_gene.loc[g, "pcc"])
            out[f"res:{g}"] = float(res[genes.index(g)])
    return out


def run_pixnet(train, test, genes, fit: dict, tag: str) -> tuple[dict, float]:
    model, fit_s = fit_pixnet(train, genes, fit)
    return score_pixnet(model, test, genes, tag), fit_s


def fit_pixnet(train, genes, fit: dict, keep: Path | None = None):
    """Fit (or, with ``keep``, load the model an earlier run saved there with the same arguments)."""
    if keep is not None and (keep / "fit_s.json").is_file():
        return pixnet.PixNet.load(keep), json.loads((keep / "fit_s.json").read_text())
    t0 = time.perf_counter()
    model = pixnet.tl.fit(train, table="table", genes=genes, progress=False, **fit)
    fit_s = time.perf_counter() - t0
    if keep is not None:
        model.save(keep, overwrite=True)
        (keep / "fit_s.json").write_text(json.dumps(fit_s))
    return model, fit_s


def kept(held: str, genes, fit: dict) -> Path:
    """Where a fitted model is kept between runs: named by the fold, the genes and the fit arguments."""
    key = json.dumps({"held": held, "genes": genes, "fit": fit}, sort_keys=True)
    return WORK / "real_tissue_models" / f"{held}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def score_pixnet(model, test, genes, tag: str, tta: int = 1) -> dict:
    """Predict the held-out section's spots (``tta`` dihedral views averaged) and score them."""
    pixnet.tl.predict(test, model=model, shapes="spots", key_added=tag, overwrite=True, tta=tta, progress=False)
    pred = test.tables[f"{tag}_spots"]
    obs = measured(test, genes, pred.obs_names)
    return score(np.asarray(pred[:, genes].X), obs, genes)


def pixnet_rows(train, test, genes, fit: dict, args, held: str) -> list[dict]:
    """pixnet's rows of a fold: the first seed's model alone, with ``--tta`` views, and the seeds' ensemble.

    All are the same fitted models scored differently: paired comparisons.
    """
    seeds = [int(s) for s in args.seeds.split(",")]
    models, times = [], []
    for seed in seeds:
        kw = {**fit, "seed": seed} if seed else fit  # seed 0 is fit's default: the same key as earlier runs
        model, fit_s = fit_pixnet(train, genes, kw, kept(held, genes, kw) if args.keep else None)
        models.append(model)
        times.append(fit_s)
    scored = [("pixnet", models[0], 1, times[0])]
    if args.tta > 1:
        scored.append((f"pixnet+tta{args.tta}", models[0], args.tta, times[0]))
    if len(models) > 1:
        n = len(models)
        scored.append((f"pixnet+ens{n}", models, 1, sum(times)))
        if args.tta > 1:
            scored.append((f"pixnet+ens{n}+tta{args.tta}", models, args.tta, sum(times)))
    rows = []
    for name, model, tta, fit_s in scored:
        res = score_pixnet(model, test, genes, tag="pixnet", tta=tta)
        rows.append({"held_out": held, "method": name, "fit_s": round(fit_s, 1), **res})
        log.info("%s", {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()})
    return rows


def run_ridge(train, test, genes, um_per_px: float = 2.0) -> tuple[dict, float]:
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pixnet.baselines.features import colour_texture_features
    from pixnet.data import table_spots
    from pixnet.data.slide import resolve_slide

    def features(sdata):
        slide = resolve_slide(sdata)
        work = slide.working_image(um_per_px)
        ts = table_spots(sdata, "table", slide.cs)
        return colour_texture_features(work.load(), ts.spots.scaled(work.f))

    t0 = time.perf_counter()
    x = np.concatenate([features(s) for s in train])
    y = np.concatenate([measured(s, genes) for s in train])
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13))).fit(x, y)
    fit_s = time.perf_counter() - t0
    return score(ridge.predict(features(test)), measured(test, genes), genes), fit_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="pixnet,spot,ridge")
    p.add_argument("--folds", default=",".join(SECTIONS), help="held-out sections")
    p.add_argument("--fit", default="{}", help="JSON of extra pixnet.tl.fit arguments (both CNN methods)")
    p.add_argument("--tag", default="default")
    p.add_argument("--tta", type=int, default=1, help="also score pixnet with 4 or 8 dihedral views averaged")
    p.add_argument("--seeds", default="0", help="pixnet: fit once per seed; with several, also score their ensemble")
    p.add_argument("--keep", action="store_true", help="keep fitted models in _work/ and reuse them in later runs")
    p.add_argument("--data", default=str(DATA))
    args = p.parse_args()
    fit = json.loads(args.fit)
    t_start = time.perf_counter()
    sdatas = {n: read_section(n, Path(args.data)) for n in SECTIONS}
    rows = []
    for held in args.folds.split(","):
        train = [sdatas[n] for n in SECTIONS if n != held]
        test = sdatas[held]
        genes = top_genes(train, list(sdatas.values()))
        for method in args.methods.split(","):
            log.info("fold %s: %s", held, method)
            if method == "pixnet":
                rows += pixnet_rows(train, test, genes, fit, args, held)
            else:
                if method == "ridge":
                    res, fit_s = run_ridge(train, test, genes)
                else:
                    model, fit_s = fit_pixnet(train, genes, {**fit, "method": method})
                    res = score_pixnet(model, test, genes, tag=method)
                rows.append({"held_out": held, "method": method, "fit_s": round(fit_s, 1), **res})
                log.info("%s", {k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()})
            _write_atomic(RUNNING, {"tag": args.tag, "fit": fit, "rows": rows})  # a stopped run keeps its folds
    table = pd.DataFrame(rows)
    cols = ["PCC@F", "PCC@S", "PCC@M", "PCC@M-res", "MSE", "MAE", "fit_s"]
    print(table.pivot(index="held_out", columns="method", values="PCC@M").round(3).to_string())
    print(table.groupby("method")[cols + [c for c in table.columns if c.startswith(("pcc:", "res:"))]].mean().T.round(3).to_string())
    record = {
        "date": datetime.now(UTC).isoformat(timespec="minutes"), "tag": args.tag, "fit": fit,
        "methods": args.methods, "folds": args.folds, "wall_s": round(time.perf_counter() - t_start, 1),
        "machine": _machine(), "rows": rows,
    }  # fmt: skip
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _write_atomic(path: Path, record: dict) -> None:
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


def _machine() -> str:
    import os
    import platform

    import torch

    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}"


if __name__ == "__main__":
    main()
