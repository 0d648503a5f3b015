"""Markdown tables of every recorded accuracy run (benchmarks/results/accuracy.jsonl), for RESULTS.md.

python benchmarks/report.py
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "accuracy.jsonl"
AGGREGATION = Path(__file__).parent / "results" / "aggregation.jsonl"
SCALES = (2, 8, 16)


def main() -> None:
    records = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    records = [r for r in records if r["args"].get("size", 1000.0) == 1000.0]  # the 1 mm pair: one ceiling
    ceiling = {}
    for r in records:
        ceiling.update({s: r["results"][f"ceiling@{s}"]["PCC@M"] for s in SCALES if f"ceiling@{s}" in r["results"]})
    print(
        "| date | run | epochs | fit options | "
        + " | ".join(f"PCC@M {s} um (% ceiling)" for s in SCALES)
        + " | fit s |"
    )
    print("|---|---|---|---|" + "---|" * (len(SCALES) + 1))
    for r in records:
        tags = sorted({k.split("@")[0] for k in r["results"] if "@" in k} - {"ceiling", "ceiling_naive"})
        for tag in tags:
            cells = []
            for s in SCALES:
                v = r["results"].get(f"{tag}@{s}")
                cells.append(f"{v['PCC@M']:.3f} ({100 * v['PCC@M'] / ceiling[s]:.0f}%)" if v and s in ceiling else "")
            fit_s = r["results"].get(f"{tag}@fit_seconds")
            seconds = f"{fit_s:.0f}" if fit_s else ""
            fit = r["args"].get("fit", "{}") if fit_s else "(no training)"
            epochs = r["args"].get("epochs") or "default"
            print(f"| {r['date']} | {tag} | {epochs} | `{fit}` | " + " | ".join(cells) + f" | {seconds} |")
    print("\nceiling PCC@M: " + ", ".join(f"{s} um {v:.3f}" for s, v in ceiling.items()))


def aggregation() -> None:
    print(
        "| date | command | bins | channels | spatialdata s | pixnet centre s (speed-up) | pixnet area s (speed-up) | max rel. diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for line in AGGREGATION.read_text().splitlines():
        r = json.loads(line)
        print(f"| {r['date']} | `{r['command']}` | {r['bins']:,} | {r['channels']} | {r['spatialdata_s']:.1f} | "
              f"{r['pixnet_centre_s']:.2f} ({r['speedup_centre']:.0f}x) | {r['pixnet_area_s']:.2f} "
              f"({r['speedup_area']:.0f}x) | {r['max_rel_diff']:.1e} |")  # fmt: skip


if __name__ == "__main__":
    import sys

    aggregation() if sys.argv[1:] == ["aggregation"] else main()
