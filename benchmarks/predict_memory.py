"""Predict's own peak memory on a stored slide: RSS before ``predict(bin_size=2)`` and its peak during it.

The store is one written by ``benchmarks/predict.py`` (``_work/predict_<size>.zarr``, measured 2 um
table included). A thread samples the RSS every 50 ms. For where the memory goes, run it under
memray (``pip install memray``) and read the allocations at the high-water mark:

    python benchmarks/predict_memory.py benchmarks/_work/predict_3000.zarr
    python -m memray run -o predict.bin benchmarks/predict_memory.py benchmarks/_work/predict_3000.zarr
"""

from __future__ import annotations

import shutil
import sys
import time
import warnings

import torch
from _common import rss_peak

import pixnet
from pixnet.model import ModelConfig

warnings.filterwarnings("ignore")


def main(store: str) -> None:
    sd = pixnet.io.read_zarr(store)
    for kind, name, _ in list(sd.gen_elements()):  # an earlier run's results
        if name.startswith("bench_"):
            del sd[name]
            shutil.rmtree(f"{store}/{kind}/{name}")
    sd.write_consolidated_metadata()
    torch.manual_seed(0)
    model = pixnet.PixNet(ModelConfig(genes=tuple(sd.tables["square_002um"].var_names[:250])))
    t0 = time.perf_counter()
    with rss_peak(0.05) as out:
        pixnet.tl.predict(sd, model=model, bin_size=2, key_added="bench", progress=False)
    before, peak = out
    print(f"predict {time.perf_counter() - t0:.0f} s; RSS before {before / 2**30:.2f} GB, "
          f"peak {peak / 2**30:.2f} GB, predict's own +{(peak - before) / 2**30:.2f} GB")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
