"""``diffuse run`` (integrate, QC, correct, QC) step by step, for one or more builds of diffuse.

    flock -x /work/coord/bench.lock .venv/bin/python benchmarks/run_steps.py /work/data/medium \\
        --subdivide 10 10 10 --build before=/path/to/old/.venv/bin/diffuse --build after=.venv/bin/diffuse \\
        --out benchmarks/results/run_medium_101010 --work /work/scratch-lead/runbench

Each build runs the same command in turn (``--no-scan-images``, a fresh outdir in ``--work``, removed
afterwards); the whole command is timed from start to exit with its process tree's peak RSS, and
each step's time and peak memory are taken from its ``run.log`` (copied to ``--out``). Writes
``run_steps.csv`` (one row per build and step, with the load average at the start).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
from pathlib import Path

from pipeline.api.bench import measure_command
from pipeline.api.runlog import read_run_log

STEPS = ("integrate", "qc_integrated", "correct", "qc_corrected")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "dataset", type=Path, help="directory with geometry.nxs, data.nxs, mask.nxs, bkg_data_binned.nxs"
    )
    ap.add_argument("--subdivide", type=int, nargs=3, default=(10, 10, 10))
    ap.add_argument("--build", action="append", required=True, help="NAME=path/to/diffuse (repeatable)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    args = ap.parse_args()
    d = args.dataset
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for build in args.build:
        name, exe = build.split("=", 1)
        outdir = args.work / f"run_{name}"
        shutil.rmtree(outdir, ignore_errors=True)
        load = os.getloadavg()[0]
        cmd = [exe, "run", d / "geometry.nxs", d / "data.nxs", "--mask", d / "mask.nxs",
               "--background", d / "bkg_data_binned.nxs", "--subdivide", *map(str, args.subdivide),
               "--outdir", outdir, "--no-scan-images", "--quiet"]  # fmt: skip
        wall, peak_rss, returncode, _ = measure_command([str(c) for c in cmd])
        if returncode != 0:
            print(f"{name}: exit {returncode}", file=sys.stderr)
            return 1
        shutil.copy(outdir / "run.log", args.out / f"run_{name}.log")
        log = read_run_log(outdir / "run.log")
        shutil.rmtree(outdir)
        rows.append({"build": name, "step": "whole command", "seconds": round(wall, 2),
                     "peak_gb": round(peak_rss / 1e9, 2), "load": round(load, 2)})  # fmt: skip
        for step in STEPS:
            peak = log.get(f"{step}.peak_memory_mb", {}).get("client")
            peak_gb = None if peak is None else round(peak / 1e3, 2)
            seconds = log[f"{step}.timings_s"]["total"]
            rows.append(
                {"build": name, "step": step, "seconds": seconds, "peak_gb": peak_gb, "load": round(load, 2)}
            )
        print(f"{name}: {wall:.1f} s, {peak_rss / 1e9:.2f} GB (load {load:.2f})")
    with open(args.out / "run_steps.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
