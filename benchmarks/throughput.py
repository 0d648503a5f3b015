"""Training throughput: pixnet.tl.fit's Lightning loop against a plain torch loop over the same batches.

Both loops run in this process on the same tiles (same loader, same model), alternately, twice
each; the best of each is kept. The ratio is Lightning's tiles per second over the plain loop's,
each timed over its batches (the trainer's start-up, once per fit, is left out).

    python benchmarks/throughput.py                  # CPU here, GPU when there is one
    python benchmarks/throughput.py --tiles 64 --batch-size 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from _common import WORK, record
from torch.utils.data import DataLoader

import pixnet
from pixnet.data import table_spots
from pixnet.data.slide import resolve_slide
from pixnet.model import ModelConfig, PixNetModule
from pixnet.tl.fit import training_expectation
from pixnet.train.dataset import TileSpec, spatial_split
from pixnet.train.loaders import dense_module as _dense_module
from pixnet.train.loaders import slide_data as _slide_data
from pixnet.train.loaders import tile_loaders as _tile_loaders
from pixnet.train.trainer import make_trainer

warnings.filterwarnings("ignore")


class _EpochClock(L.Callback):
    """The epoch's time, its batches only: the trainer's start-up (once per fit) would weigh on a short run."""

    def __init__(self, device: str):
        self.device = device

    def on_train_epoch_start(self, trainer, module) -> None:
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tiles", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", type=float, default=600.0)
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sdata = pixnet.io.visium_hd(pixnet.datasets.visium_hd_demo(WORK / "throughput", size_um=args.size), bin_sizes=(16,))
    slide = resolve_slide(sdata)
    genes = pixnet.pp.select_genes(sdata.tables["square_016um"], n_top=250)
    config = ModelConfig(genes=tuple(genes))
    spec = TileSpec(tile=256, context=16, map_stride=config.map_stride)
    data = [_slide_data(slide, table_spots(sdata, "square_016um", slide.cs), genes, config)]
    train = [~spatial_split(data[0].spots.centres, block=448, val_fraction=0.0, seed=0)]
    loader, _ = _tile_loaders(
        data, train, [~train[0]], spec, args.tiles, batch_size=args.batch_size, seed=0, augment=True, num_workers=0
    )
    batches = list(loader)  # the same batches for both loops, read once

    def fresh():
        torch.manual_seed(0)
        return _dense_module(
            PixNetModule(config), data, train, lr=5e-4, weight_decay=1e-4, expectation=training_expectation(config)
        ).to(device)  # the step fit trains

    def plain() -> float:
        module = fresh()
        opt = module.configure_optimizers()
        t0 = time.perf_counter()
        for batch in batches:
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                loss, _, _ = module.step(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return args.tiles / (time.perf_counter() - t0)

    def lightning() -> float:
        module = fresh()
        clock = _EpochClock(device)
        with tempfile.TemporaryDirectory() as tmp:
            trainer, _ = make_trainer(Path(tmp), epochs=1, accelerator="auto", devices=1, precision=None, has_val=False,
                                      early_stopping=None, progress=False, callbacks=[clock])  # fmt: skip
            # a list would be taken for several dataloaders: a DataLoader yielding the read batches as they are
            trainer.fit(module, DataLoader(batches, batch_size=None))
        return args.tiles / clock.seconds

    plain()  # warm-up (allocator, kernels)
    p1, l1, p2, l2 = plain(), lightning(), plain(), lightning()
    ref, ours = max(p1, p2), max(l1, l2)
    print(
        f"device {device}: plain torch {ref:.2f} tiles/s, pixnet (Lightning) {ours:.2f} tiles/s, ratio {ours / ref:.2f}"
    )
    record("throughput", {"device": device, "tiles": args.tiles, "batch_size": args.batch_size,
                          "plain_tiles_per_s": ref, "lightning_tiles_per_s": ours, "ratio": ours / ref})  # fmt: skip


if __name__ == "__main__":
    main()
