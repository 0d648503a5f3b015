"""The network under glibc's own allocator settings and under ``pixnet._memory.resident``: time, kernel time, faults.

``resident`` raises glibc's mmap and trim thresholds so that freed blocks stay in the heap; predict
runs its one pass under it. This measures where that pays, in one process, the two settings
taking turns (``--rounds`` times each, the first of each round a warm-up):

- predict's forward: one ``--tile`` px tile (1024 + 2 x 64 context, predict's default) through
  the default network, no gradients;
- a training step: a batch of ``--batch-size`` tiles of ``--train-tile`` px (fit's defaults for
  bins up to 16 um), forward, backward and AdamW's step.

Per step: wall time, user and kernel CPU (``getrusage``), minor page faults. A page fault is a
freshly mapped page being touched: glibc maps a block over its mmap threshold afresh and unmaps
it on ``free``, so a network's activations fault in again each step unless they stay resident.

    python benchmarks/allocator.py
    python benchmarks/allocator.py --rounds 3 --steps 4
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time

import torch
from _common import record

from pixnet._memory import resident
from pixnet.model import ModelConfig, PixNet


def _usage() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def _measure(step, settings: str, steps: int) -> dict:
    with resident() if settings == "resident" else contextlib.nullcontext():
        step()  # warm-up: the heap (or glibc's dynamic threshold) settles
        u0, s0, f0 = _usage()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - t0
        u1, s1, f1 = _usage()
    return {"s": wall / steps, "user_s": (u1 - u0) / steps, "sys_s": (s1 - s0) / steps, "faults": (f1 - f0) / steps}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tile", type=int, default=1152, help="predict's tile with its context (px)")
    p.add_argument("--train-tile", type=int, default=256, help="a training tile (px)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps per turn")
    p.add_argument("--rounds", type=int, default=2, help="turns of each setting")
    args = p.parse_args()
    torch.manual_seed(0)
    net = PixNet(ModelConfig(genes=tuple(f"g{i}" for i in range(250)))).module
    tile = torch.rand(1, 3, args.tile, args.tile).contiguous(memory_format=torch.channels_last)
    batch = torch.rand(args.batch_size, 3, args.train_tile, args.train_tile)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)

    def forward():
        with torch.no_grad():
            net.eval()(tile)

    def train_step():
        loss = net.train()(batch).float().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    rows = []
    for work, step in (("predict forward", forward), ("training step", train_step)):
        for r in range(args.rounds):
            for settings in ("glibc", "resident"):
                rows.append({"work": work, "settings": settings, "round": r, **_measure(step, settings, args.steps)})
    print(f"{'work':16s} {'settings':9s} {'s/step':>7s} {'user':>6s} {'sys':>6s} {'faults':>8s}")
    for row in rows:
        print(f"{row['work']:16s} {row['settings']:9s} {row['s']:7.3f} {row['user_s']:6.2f} {row['sys_s']:6.2f} "
              f"{row['faults']:8.0f}")  # fmt: skip
    for work in ("predict forward", "training step"):
        best = {s: min(r["s"] for r in rows if r["work"] == work and r["settings"] == s) for s in ("glibc", "resident")}
        print(f"{work}: resident / glibc = {best['resident'] / best['glibc']:.2f} (best of {args.rounds} turns each)")
    record("allocator", {"tile": args.tile, "train_tile": args.train_tile, "batch_size": args.batch_size,
                         "steps": args.steps, "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
