"""Reading the 2 um bins of a full-size synthetic Visium HD slide: pixnet.io.visium_hd vs spatialdata_io.visium_hd.

Each reader runs in a fresh process (so peak memory is its own), in the same benchmark run:

    python benchmarks/io_read.py            # full size: 3350 x 3350 bins (about 7.5 million in tissue)
    python benchmarks/io_read.py --size 2000
"""

from __future__ import annotations

import argparse

from _common import WORK, record, run_child

import pixnet


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=float, default=None, help="capture area side (um); default: full size")
    args = p.parse_args()
    kw = {"full_size": True} if args.size is None else {"size_um": args.size}
    path = pixnet.datasets.visium_hd_demo(WORK / f"io_{args.size or 'full'}", segmentation=False, **kw)
    ours = run_child(
        "import pixnet, json\n"
        f"sd = pixnet.io.visium_hd({str(path)!r}, bin_sizes=(2,))\n"
        "t = sd.tables['square_002um']\nprint(json.dumps({'n_bins': t.n_obs, 'nnz': int(t.X.nnz)}))"
    )
    theirs = run_child(
        "import spatialdata_io, json, warnings\nwarnings.filterwarnings('ignore')\n"
        f"sd = spatialdata_io.visium_hd({str(path)!r}, bin_size=2, load_segmentations_only=False)\n"
        "t = sd.tables['square_002um']\nprint(json.dumps({'n_bins': t.n_obs, 'nnz': int(t.X.nnz)}))"
    )
    assert ours["n_bins"] == theirs["n_bins"] and ours["nnz"] == theirs["nnz"]
    speed, memory = theirs["wall_s"] / ours["wall_s"], theirs["peak_rss_gb"] / ours["peak_rss_gb"]
    print(f"{ours['n_bins']:,} bins of 2 um, {ours['nnz']:,} non-zero counts")
    print(f"{'reader':28s} {'time (s)':>9s} {'peak RSS (GB)':>14s}")
    print(f"{'pixnet.io.visium_hd':28s} {ours['wall_s']:9.1f} {ours['peak_rss_gb']:14.2f}")
    print(f"{'spatialdata_io.visium_hd':28s} {theirs['wall_s']:9.1f} {theirs['peak_rss_gb']:14.2f}")
    print(f"pixnet is {speed:.1f}x faster and {memory:.1f}x smaller")
    record("io_read", {"pixnet": ours, "spatialdata_io": theirs, "speedup": speed, "memory_ratio": memory})


if __name__ == "__main__":
    main()
