"""Whole-slide prediction into 2 um bins: time, peak memory, and predict time over the bare encoder's.

A synthetic Visium HD slide is read with pixnet.io.visium_hd and written to zarr once; then, in
a fresh process (so peak memory is predict's own), ``pixnet.tl.predict(sdata, bin_size=2)``
runs on the backed store with a model of the default architecture and 250 genes (weights do not
change the cost, so the model is untrained). In the same process the bare encoder then runs on
a sample of the same tiles (every k-th of those that hold bins, at least 8), and its time per tile times the number of
tiles is the reference: the ratio is predict's wall time over it. The encoder runs under the allocator settings
predict runs under (``pixnet._memory.resident``), and, for results before 2026-12-01, under glibc's own
(``encoder_plain_s``, ``ratio_plain``), each sampled tile both ways one after the other. The whole network
(encoder, decoder and head, channels-last as predict runs it) is timed on the same tiles too (``network_s``,
``ratio_network``): predict / encoder cannot fall below network / encoder, whatever the outputs cost. The
encoder is also timed channels-last (``encoder_channels_last_s``, ``ratio_channels_last``, since 2026-12-07):
the reference above is the encoder in its default layout, as a user runs it, which is slower on a CPU.
Since 2026-12-07 the reference encoder is also timed on the sampled tiles just before predict
(``encoder_before_s``) and predict told against the mean of the two (``ratio_bracketed``): this
machine's speed drifts by 10-20% within minutes, which one timing after predict takes in whole.
The peak memory since then is read from ``VmHWM``, reset just before predict (Linux). That pass
reads the sampled tiles' image chunks before predict does; the benchmark's store is read whole
by every run before it, so the page cache holds it either way.

    python benchmarks/predict.py                 # full size (6.5 mm capture area), CPU here, GPU when there is one
    python benchmarks/predict.py --size 2000
    python benchmarks/predict.py --bin-size 8    # 8 um bins (a new grid when the store has no 8 um table)
    python benchmarks/predict.py --layers ''     # X only (no counts and lognorm layers)
    python benchmarks/predict.py --lazy-mb 1024  # read_zarr's default: the measured 2 um counts (0.7 GB) in memory
    python benchmarks/predict.py --map false     # no map image (predict's map=False); --map float16: a half-precision map
    python benchmarks/predict.py --compare       # also the map-then-aggregate path (before the one-pass predict), same process
    python benchmarks/predict.py --trivial --compare --layers ''  # the output pipeline alone: a network that does nothing

With ``--compare`` the one-pass predict runs first (so it does not profit from the page cache
the other warms), then the map-then-aggregate path that predict takes for reused maps and
dask.distributed (the predict of commit 8329b6f), on the same store, model and arguments.
``--trivial`` swaps the network for one whose forward is an average pool, seen in every channel
(what is left is the output pipeline: aggregation, X and layers, the writes); it reports seconds
per million bins. ``--trivial-writes``: the same network writing its map out in full (2 x 83 MB a
tile at 250 genes), as ``--trivial`` did before 2026-12-01.
"""

from __future__ import annotations

import argparse
import json

from _common import HERE, WORK, record, run_child

import pixnet

