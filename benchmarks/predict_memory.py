"""Predict's own peak memory on a stored slide: RSS before ``predict(bin_size=2)`` and its peak during it.

The store is one written by ``benchmarks/predict.py`` (``_work/predict_<size>.zarr``, measured 2 um
table included). A thread samples the RSS every 50 ms. For where the memory goes, run it under
memray (``pip install memray``) and read the allocations at the high-water mark:

    python benchmarks/predict_memory.py --clean benchmarks/_work/predict_3000.zarr  # an earlier run's results
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


LAZY_MB = 256  # as benchmarks/predict.py: the measured 2 um counts are read lazily


def remove_earlier_results(store: str) -> None:
    """Delete an earlier run's ``bench_*`` elements from the store (call it in another process: reading them costs memory)."""
    sd = pixnet.io.read_zarr(store, in_memory_limit=LAZY_MB * 2**20)
    for kind, name, _ in list(sd.gen_elements()):
        if name.startswith("bench_"):
            del sd[name]
            shutil.rmtree(f"{store}/{kind}/{name}")
    sd.write_consolidated_metadata()


def main(store: str) -> None:
    sd = pixnet.io.read_zarr(store, in_memory_limit=LAZY_MB * 2**20)
    torch.manual_seed(0)
    model = pixnet.PixNet(ModelConfig(genes=tuple(sd.tables["square_002um"].var_names[:250])))
    t0 = time.perf_counter()
    phases: dict[str, int] = {}
    with rss_peak(0.05, phases) as out:
        pixnet.tl.predict(sd, model=model, bin_size=2, key_added="bench", progress=False)
    before, peak = out
    print(f"predict {time.perf_counter() - t0:.0f} s; RSS before {before / 2**30:.2f} GB, "
          f"peak {peak / 2**30:.2f} GB, predict's own +{(peak - before) / 2**30:.2f} GB")  # fmt: skip
    print("peak RSS under each call of predict (GB):")
    for key, rss in sorted(phases.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {rss / 2**30:5.2f}  {key}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--clean"]:
        remove_earlier_results(sys.argv[2])
    else:
        main(sys.argv[1])
