"""Peak memory of one training step per encoder: batch 8 of 256 px tiles, encoder trained vs frozen (CPU RSS).

Each model runs in a fresh Python process: the whole pixnet network (encoder, u-net decoder,
head; 50 genes; random weights) is built, then one forward and backward pass on a batch of 8
tiles of 256 x 256 px. Reported per model and mode, in GB: the weights (RSS growth when the
network is built) and the peak RSS of the step above the process's RSS after its imports
(weights + gradients + activations; no optimiser state, which adds 2x the trained weights for
Adam). "frozen": the encoder's pretrained part has ``requires_grad=False`` (a ViT's pyramid is
still trained), as ``fit(..., freeze_encoder=True)`` trains it without a cache.

The frozen step runs first in the same process (its peak is the lower one; ``ru_maxrss`` only
grows). A ViT is measured at depths 1 and 2: every block adds the same weights, gradients and
activations, so memory is linear in depth and the full depth's is extrapolated from those two
(marked ``~``); this keeps the run to minutes on a shared CPU and within 8 GB for ViT-H and
ViT-g, whose full training step would not fit. ``--full`` also measures the listed ViTs at full
depth, which checks the extrapolation. CPU RSS: GPU memory differs (CUDA context, cuDNN
workspaces, bf16 activations in ``fit`` on a GPU).

    python benchmarks/encoder_memory.py                       # ~20 min on 2 busy cores
    python benchmarks/encoder_memory.py --models resnet18,vit-b16 --full none
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import record, run_child

log = logging.getLogger("encoder_memory")

#: name -> (what it stands for, ModelConfig.encoder, encoder_spec or None). Random weights throughout.
MODELS = {
    "resnet18": ("random / Ciga et al. ResNet18", "resnet18", None),
    "resnet50": ("ImageNet ResNet50", "resnet50", None),
    "vit-b16": ("Phikon (ViT-B/16)", "vit_base_patch16_224", {}),
    "vit-l16": ("UNI (ViT-L/16)", "vit_large_patch16_224", {"init_values": 1e-5}),
    "vit-h14": ("UNI2-h (ViT-H/14, SwiGLU, 8 registers)", "vit_giant_patch14_224",
                {"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5,
                 "embed_dim": 1536, "mlp_ratio": 2.66667 * 2, "no_embed_class": True, "reg_tokens": 8,
                 "mlp_layer": "swiglu_packed", "act_layer": "silu"}),
    "vit-g14": ("H-optimus-0 (ViT-g/14, 4 registers)", "vit_giant_patch14_reg4_dinov2",
                {"img_size": 224, "init_values": 1e-5}),
}  # fmt: skip

CHILD = r"""
import json, resource, time
import torch
torch.set_num_threads({threads})
import psutil
from pixnet.model import ModelConfig, PixNetModule
from pixnet.model.encoder import frozen_part
rss = lambda: psutil.Process().memory_info().rss / 2**30
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
base = rss()
torch.manual_seed(0)
spec = {spec}
if spec is not None:
    spec = {{"arch": {arch!r}, "kwargs": spec, "mean": [0.5] * 3, "std": [0.5] * 3}}
net = PixNetModule(ModelConfig(genes=tuple(f"g{{i}}" for i in range(50)), encoder={arch!r}, encoder_spec=spec))
net.train()
res = {{"weights_gb": rss() - base, "encoder_params_m": sum(p.numel() for p in net.encoder.parameters()) / 1e6}}
x = torch.rand({batch}, 3, {px}, {px})
for mode in ("frozen", "trained"):  # frozen first: its peak is the lower one, and ru_maxrss only grows
    frozen_part(net.encoder).requires_grad_(mode == "trained")
    t0 = time.perf_counter()
    net(x).float().mean().backward()
    res[mode] = {{"peak_gb": peak() - base, "step_s": time.perf_counter() - t0}}
print(json.dumps(res))
"""


def measure(arch: str, spec: dict | None, args) -> dict:
    code = CHILD.format(arch=arch, spec=repr(spec), batch=args.batch, px=args.px, threads=args.threads)
    return run_child(code, timeout=3600)


def run_model(name: str, args) -> dict:
    label, arch, spec = MODELS[name]
    row: dict = {"model": name, "stands_for": label}
    if spec is None:  # CNNs: measured as they are
        row.update(measure(arch, spec, args), how="measured")
        log.info("%s: %s", name, row)
        return row
    depth = spec.get("depth") or len(_meta_model(name).blocks)  # the full depth, to extrapolate to
    small = {d: measure(arch, {**spec, "depth": d}, args) for d in (1, 2)}
    line = lambda get: get(small[1]) + (get(small[2]) - get(small[1])) * (depth - 1)
    row.update(
        weights_gb=line(lambda r: r["weights_gb"]), depth=depth, small=small, how="extrapolated from depths 1 and 2",
        **{m: {"peak_gb": line(lambda r, m=m: r[m]["peak_gb"])} for m in ("frozen", "trained")},
    )  # fmt: skip
    if name in args.full.split(","):
        row["measured"] = measure(arch, spec, args)
    log.info("%s: %s", name, {k: v for k, v in row.items() if k != "small"})
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--px", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--full", default="vit-b16", help="ViTs also measured at full depth (checks the extrapolation)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rows = [run_model(name, args) for name in args.models.split(",")]
    print(f"\nOne training step, batch {args.batch} x {args.px} px: CPU peak RSS above the imports, GB (~ extrapolated)")
    print(f"{'model':<9} {'stands for':<40} {'params M':>8} {'weights':>8} {'trained':>8} {'frozen':>8}")
    for r in rows:
        m = "~" if r["how"] != "measured" else ""
        print(f"{r['model']:<9} {r['stands_for']:<40} {_params(r['model']):>8.0f} {m + format(r['weights_gb'], '.2f'):>8} "
              f"{m + format(r['trained']['peak_gb'], '.2f'):>8} {m + format(r['frozen']['peak_gb'], '.2f'):>8}")
        if "measured" in r:
            f = r["measured"]
            print(f"{'':<9} {'  measured at full depth':<40} {'':>8} {f['weights_gb']:>8.2f} "
                  f"{f['trained']['peak_gb']:>8.2f} {f['frozen']['peak_gb']:>8.2f}")
    record("encoder_memory", {"args": vars(args), "rows": rows})


def _meta_model(name: str):
    import timm
    import torch

    from pixnet.model.vit_args import timm_kwargs

    _, arch, spec = MODELS[name]
    with torch.device("meta"):
        return timm.create_model(arch, pretrained=False, num_classes=0, **timm_kwargs(spec or {}))


def _params(name: str) -> float:
    return sum(q.numel() for q in _meta_model(name).parameters()) / 1e6


if __name__ == "__main__":
    main()
