"""Shared helpers for the benchmarks: peak memory of a child process, the machine, a results record."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).parent
WORK = HERE / "_work"


def run_child(code: str, timeout: float = 7200) -> dict:
    """Run Python ``code`` in a fresh interpreter; it prints one JSON line last.

    Adds its peak RSS (GB), wall time and, on Linux, ``cpu_steal_pct``: the share of the machine's
    CPU time the hypervisor gave to others while it ran (a virtual machine's timings drift with it).
    """
    wrapped = (
        code
        + "\nimport resource, json, sys\nprint('@@' + json.dumps({'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))\n"
    )
    t0, cpu0 = time.perf_counter(), _cpu_times()
    out = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, timeout=timeout)
    wall, cpu1 = time.perf_counter() - t0, _cpu_times()
    if out.returncode != 0:
        raise RuntimeError(f"child failed:\n{out.stderr[-3000:]}")
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{") or ln.startswith("@@")]
    res = {}
    for ln in lines:
        res.update(json.loads(ln.lstrip("@")))
    res["wall_s"] = wall
    if cpu0 and cpu1 and sum(cpu1) > sum(cpu0):
        res["cpu_steal_pct"] = round(100 * (cpu1[7] - cpu0[7]) / (sum(cpu1) - sum(cpu0)), 1)
    return res


def _cpu_times() -> list[int] | None:
    """The machine's CPU times (``/proc/stat``'s first line: user, nice, system, idle, iowait, irq, softirq, steal...)."""
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def rss_peak(every: float = 0.02, phases: dict | None = None):
    """Samples this process's RSS while the block runs; yields ``[before, peak]`` in bytes, filled as it goes.

    ``phases``: a dict to fill with the peak RSS seen under each pixnet call on the calling thread's
    stack (its two innermost pixnet functions, e.g. ``compute <- map_element``): where the peak is.
    """
    import psutil

    proc = psutil.Process()
    out, done = [proc.memory_info().rss] * 2, threading.Event()
    caller = threading.get_ident()

    def sample() -> None:
        while not done.is_set():
            rss = proc.memory_info().rss
            out[1] = max(out[1], rss)
            if phases is not None:
                key = _pixnet_frames(sys._current_frames().get(caller))
                phases[key] = max(phases.get(key, 0), rss)
            time.sleep(every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        done.set()
        thread.join()


def _pixnet_frames(frame, depth: int = 2) -> str:
    names = []
    while frame is not None and len(names) < depth:
        if f"{os.sep}pixnet{os.sep}" in frame.f_code.co_filename:
            names.append(f"{Path(frame.f_code.co_filename).stem}.{frame.f_code.co_name}")
        frame = frame.f_back
    return " <- ".join(names) or "(outside pixnet)"


def machine() -> str:
    """Architecture, cores, Python; torch's version and intra-op threads when torch is imported."""
    out = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    torch = sys.modules.get("torch")
    if torch is not None:
        out += f", torch {torch.__version__}, threads {torch.get_num_threads()}"
    return out


def record(name: str, payload: dict, *, folder: str | Path | None = None) -> dict:
    """Append a result to ``<folder>/<name>.jsonl`` (default benchmarks/results) with the date, machine and command.

    ``date`` is the day, ``time_utc`` the minute (UTC) it was written; ``machine`` names torch's
    version and threads when torch is in use. Keys of ``payload`` come after these (a payload's
    own ``date`` or ``machine`` wins). Returns the entry written.
    """
    out = Path(folder or HERE / "results") / f"{name}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    entry = {"date": str(now.date()), "time_utc": now.strftime("%H:%M"), "machine": machine(),
             "command": " ".join(["python", *sys.argv]), **payload}  # fmt: skip
    with open(out, "a") as f:
        f.write(json.dumps(entry, default=float) + "\n")
    return entry
