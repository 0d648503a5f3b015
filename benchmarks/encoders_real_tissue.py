"""Real tissue, encoders: random-init ResNet18 vs a SimSiam warm start vs that warm start frozen (HER2ST).

Leave-one-section-out on HER2ST C2-C5, scored as ``benchmarks/real_tissue.py`` scores (its
functions are imported: ``read_section``, ``top_genes``, ``run_pixnet``). Per held-out section:

- ``random``: ``pixnet.tl.fit`` from a random ResNet18 (the reference of ``real_tissue.py``);
- ``ssl``: :func:`pixnet.tl.pretrain` (SimSiam) on the tiles of the **three training sections**,
  then ``fit(..., encoder_weights=<that folder>)``;
- ``ssl-frozen``: the same warm start, ``freeze_encoder=True`` (features cached, decoder trained).

The warm start sees only the training sections' images, never the held-out one's: pretraining
uses no expression, so pretraining on all four would be legitimate (and is what a user with
their own slides would do), but keeping the held-out image out makes the comparison free of any
doubt about transduction and measures what a shipped warm start gives on a new section.
``--ssl-on all`` pretrains on all four images instead (then one pretrain serves every fold).

    python benchmarks/encoders_real_tissue.py --quick --folds C5      # end to end in minutes
    python benchmarks/encoders_real_tissue.py                         # the full run (see docs/encoders.md)

Records are appended to ``benchmarks/results/encoders_real_tissue.jsonl``; a stopped run keeps
its finished rows in ``encoders_real_tissue.running.json``. The data stay in ``../shared``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import pandas as pd
import real_tissue as rt
from _common import record

import pixnet

log = logging.getLogger("encoders_real_tissue")
log.setLevel(logging.INFO)
logging.getLogger("pixnet.tl.pretrain").setLevel(logging.INFO)
RUNNING = rt.HERE / "results" / "encoders_real_tissue.running.json"

#: The full run's budget (CPU): fit as real_tissue.py's cpu-e12 record; SimSiam 8 epochs of 1024 tiles.
FULL = {"fit": {"epochs": 12}, "pretrain": {"n_tiles": 1024, "epochs": 8, "batch_size": 32}}
QUICK = {"fit": {"epochs": 1, "tiles_per_epoch": 16}, "pretrain": {"n_tiles": 64, "epochs": 1, "batch_size": 16}}
METHODS = ("random", "ssl", "ssl-frozen")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folds", default=",".join(rt.SECTIONS), help="held-out sections")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--ssl-on", choices=("train", "all"), default="train", help="sections the warm start sees")
    p.add_argument("--quick", action="store_true", help="tiny budgets: checks the script end to end")
    p.add_argument("--fit", default="{}", help="JSON of extra pixnet.tl.fit arguments (every method)")
    p.add_argument("--pretrain", default="{}", help="JSON of extra pixnet.tl.pretrain arguments")
    p.add_argument("--tag", default=None)
    p.add_argument("--data", default=str(rt.DATA))
    args = p.parse_args()
    budget = QUICK if args.quick else FULL
    fit = {**budget["fit"], **json.loads(args.fit)}
    pre = {**budget["pretrain"], **json.loads(args.pretrain)}
    tag = args.tag or ("quick" if args.quick else "cpu-e12-ssl8")
    methods = args.methods.split(",")
    t_start = time.perf_counter()
    sdatas = {n: rt.read_section(n, Path(args.data)) for n in rt.SECTIONS}
    rows, shared_ssl = [], None
    with tempfile.TemporaryDirectory(prefix="pixnet-ssl-") as tmp:
        for held in args.folds.split(","):
            train = [sdatas[n] for n in rt.SECTIONS if n != held]
            genes = rt.top_genes(train, list(sdatas.values()))
            ssl, pre_s = None, 0.0
            if any(m.startswith("ssl") for m in methods):
                if args.ssl_on == "all" and shared_ssl is not None:
                    ssl, pre_s = shared_ssl
                else:
                    images = list(sdatas.values()) if args.ssl_on == "all" else train
                    t0 = time.perf_counter()
                    ssl = pixnet.tl.pretrain(images, out=Path(tmp) / f"ssl-{held}", progress=False, **pre)
                    pre_s = time.perf_counter() - t0
                    log.info("fold %s: pretrained in %.0f s", held, pre_s)
                    shared_ssl = (ssl, pre_s) if args.ssl_on == "all" else None
            for method in methods:
                kw = dict(fit)
                if method.startswith("ssl"):
                    kw["encoder_weights"] = str(ssl)
                if method == "ssl-frozen":
                    kw["freeze_encoder"] = True
                log.info("fold %s: %s", held, method)
                res, fit_s = rt.run_pixnet(train, sdatas[held], genes, kw, tag=method.replace("-", "_"))
                row = {"held_out": held, "method": method, "fit_s": round(fit_s, 1),
                       "pretrain_s": round(pre_s, 1) if method.startswith("ssl") else 0.0, **res}  # fmt: skip
                rows.append(row)
                log.info("%s", {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
                rt._write_atomic(RUNNING, {"tag": tag, "fit": fit, "pretrain": pre, "rows": rows})
    table = pd.DataFrame(rows)
    print(table.pivot(index="held_out", columns="method", values="PCC@M").round(3).to_string())
    cols = ["PCC@F", "PCC@S", "PCC@M", "PCC@M-res", "MSE", "fit_s", "pretrain_s"]
    print(table.groupby("method")[cols].mean().T.round(3).to_string())
    write_record(tag=tag, fit=fit, pretrain=pre, ssl_on=args.ssl_on, methods=methods, folds=args.folds,
                 wall_s=round(time.perf_counter() - t_start, 1), rows=rows)  # fmt: skip


def write_record(*, folder: str | Path | None = None, **fields) -> dict:
    """One run's record (tag, budgets, folds, wall time, rows), appended by ``_common.record`` to
    ``results/encoders_real_tissue.jsonl`` (or ``folder``), with the date, machine, torch threads and command."""
    import torch  # noqa: F401  (imported already by pixnet: the record names its version and threads)

    return record("encoders_real_tissue", fields, folder=folder)


if __name__ == "__main__":
    main()
