"""Epoch time with a frozen encoder: features cached once per tile-augmentation vs recomputed, same process.

Fits pixnet on a synthetic Visium HD slide with ``freeze_encoder=True`` and ``frozen_views=1``,
once with ``feature_cache="memory"`` and once with ``feature_cache=None``, each for 1 and for
``--epochs`` epochs; the steady epoch time is ``(t(E) - t(1)) / (E - 1)`` (the first epoch, which
fills the cache, and the fixed costs cancel). A fully trained encoder is timed the same way for
reference. Prints and appends a JSON record to ``benchmarks/results/frozen_cache.jsonl``.

    python benchmarks/frozen_cache.py                 # ~10 min on 2 busy CPU cores
    python benchmarks/frozen_cache.py --epochs 3 --tiles 16
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
for name in ("lightning", "lightning.pytorch"):
    logging.getLogger(name).setLevel(logging.ERROR)

import torch  # noqa: E402, F401  (imported before the record: it names torch and its threads)

import pixnet  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import record  # noqa: E402


def _time(sdata, epochs: int, **kw) -> float:
    t0 = time.perf_counter()
    pixnet.tl.fit(sdata, bin_size=16, n_genes=50, epochs=epochs, progress=False, seed=0, **kw)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--tiles", type=int, default=32, help="tiles per epoch")
    p.add_argument("--tile-px", type=int, default=256)
    p.add_argument("--encoder", default="resnet18")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        slide = pixnet.datasets.visium_hd_demo(Path(tmp) / "slide", size_um=640, seed=1)
        sdata = pixnet.io.visium_hd(slide)
        common = {"tile_px": args.tile_px, "tiles_per_epoch": args.tiles, "batch_size": 8, "encoder": args.encoder,
                  "val_fraction": 0.15}  # fmt: skip
        per_epoch = {}
        for label, kw in (
            ("frozen, cached", {"freeze_encoder": True, "feature_cache": "memory", "frozen_views": 1}),
            ("frozen, recomputed", {"freeze_encoder": True, "feature_cache": None}),
            ("trained encoder", {"freeze_encoder": False}),
        ):
            one, many = _time(sdata, 1, **common, **kw), _time(sdata, args.epochs, **common, **kw)
            per_epoch[label] = (many - one) / (args.epochs - 1)
            print(f"{label}: {per_epoch[label]:.2f} s/epoch (fits of 1, {args.epochs} epochs: {one:.1f}, {many:.1f} s)")
    ratio = per_epoch["frozen, recomputed"] / per_epoch["frozen, cached"]
    print(f"speed-up of the cache: {ratio:.2f}x; over training the encoder: "
          f"{per_epoch['trained encoder'] / per_epoch['frozen, cached']:.2f}x")  # fmt: skip
    record("frozen_cache", {"args": vars(args), "s_per_epoch": {k: round(v, 2) for k, v in per_epoch.items()},
                            "speedup": round(ratio, 2)})  # fmt: skip


if __name__ == "__main__":
    main()
