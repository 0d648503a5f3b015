"""Resident memory of importing pixnet and its heavy dependencies, each step in one fresh interpreter.

python benchmarks/import_memory.py
"""

from __future__ import annotations

import subprocess
import sys

STEPS = ["torch", "torch, spatialdata", "pixnet", "pixnet; import lightning", "pixnet; import numba"]
CODE = """
import warnings; warnings.filterwarnings("ignore")
import os, sys
import {mods}
rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
print(f"{{rss:.2f}} {{'lightning' in sys.modules}} {{'numba' in sys.modules}}")
"""


def main() -> None:
    print(f"{'import':28s} {'RSS GB':>7s}  lightning loaded  numba loaded")
    for mods in STEPS:
        out = subprocess.run([sys.executable, "-c", CODE.format(mods=mods)], capture_output=True, text=True, check=True)
        rss, lightning, numba = out.stdout.split()[-3:]
        print(f"{mods:28s} {float(rss):7.2f}  {lightning:16s}  {numba}")


if __name__ == "__main__":
    main()
