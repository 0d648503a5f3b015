"""Memory anndata takes to write a table's obs with millions of string names (as a 2 um prediction has).

python benchmarks/obs_write.py            # 4M names
python benchmarks/obs_write.py 8000000
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import psutil
import zarr

warnings.filterwarnings("ignore")


def main(n: int) -> None:
    proc = psutil.Process()
    rows, cols = np.arange(n) // 3000, np.arange(n) % 3000
    names = pd.Index([f"s_002um_{a:05d}_{b:05d}-1" for a, b in zip(rows.tolist(), cols.tolist(), strict=True)])
    obs = pd.DataFrame({"array_row": rows.astype(np.int32), "array_col": cols.astype(np.int32)}, index=names)
    before = proc.memory_info().rss
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        ad.io.write_elem(zarr.open_group(f"{tmp}/t.zarr", mode="w"), "obs", obs)
    done.set()
    print(f"{n:,} names: writing obs took +{(peak[0] - before) / 2**30:.2f} GB above {before / 2**30:.2f} GB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4_000_000)