CHILD = """
import json, logging, os, time, warnings
import numpy as np, spatialdata, torch
warnings.filterwarnings("ignore")
import importlib, resource
import pixnet
from pixnet.model import ModelConfig, PixNet
from pixnet.infer.dense import map_region, occupied_blocks
from pixnet.data.slide import resolve_slide
from pixnet.infer.targets import resolve_target

# the measured 2 um counts are read lazily above --lazy-mb (an earlier run's results were removed by another process)
sd = pixnet.io.read_zarr({store!r}, in_memory_limit={lazy_mb} * 2**20)
genes = list(sd.tables["square_002um"].var_names[:250])
torch.manual_seed(0)
model = pixnet.PixNet(ModelConfig(genes=tuple(genes)))


class Trivial(torch.nn.Module):  # the output pipeline alone: a map at the network's stride and channels, no work
    def __init__(self, config):
        super().__init__()
        self.config, self.w = config, torch.nn.Parameter(torch.ones(1))  # a parameter: the network's device

    def forward(self, x):
        dark = torch.nn.functional.avg_pool2d(x[:, :1], self.config.map_stride)
        if {repeat}:  # as before 2026-12-01 (issue 17): the map written out, 2 x 83 MB a tile, a network's cost
            return dark.repeat(1, self.config.n_outputs, 1, 1) * self.w
        return dark.expand(-1, self.config.n_outputs, -1, -1)  # one value per pixel, seen in every channel


net = PixNet(model.config, Trivial(model.config)) if {trivial} else model
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# the bare encoder on the tiles predict ran: same grid, same reads, only the encoder's forward timed
cfg, slide = model.config, resolve_slide(sd)
work = slide.working_image(cfg.um_per_px)
spots = resolve_target(slide, bin_size={bin_size}, shapes=None).spots.scaled(cfg.map_um_per_px / slide.um_per_px)
y0, x0, h, w = map_region(spots, work.shape, cfg.map_stride)
core, side = {tile} // cfg.map_stride, {tile} + 2 * {context}
busy = occupied_blocks(spots, (y0, x0, h, w), core)  # the tiles predict computes
tiles = [(i * core, j * core) for i, j in zip(*np.nonzero(busy))]
del spots  # the grid's copy: not held while predict runs
k = max(1, len(tiles) // {sample})
encoder = model.module.encoder.to(device).eval()
from pixnet._memory import resident
import contextlib


def timed(t, ctx, module=encoder):
    if device.type == "cuda":
        torch.cuda.synchronize()
    with ctx:
        t1 = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            module(t)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t1


def sample_tile(y, x):
    tile = np.array(work.read((y0 + y) * cfg.map_stride - {context}, (x0 + x) * cfg.map_stride - {context}, side, side))
    return torch.from_numpy(tile).to(device).permute(2, 0, 1)[None].float() / 255.0


# the reference encoder on the sampled tiles just before predict too (since 2026-12-07): this machine's speed drifts
# by 10-20% within minutes, so predict is also told against the mean of the encoder before and after it
timed(sample_tile(*tiles[0]), resident())  # untimed: the encoder's first call (its kernels' set-up) is neither's
before = [timed(sample_tile(y, x), resident()) for y, x in tiles[::k]]
pixnet._memory.trim(force=True)


def vm_hwm_gb():  # this process's peak resident memory since the last reset (Linux), else since it started
    try:
        return next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM")) / 2**20
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


rss_before_gb = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
try:  # the peak from here on: predict's own, not the encoder's above (written on close: inside the try)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
kw = dict(model=net, bin_size={bin_size}, layers={layers}, tile_px={tile}, context_px={context}, progress=False)
t0 = time.perf_counter()
table = pixnet.tl.predict(sd, key_added="bench", map={map_opt}, **kw)
if device.type == "cuda":
    torch.cuda.synchronize()
predict_s = time.perf_counter() - t0
peak_after_predict_gb = vm_hwm_gb()
old_s = None
if {compare}:  # the map-then-aggregate path, as predict was before the one pass (it always writes the map)
    mod = importlib.import_module("pixnet.tl.predict")
    stream, mod.can_stream = mod.can_stream, lambda *a, **k: False
    t0 = time.perf_counter()
    old = pixnet.tl.predict(sd, key_added="bench_old", **kw)
    old_s = time.perf_counter() - t0
    mod.can_stream = stream
    x_new, x_old = np.asarray(table.X[:200000]), np.asarray(old.X[:200000])
    max_abs_diff_x = float(np.abs(x_new - x_old).max())

# the whole network (encoder, decoder, head) as predict runs it (pixnet.infer.stream: channels-last, the decoder and
# head on the tile's core only since 2026-12-07): the floor of predict / encoder when the outputs cost nothing
import copy
from pixnet.model import forward_cropped
net_cl = copy.deepcopy(model.module).to(device, memory_format=torch.channels_last).eval()
def network(t):
    return forward_cropped(net_cl, t, {context} // cfg.map_stride)
# the encoder channels-last too: the reference above is the encoder as a user runs it (its default layout); this one
# is the encoder in predict's layout, so that the ratio is also told against the faster of the two
encoder_cl = copy.deepcopy(encoder).to(memory_format=torch.channels_last)


# each sampled tile twice: under predict's allocator settings (pixnet._memory.resident, the reference since
# 2026-12-01) and under glibc's own (the reference before), one after the other, so that load drifts alike
times, plain, whole, fast = [], [], [], []
for y, x in tiles[::k]:
    t = sample_tile(y, x)
    times.append(timed(t, resident()))
    plain.append(timed(t, contextlib.nullcontext()))
    whole.append(timed(t.contiguous(memory_format=torch.channels_last), resident(), network))
    fast.append(timed(t.contiguous(memory_format=torch.channels_last), resident(), encoder_cl))


def total(v):
    return float(np.mean(v[1:] if len(v) > 2 else v)) * len(tiles)  # the first warms up


encoder_s, encoder_plain_s, network_s, encoder_cl_s = total(times), total(plain), total(whole), total(fast)
encoder_before_s = total(before)
print(json.dumps({{"device": str(device), "n_bins": table.n_obs, "n_genes": table.n_vars, "n_tiles": len(tiles), "n_blocks": busy.size,
                  "sampled_tiles": len(times), "predict_s": predict_s, "encoder_s": encoder_s, "encoder_before_s": encoder_before_s, "encoder_plain_s": encoder_plain_s, "network_s": network_s, "encoder_channels_last_s": encoder_cl_s, "rss_before_predict_gb": rss_before_gb,
                  "peak_rss_after_predict_gb": peak_after_predict_gb, "old_predict_s": old_s,
                  "max_abs_diff_x": max_abs_diff_x if old_s is not None else None}}))
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=float, default=None, help="capture area side (um); default: full size")
    p.add_argument("--bin-size", type=float, default=2, help="predict's bin_size (um)")
    p.add_argument("--tile", type=int, default=1024, help="predict's tile_px (its default)")
    p.add_argument("--context", type=int, default=64, help="predict's context_px (its default)")
    p.add_argument("--layers", default="counts,lognorm", help="predict's layers besides X (its default); '' for X only")
    p.add_argument("--sample", type=int, default=8, help="tiles the encoder reference is timed on, at least")
    p.add_argument("--lazy-mb", type=int, default=256, help="pixnet.io.read_zarr's in_memory_limit, MB (read_zarr's own default: 1024)")
    p.add_argument("--map", default="true", choices=["true", "false", "float16"], help="predict's map (default true)")
    p.add_argument("--compare", action="store_true", help="also time the map-then-aggregate path in the same process")
    p.add_argument("--trivial", action="store_true", help="a network whose forward does nothing: the output pipeline alone")
    p.add_argument("--trivial-writes", action="store_true", help="the trivial network writes its map out (as before 2026-12-01)")
    args = p.parse_args()
    kw = {"full_size": True} if args.size is None else {"size_um": args.size}
    name = f"{args.size:g}" if args.size else "full"
    path = pixnet.datasets.visium_hd_demo(WORK / f"io_{name}", segmentation=False, **kw)  # shared with io_read.py
    store = WORK / f"predict_{name}.zarr"
    if not store.exists():
        run_child(f"import pixnet\npixnet.io.visium_hd({str(path)!r}, bin_sizes=(2,)).write({str(store)!r})")
    # an earlier run's results, removed in a process of their own: reading them would raise the measured one's memory
    run_child(f"import sys; sys.path.insert(0, {str(HERE)!r})\nfrom predict_memory import remove_earlier_results\n"
              f"remove_earlier_results({str(store)!r})\nprint('{{}}')")  # fmt: skip
    code = CHILD.format(
        store=str(store),
        bin_size=args.bin_size,
        tile=args.tile,
        context=args.context,
        sample=args.sample,
        layers=tuple(x for x in args.layers.split(",") if x),
        lazy_mb=args.lazy_mb,
        map_opt=repr({"true": True, "false": False}.get(args.map, args.map)),
        compare=args.compare,
        trivial=args.trivial or args.trivial_writes,
        repeat=args.trivial_writes,
    )
    res = run_child(code)
    ratio = res["predict_s"] / res["encoder_s"]
    bracketed = res["predict_s"] / ((res["encoder_before_s"] + res["encoder_s"]) / 2)
    print(json.dumps(res))
    print(
        f"{res['n_bins']:,} bins of {args.bin_size:g} um x {res['n_genes']} genes, {res['n_tiles']} tiles, on {res['device']}"
    )
    print(
        f"predict {res['predict_s']:.0f} s, peak RSS {res['peak_rss_after_predict_gb']:.2f} GB "
        f"({res['rss_before_predict_gb']:.2f} GB before predict: Python, the slide's elements and tables)"
    )
    print(f"bare encoder on the same tiles {res['encoder_s']:.0f} s; predict / encoder = {ratio:.2f} "
          f"(encoder under glibc's own allocator settings {res['encoder_plain_s']:.0f} s: "
          f"{res['predict_s'] / res['encoder_plain_s']:.2f})")
    print(f"the same encoder timed just before predict {res['encoder_before_s']:.0f} s: predict / the mean of the two = "
          f"{bracketed:.2f}")
    print(f"the encoder channels-last (predict's layout) {res['encoder_channels_last_s']:.0f} s: predict / it = "
          f"{res['predict_s'] / res['encoder_channels_last_s']:.2f}, network / it = "
          f"{res['network_s'] / res['encoder_channels_last_s']:.2f}")
    print(f"the whole network alone on the same tiles {res['network_s']:.0f} s ({res['network_s'] / res['encoder_s']:.2f}x the "
          f"encoder); predict / network = {res['predict_s'] / res['network_s']:.2f}")
    per_m = 1e6 / res["n_bins"] * 250 / res["n_genes"]  # per million bins x 250 genes
    print(f"one pass: {res['predict_s'] * per_m:.1f} s per million bins x 250 genes (map={args.map})")
    if "cpu_steal_pct" in res:
        print(f"the host gave {res['cpu_steal_pct']}% of the machine's CPU time to others during the run")
    if res["old_predict_s"] is not None:
        print(f"map-then-aggregate path: {res['old_predict_s']:.1f} s ({res['old_predict_s'] * per_m:.1f} s per million "
              f"bins x 250 genes), {res['old_predict_s'] / res['predict_s']:.2f}x the one pass; its / encoder = "
              f"{res['old_predict_s'] / res['encoder_s']:.2f}; max |X difference| {res['max_abs_diff_x']:.2e}")
    record(
        "predict",
        {
            **res,
            "size_um": args.size or "full",
            "bin_size_um": args.bin_size,
            "layers": args.layers,
            "lazy_mb": args.lazy_mb,
            "ratio": ratio,
            "ratio_bracketed": bracketed,
            "ratio_plain": res["predict_s"] / res["encoder_plain_s"],
            "ratio_network": res["predict_s"] / res["network_s"],
            "ratio_channels_last": res["predict_s"] / res["encoder_channels_last_s"],
            "map": args.map,
            "trivial": args.trivial or args.trivial_writes,
            "trivial_writes": args.trivial_writes,
            "s_per_million_bins_250_genes": res["predict_s"] * 1e6 / res["n_bins"] * 250 / res["n_genes"],
        },
    )


if __name__ == "__main__":
    main()
