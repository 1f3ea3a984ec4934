"""``diffuse correct`` against ``mdx2.correct`` on one integrated table, in the same run (issue 17).

    source ../shared/refkit/setup.sh      # puts mdx2.correct on PATH
    flock -x /work/coord/bench.lock .venv/bin/python benchmarks/correct_vs_mdx2.py \\
        /work/data/medium /work/scratch-scale/medium/int_4.nxs --repeat 3 \\
        --out benchmarks/results/correct_medium --work /work/scratch-correct/bench

Both commands read the same integrated table (ours is what ``mdx2.io.loadobj`` loads) with the
dataset's ``geometry.nxs`` and ``bkg_data_binned.nxs``; each is timed from start to exit (start-up
included) with its process tree's peak RSS, after the previous command's dirty pages were written
back and with no output file left from before (both write new files into ``--work``). Rounds
alternate the two commands; medians and the ratio go to ``summary.json``, every timing and the load
average to ``correct.csv``. The process is polled every 20 ms (the exit time's
resolution), the same for both.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.api.bench import measure_command

DIFFUSE = str(Path(sys.executable).with_name("diffuse"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path, help="directory with geometry.nxs (and bkg_data_binned.nxs)")
    ap.add_argument("integrated", type=Path, help="the integrated table both commands correct")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/correct"), help="CSV + summary")
    ap.add_argument("--work", type=Path, required=True, help="scratch directory for the corrected tables")
    ap.add_argument("--baseline", type=Path, help="another diffuse executable (e.g. main's) timed alongside")
    ap.add_argument("--compare", type=Path, help="refkit compare.py: check our last table against mdx2's")
    a = ap.parse_args()
    ds, table, out, work = a.dataset.resolve(), a.integrated.resolve(), a.out.resolve(), a.work.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    mdx2 = shutil.which("mdx2.correct")
    if mdx2 is None:
        print("mdx2.correct is not on PATH (source the refkit setup.sh)", file=sys.stderr)
        return 2
    bkg = ["--background", str(ds / "bkg_data_binned.nxs")] if (ds / "bkg_data_binned.nxs").exists() else []
    commands = {
        "mdx2.correct": (
            [mdx2, "geometry.nxs", str(table), *bkg, "--outfile", str(work / "mdx2_corrected.nxs"),
             "--logfile", str(work / "mdx2.correct.log")],
            {"cwd": ds, "stderr": subprocess.DEVNULL},
        ),
        "diffuse correct": (
            [DIFFUSE, "correct", str(ds / "geometry.nxs"), str(table), *bkg, "--outfile",
             str(work / "corrected.nxs"), "--overwrite", "--quiet"],
            {},
        ),
    }  # fmt: skip
    outputs = {"mdx2.correct": work / "mdx2_corrected.nxs", "diffuse correct": work / "corrected.nxs"}
    if a.baseline:
        argv = commands["diffuse correct"][0].copy()
        argv[0], argv[argv.index("--outfile") + 1] = str(a.baseline), str(work / "baseline_corrected.nxs")
        commands["diffuse correct (baseline)"] = (argv, {})
        outputs["diffuse correct (baseline)"] = work / "baseline_corrected.nxs"
    rows = []
    for rnd in range(a.repeat):
        for name, (argv, popen) in commands.items():
            outputs[name].unlink(missing_ok=True)  # each command writes a new file (none replaced)
            os.sync()  # no command pays for the previous one's writeback
            time.sleep(1.0)
            load = os.getloadavg()[0]
            wall, peak, rc, _ = measure_command(argv, interval=0.02, **popen)
            rows.append(
                {"round": rnd, "step": name, "wall_s": round(wall, 3),
                 "peak_tree_rss_mb": round(peak / 2**20), "rc": rc, "load_1min": round(load, 2)}
            )  # fmt: skip
            print(f"{name:16} {wall:7.3f} s  {peak / 2**30:5.2f} GB  rc={rc}  load {load:.2f}", flush=True)
    with open(out / "correct.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    medians = {n: float(np.median([r["wall_s"] for r in rows if r["step"] == n])) for n in commands}
    verdict = None
    if a.compare:
        res = subprocess.run(
            [str(Path(mdx2).with_name("python")), str(a.compare), str(outputs["mdx2.correct"]),
             str(outputs["diffuse correct"]),
             "--kind", "corrected"],
            capture_output=True, text=True,
        )  # fmt: skip
        verdict = {
            "rc": res.returncode,
            "last line": (res.stdout.strip().splitlines() or [res.stderr[-300:]])[-1],
        }
        print("compare:", verdict)
    same_as_baseline = None
    if a.baseline:  # every column, byte for byte
        import h5py

        with (
            h5py.File(outputs["diffuse correct"], "r") as f,
            h5py.File(outputs["diffuse correct (baseline)"], "r") as g,
        ):
            t, u = f["entry/hkl_table"], g["entry/hkl_table"]
            same_as_baseline = sorted(t) == sorted(u) and all(
                t[c].dtype == u[c].dtype and t[c][()].tobytes() == u[c][()].tobytes() for c in t
            )
        print("identical to the baseline's table:", same_as_baseline)
    summary = {
        "table": str(table),
        "median_wall_s": medians,
        "ratio mdx2_correct / diffuse_correct": round(
            medians["mdx2.correct"] / medians["diffuse correct"], 2
        ),
        "rounds": a.repeat,
        "baseline": None if a.baseline is None else str(a.baseline),
        "identical to the baseline's table (every column's bytes)": same_as_baseline,
        "failed": [r for r in rows if r["rc"] != 0],
        "compare": verdict,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0 if not summary["failed"] and (verdict is None or verdict["rc"] == 0) else 1


if __name__ == "__main__":
    sys.exit(main())
