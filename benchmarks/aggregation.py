"""Aggregating a dense map into bins: pixnet's sparse area weights against spatialdata's labels path.

A spatialdata user today rasterises the bins to labels (one label per map pixel, by pixel centre)
and calls ``spatialdata.aggregate(values=image, by=labels)``. pixnet aggregates with sparse area
weights, strip by strip. With ``supersample=1`` (pixel-centre masks) both give the same values,
which this benchmark checks; pixnet's default (4x4 sub-pixels, the exact area) is timed too.

    python benchmarks/aggregation.py                # 512 x 512 map, 32 channels, 13k bins (~2 min)

spatialdata's path grows with bins x channels (a 1024 x 1024 x 251 map did not finish in 15 min here).
"""

from __future__ import annotations

import argparse
import time
import warnings

import dask.array as da
import numpy as np
import spatialdata
from _common import record
from spatialdata.models import Image2DModel, Labels2DModel
from spatialdata.transformations import Identity

from pixnet.geometry import BinGrid, Spots
from pixnet.infer.dense import aggregate_lazy

warnings.filterwarnings("ignore")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--side", type=int, default=512, help="map side in pixels (2 um per pixel)")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--bin-px", type=float, default=4.0, help="bin side in map pixels (8 um bins on a 2 um map)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    side, c = args.side, args.channels
    image = rng.gamma(0.5, 1.0, (c, side, side)).astype(np.float32)
    angle = np.deg2rad(1.5)  # a real array is slightly rotated on the image
    s = args.bin_px
    affine = np.array(
        [[s * np.cos(angle), -s * np.sin(angle), 12.0], [s * np.sin(angle), s * np.cos(angle), 9.0], [0, 0, 1]]
    )
    grid = BinGrid(affine, 8.0, 2.0)
    n = int((side - 30) / s / 1.05)
    rows, cols = np.divmod(np.arange(n * n), n)
    spots = Spots("square", grid.centres(rows, cols), np.full(n * n, s / 2), grid.angle)

    # spatialdata: rasterise bins to labels by pixel centre, then aggregate the image by labels.
    t0 = time.perf_counter()
    yy, xx = np.mgrid[0:side, 0:side] + 0.5
    r, cc = grid.index_of(xx.ravel(), yy.ravel())
    inside = (r >= 0) & (r < n) & (cc >= 0) & (cc < n)
    labels = np.zeros(side * side, np.int32)
    labels[inside] = r[inside] * n + cc[inside] + 1
    sd = spatialdata.SpatialData(
        images={"map": Image2DModel.parse(image, dims=("c", "y", "x"), transformations={"global": Identity()})},
        labels={
            "bins": Labels2DModel.parse(
                labels.reshape(side, side), dims=("y", "x"), transformations={"global": Identity()}
            )
        },
    )
    agg = spatialdata.aggregate(
        values="map", by="bins", values_sdata=sd, by_sdata=sd, agg_func="sum", target_coordinate_system="global"
    )
    table = agg.tables["table"]
    t_sd = time.perf_counter() - t0
    ids = table.obs["instance_id"].to_numpy().astype(int) - 1
    ref = np.zeros((n * n, c), np.float32)
    ref[ids] = np.asarray(table.X.todense() if hasattr(table.X, "todense") else table.X)

    dmap = da.from_array(image, chunks=(c, 512, 512))
    timings = {}
    for ss in (1, 4):
        t0 = time.perf_counter()
        ours = aggregate_lazy(dmap, spots, mean=False, supersample=ss).compute(scheduler="threads")
        timings[ss] = time.perf_counter() - t0
        if ss == 1:
            err = float(np.abs(ours - ref).max() / np.abs(ref).max())
    print(f"{n * n:,} bins of {s:g} px on a {side} x {side} x {c} map (rotated 1.5 degrees)")
    print(f"spatialdata (rasterise + aggregate): {t_sd:8.2f} s")
    print(
        f"pixnet, pixel-centre weights:        {timings[1]:8.2f} s  ({t_sd / timings[1]:.1f}x faster; max relative difference {err:.1e})"
    )
    print(f"pixnet, exact area (4x4 sub-pixels): {timings[4]:8.2f} s  ({t_sd / timings[4]:.1f}x faster)")
    record("aggregation", {"side": side, "channels": c, "bins": n * n, "spatialdata_s": t_sd, "pixnet_centre_s": timings[1],
                           "pixnet_area_s": timings[4], "speedup_centre": t_sd / timings[1], "speedup_area": t_sd / timings[4],
                           "max_rel_diff": err})  # fmt: skip


if __name__ == "__main__":
    main()
