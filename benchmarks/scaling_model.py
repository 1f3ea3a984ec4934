"""A model of integrate's wall time on N cores, from the per-stage times of measured runs.

    R=benchmarks/results
    .venv/bin/python benchmarks/scaling_model.py $R/speed_medium_444_w1_speed2/integrated.nxs.log \\
        $R/speed_medium_444_w2_speed2/integrated.nxs.log --cores 16 64 [--out DIR]

Each run log (``integrate.timings_s``) gives the serial stages (start-up, plan, export tail) and the
thread-seconds of the map tasks (read, mask, bin, spill) and of the reduce tasks. The model:

    T(N) = serial + rounds_map(N) * map_s / tasks(N) * slow(N)
                  + rounds_reduce(N) * reduce_s / parts(N) * slow(N)

* ``tasks(N)``: the planner's map tasks, ``max(3 N, pixels / 150e6)`` but at most the number of
  storage chunks (120 for refkit medium); ``rounds_map = ceil(tasks / N)`` (tasks are equal);
* ``parts(N)``: reduce partitions, ``max(2 N, partial rows / 4e6)``; ``rounds_reduce = ceil(parts / N)``;
* ``slow(N)``: how much a thread-second grows when cores share memory bandwidth and caches, taken
  from the 1- and 2-worker runs (thread-seconds at 2 over those at 1) and assumed to grow no further
  on a node whose memory bandwidth grows with its cores (an assumption: say so when quoting it);
* serial: start-up (imports), plan, and the export tail; the NeXus writer is one thread, so the
  reduce stage takes at least ``export_appends`` (its time appending parts, when the log has it).

It ignores reading from a network filesystem (the compressed medium data is 177 MB) and SLURM
worker start-up (seconds to minutes, once per job). Writes scaling_model.csv (and prints it).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path


def read_log(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        for key, name in (
            ("integrate.timings_s", "timings"),
            ("integrate.result", "result"),
            ("integrate.cluster", "cluster"),
        ):
            if line.startswith(key + ":"):
                out[name] = json.loads(line.split(":", 1)[1])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "logs", type=Path, nargs="+", help="run logs of the same integration at different workers"
    )
    ap.add_argument("--cores", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--chunks", type=int, default=120, help="storage chunks of the data (most map tasks)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    runs = []
    for path in a.logs:
        log = read_log(path)
        t, r, c = log["timings"], log["result"], log["cluster"]
        threads = int(c.get("threads") or 1)
        map_s = sum(t.get(f"map_tasks_{s}", 0.0) for s in ("read", "mask", "bin", "spill"))
        runs.append(
            {
                "threads": threads,
                "serial_s": t.get("startup", 0.0) + t["plan"] + t["export"] + t.get("partition", 0.0),
                "map_s": map_s,
                "reduce_s": t.get("reduce_tasks", 0.0),
                "appends_s": t.get("export_appends", 0.0),
                "map_wall": t["map"],
                "reduce_wall": t["reduce"],
                "total": t["total"] + t.get("startup", 0.0),
                "pixels": r["pixels_read"],
                "partial_rows": r["partial_rows"],
                "map_tasks": r["map_tasks"],
                "partitions": r["partitions"],
            }
        )
    runs.sort(key=lambda x: x["threads"])
    base = runs[0]
    widest = runs[-1]
    slow_map = widest["map_s"] / base["map_s"] if len(runs) > 1 else 1.0
    slow_red = widest["reduce_s"] / base["reduce_s"] if len(runs) > 1 and base["reduce_s"] else 1.0
    rows = []
    for run in runs:
        rows.append(
            {
                "cores": run["threads"],
                "kind": "measured",
                "total_s": round(run["total"], 2),
                "map_s": round(run["map_wall"], 2),
                "reduce_s": round(run["reduce_wall"], 2),
                "serial_s": round(run["serial_s"], 2),
                "mpx_per_s_per_core": round(run["pixels"] / 1e6 / run["total"] / run["threads"], 1),
            }
        )
    for n in a.cores:
        tasks = min(max(3 * n, math.ceil(base["pixels"] / 150e6)), a.chunks)
        parts = max(2 * n, math.ceil(base["partial_rows"] / 4e6))
        t_map = math.ceil(tasks / n) * base["map_s"] / tasks * slow_map
        t_red = max(math.ceil(parts / n) * base["reduce_s"] / parts * slow_red, base["appends_s"])
        total = base["serial_s"] + t_map + t_red
        rows.append(
            {
                "cores": n,
                "kind": "model",
                "total_s": round(total, 2),
                "map_s": round(t_map, 2),
                "reduce_s": round(t_red, 2),
                "serial_s": round(base["serial_s"], 2),
                "mpx_per_s_per_core": round(base["pixels"] / 1e6 / total / n, 1),
            }
        )
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    print(
        f"thread-seconds at {widest['threads']} over {base['threads']} threads: "
        f"map {slow_map:.2f}, reduce {slow_red:.2f}"
    )
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        with open(a.out / "scaling_model.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
