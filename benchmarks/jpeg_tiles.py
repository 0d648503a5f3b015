"""Fit and predict on a JPEG read as spatialdata-io reads it (one dask chunk), with and without SlideImage's cache.

spatialdata-io reads JPEG/PNG (and TIFF) images with ``dask_image.imread``: the whole image is one
chunk, so every small read of it decodes the whole file. ``SlideImage`` now computes such a level
once and keeps it (``pixnet.data.image.HEAVY_CHUNK_BYTES``); ``--mode before`` turns that off.
Each mode runs in a fresh process on one HER2ST section (legacy ST, a ~9k x 10k px JPEG): one
epoch of fit, predict with its default 1024 px tiles and with 256 px tiles, and 48 reads of
320 x 320 px windows alone (a 256 px tile with its context), all at 2 um per pixel:

    python benchmarks/jpeg_tiles.py /path/to/her2st --section C2
    python benchmarks/jpeg_tiles.py /path/to/her2st --section C2 --modes after   # one mode

The data are read in place and nothing of them is written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import machine, record, run_child

CHILD = r"""
import json, time, warnings, logging
warnings.filterwarnings("ignore")
from pathlib import Path
import numpy as np
from dask_image.imread import imread
from xarray import DataArray
from spatialdata.models import Image2DModel
from spatialdata.transformations import Identity
import pixnet
import pixnet.data.image as image_module

root, section, mode, tiles = Path({root!r}), {section!r}, {mode!r}, {tiles}
if mode == "before":
    image_module.HEAVY_CHUNK_BYTES = float("inf")  # never keep a level: every read computes its chunks
jpg = next((root / "ST-imgs" / section).glob("*.jpg"))
sdata = pixnet.io.legacy_st(
    image=jpg, counts=root / "ST-cnts" / f"{{section}}.tsv.gz",
    spots_file=root / "ST-spotfiles" / f"{{section}}_selection.tsv",
)
# the image as spatialdata-io's readers make it: dask_image.imread (one chunk), Image2DModel with a pyramid
name = sdata.attrs["pixnet"]["image"]
arr = imread(str(jpg)).squeeze().transpose(2, 0, 1)
sdata.images[name] = Image2DModel.parse(
    DataArray(arr, dims=("c", "y", "x")), scale_factors=[2, 2, 2, 2], transformations={{"global": Identity()}},
    rgb=None,
)
t0 = time.perf_counter()
model = pixnet.tl.fit(sdata, epochs=1, tiles_per_epoch=tiles, um_per_px=2.0, table="table", progress=False)
fit_s = time.perf_counter() - t0
t0 = time.perf_counter()
pred = pixnet.tl.predict(sdata, shapes="spots", progress=False)
predict_s = time.perf_counter() - t0
t0 = time.perf_counter()
pixnet.tl.predict(sdata, shapes="spots", tile_px=256, context_px=32, key_added="small_tiles", progress=False)
predict_256_s = time.perf_counter() - t0
# reads alone: 48 windows of 320 x 320 working px (a 256 px tile with 32 px of context) at 2 um/px
from pixnet.data.slide import resolve_slide
work = resolve_slide(sdata).working_image(2.0)
rng = np.random.default_rng(0)
corners = rng.integers(0, np.array(work.shape) - 320, (48, 2))
t0 = time.perf_counter()
for y, x in corners:
    work.read(int(y), int(x), 320, 320)
reads_s = time.perf_counter() - t0
print(json.dumps({{
    "mode": mode, "image_px": list(arr.shape[1:]), "spots": int(pred.n_obs), "tiles": tiles,
    "fit_s": fit_s, "fit_tiles_per_s": tiles / fit_s, "predict_s": predict_s, "predict_tile256_s": predict_256_s,
    "reads_48_s": reads_s,
}}))
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("root", type=Path, help="the HER2ST folder (ST-cnts/, ST-imgs/, ST-spotfiles/)")
    p.add_argument("--section", default="C2")
    p.add_argument("--tiles", type=int, default=16, help="training tiles (one epoch)")
    p.add_argument("--modes", nargs="+", default=["before", "after"], choices=["before", "after"])
    args = p.parse_args()
    results = {}
    for mode in args.modes:
        res = run_child(CHILD.format(root=str(args.root), section=args.section, mode=mode, tiles=args.tiles))
        results[mode] = res
        print(json.dumps(res))
    print(f"machine: {machine()}")
    head = ["mode", "fit (s)", "tiles/s", "predict (s)", "predict 256 px (s)", "48 reads (s)", "peak RSS (GB)"]
    print(" | ".join(head))
    for mode, r in results.items():
        keys = ["fit_s", "fit_tiles_per_s", "predict_s", "predict_tile256_s", "reads_48_s", "peak_rss_gb"]
        print(" | ".join([mode] + [f"{r[k]:.2f}" for k in keys]))
    record("jpeg_tiles", {"section": args.section, **results})


if __name__ == "__main__":
    main()
