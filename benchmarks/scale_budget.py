"""Time budget of ``diffuse scale`` (and of ``mdx2.scale`` from its log), per stage and per kind of work.

    source ../shared/refkit/setup.sh
    flock -x /work/coord/bench.lock .venv/bin/python benchmarks/scale_budget.py corr_4.nxs [--mca2020] \\
        [--mdx2-log work/mdx2.scale.log] [--out benchmarks/results/scale_budget]

Ours: :func:`pipeline.graph.scale.fit_scales` in this process (threads), its ``seconds``: wall time of
loading, of the passes over the rows that merge and accumulate normal equations (``fit_pass``), of
the outlier passes and of the LSQR solves on the driver; and the task-side time summed over
partitions (``task_*``: applying the models, merging, outliers, normal equations, reading/writing
spilled partitions). mdx2: the time between consecutive lines of ``mdx2.scale``'s log (loguru
timestamps), attributed to the step the earlier line announces (loading, applying scale factors,
merging, fitting = normal equations + LSQR, outliers). Writes ``budget.csv`` (appends).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

FIELDS = ["table", "model", "tool", "phase", "seconds", "load1"]
STEPS = (
    ("Parameters", "load"),  # the first line: the table is read before the next one
    ("Loaded", "load"),
    ("Grouping", "load"),
    ("Masked", "load"),
    ("Starting", "load"),
    ("Optimizing", "load"),
    ("Iteration", "apply"),
    ("Applying scale factors", "apply"),
    ("Merging", "merge"),
    ("Fitting the model", "fit (normal equations + lsqr)"),
    ("χ²", "other"),
    ("Converged", "other"),
    ("Removed", "other"),
    ("Refinement completed", "write"),
    ("Saving", "write"),
)


def mdx2_budget(log: Path) -> dict[str, float]:
    """Seconds per step from mdx2.scale's log (the interval after a line belongs to that line's step)."""
    stamps = []
    for line in log.read_text().splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \| \w+\s+\| (.*)", line)
        if m:
            stamps.append((datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f"), m.group(2).strip()))
    out: dict[str, float] = {}
    outlier = False
    for (t0, msg), (t1, _) in itertools.pairwise(stamps):
        step = next((s for key, s in STEPS if msg.startswith(key)), "other")
        if msg.startswith("Converged") or msg.startswith("χ²"):
            outlier = msg.startswith("Converged")
        if msg.startswith("Iteration"):
            outlier = False
        if outlier and step in ("apply", "merge"):
            step = f"outliers ({step})"
        if msg.startswith("Removed"):
            outlier = False
        out[step] = out.get(step, 0.0) + (t1 - t0).total_seconds()
    if stamps:
        out["total (log)"] = (stamps[-1][0] - stamps[0][0]).total_seconds()
    return out


def ours_budget(table: Path, mca2020: bool) -> dict[str, float]:
    from pipeline.config import ScaleParams
    from pipeline.graph.scale import fit_scales

    with tempfile.TemporaryDirectory() as d:
        p = ScaleParams(hkl=(str(table),), outfile=(os.path.join(d, "scales.nxs"),), mca2020=mca2020)
        t = time.perf_counter()
        r = fit_scales(p.hkl, p)
        secs = dict(r.seconds)
        secs["wall (in process)"] = time.perf_counter() - t
    return secs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table", type=Path)
    ap.add_argument("--mca2020", action="store_true")
    ap.add_argument("--mdx2-log", type=Path, default=None, help="an existing mdx2.scale log of this table")
    ap.add_argument("--run-mdx2", action="store_true", help="run mdx2.scale on the table first")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/scale_budget"))
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    model = "mca2020" if a.mca2020 else "default"
    rows = []
    log = a.mdx2_log
    if a.run_mdx2:
        work = Path(tempfile.mkdtemp(dir=a.out))
        log = work / "mdx2.scale.log"
        extra = ["--mca2020"] if a.mca2020 else []
        subprocess.run(
            ["mdx2.scale", str(a.table.resolve()), *extra, "--outfile", "ref.nxs"],
            cwd=work,
            check=True,
            capture_output=True,
        )
    load = os.getloadavg()[0]
    if log is not None:
        for phase, s in mdx2_budget(log).items():
            rows.append({"tool": "mdx2", "phase": phase, "seconds": round(s, 3)})
    for phase, s in ours_budget(a.table, a.mca2020).items():
        rows.append({"tool": "diffuse", "phase": phase, "seconds": round(s, 3)})
    path = a.out / "budget.csv"
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({"table": a.table.name, "model": model, "load1": round(load, 1), **r})
    json.dump(rows, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
