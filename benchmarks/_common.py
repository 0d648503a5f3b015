"""Shared helpers for the benchmarks: peak memory of a child process, the machine, a results record."""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).parent
WORK = HERE / "_work"


def run_child(code: str, timeout: float = 7200) -> dict:
    """Run Python ``code`` in a fresh interpreter; it prints one JSON line last. Adds its peak RSS (GB) and wall time."""
    wrapped = (
        code
        + "\nimport resource, json, sys\nprint('@@' + json.dumps({'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))\n"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"child failed:\n{out.stderr[-3000:]}")
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{") or ln.startswith("@@")]
    res = {}
    for ln in lines:
        res.update(json.loads(ln.lstrip("@")))
    res["wall_s"] = wall
    return res


@contextlib.contextmanager
def rss_peak(every: float = 0.02):
    """Samples this process's RSS while the block runs; yields ``[before, peak]`` in bytes, filled as it goes."""
    import psutil

    proc = psutil.Process()
    out, done = [proc.memory_info().rss] * 2, threading.Event()

    def sample() -> None:
        while not done.is_set():
            out[1] = max(out[1], proc.memory_info().rss)
            time.sleep(every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        done.set()
        thread.join()


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def record(name: str, payload: dict) -> None:
    """Append a result to benchmarks/results/<name>.jsonl with the date, machine and command."""
    out = HERE / "results" / f"{name}.jsonl"
    out.parent.mkdir(exist_ok=True)
    entry = {"date": str(date.today()), "machine": machine(), "command": " ".join(["python", *sys.argv]), **payload}
    with open(out, "a") as f:
        f.write(json.dumps(entry, default=float) + "\n")
