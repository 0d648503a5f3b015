"""Memory to write a table whose obs holds millions of string names (as a 2 um prediction does).

anndata writing the obs whole (zarr converts and encodes the whole string array at once) against
the writer predict uses (``pixnet.infer.store._write_table``: the names a slice at a time).

python benchmarks/obs_write.py            # 4M names
python benchmarks/obs_write.py 8000000
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import zarr
from _common import rss_peak

from pixnet.infer.store import _write_table

warnings.filterwarnings("ignore")


def main(n: int) -> None:
    rows, cols = np.arange(n) // 3000, np.arange(n) % 3000
    names = pd.Index([f"s_002um_{a:05d}_{b:05d}-1" for a, b in zip(rows.tolist(), cols.tolist(), strict=True)])
    obs = pd.DataFrame({"array_row": rows.astype(np.int32), "array_col": cols.astype(np.int32)}, index=names)
    table = ad.AnnData(np.zeros((n, 1), np.float32), obs=obs)
    writers = {
        "anndata write_elem(obs)": lambda tmp: ad.io.write_elem(zarr.open_group(f"{tmp}/t.zarr", mode="w"), "obs", obs),
        "pixnet _write_table": lambda tmp: _write_table(Path(tmp) / "t.zarr", "t", table),
    }
    for label, write in writers.items():
        with rss_peak() as out, tempfile.TemporaryDirectory() as tmp:
            write(tmp)
        before, peak = out
        print(f"{label}: {n:,} names, +{(peak - before) / 2**30:.2f} GB above {before / 2**30:.2f} GB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4_000_000)
