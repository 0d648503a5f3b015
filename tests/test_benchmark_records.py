"""The benchmarks write their results through one function, ``benchmarks/_common.record``."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    yield
    for name in ("_common", "real_tissue", "encoders_real_tissue", "frozen_cache", "throughput"):
        sys.modules.pop(name, None)


def test_record_names_date_machine_threads_and_command(bench, tmp_path):
    import torch  # noqa: F401  (in use: the machine names its version and threads)
    from _common import record

    entry = record("unit", {"speedup": 2.5}, folder=tmp_path)
    line = json.loads((tmp_path / "unit.jsonl").read_text())
    assert line == entry and line["speedup"] == 2.5
    assert {"date", "time_utc", "machine", "command"} <= set(line) and "threads" in line["machine"]


def test_encoders_real_tissue_and_frozen_cache_record_through_common(bench, tmp_path):
    import _common
    import encoders_real_tissue
    import frozen_cache

    assert frozen_cache.record is _common.record and encoders_real_tissue.record is _common.record
    rows = [{"held_out": "C5", "method": "ssl", "PCC@M": 0.2}]
    encoders_real_tissue.write_record(folder=tmp_path, tag="unit", fit={"epochs": 1}, wall_s=1.0, rows=rows)
    line = json.loads((tmp_path / "encoders_real_tissue.jsonl").read_text())
    assert line["rows"] == rows and line["tag"] == "unit" and "threads" in line["machine"]


def test_a_child_run_reports_its_peak_memory_wall_time_and_the_hosts_steal(bench):
    import os

    from _common import run_child

    res = run_child('import json\nprint(json.dumps({"x": 1}))')
    assert res["x"] == 1 and res["peak_rss_gb"] > 0 and res["wall_s"] > 0
    if os.path.exists("/proc/stat"):
        assert 0 <= res["cpu_steal_pct"] <= 100


def test_the_throughput_benchmark_runs_fit_s_step_on_a_small_slide(bench, tmp_path, monkeypatch):
    """benchmarks/gpu.sh's throughput step: it broke silently when slide_data began taking a table's spots."""
    import throughput

    recorded = []
    monkeypatch.setattr(throughput, "WORK", tmp_path)
    monkeypatch.setattr(throughput, "record", lambda name, payload: recorded.append(payload))
    monkeypatch.setattr(sys, "argv", ["throughput.py", "--tiles", "2", "--batch-size", "2", "--size", "200"])
    throughput.main()
    (r,) = recorded
    assert r["tiles"] == 2 and r["plain_tiles_per_s"] > 0 and r["lightning_tiles_per_s"] > 0
