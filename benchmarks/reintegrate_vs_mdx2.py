"""``diffuse reintegrate`` against ``mdx2.reintegrate`` 1.0.5 in one run: wall time, peak memory, equality.

    source ../shared/refkit/setup.sh     # mdx2.* on PATH (mdx2.scale, mdx2.reintegrate)
    .venv/bin/python benchmarks/reintegrate_vs_mdx2.py /work/data/medium \\
        --subdivide 4 4 4 --subdivide 10 10 10 [--workers 2] [--nproc 1] [--out DIR]

1. once (kept in ``--out``): the scales. ``diffuse integrate`` at ``--coarse`` (default 1 1 1, with the
   mask) and ``diffuse correct`` (with the background): the same tables as mdx2.integrate/correct;
   then ``mdx2.scale`` on the corrected table (``--scale-args``; default: the scaling model plus the
   absorption and detector models on mdx2's default grids);
2. per subdivision: ``mdx2.reintegrate --nproc N`` and ``diffuse reintegrate --workers W``, both with
   the mask, the scales and the background, ``--output intensity``; each timed from start to exit
   with the peak RSS of its whole process tree (``pipeline.api.bench.measure_command``) and the CPU
   time of the processes it waited for (``cpu_s``: user + system, less sensitive than wall time to a
   busy shared machine), the page cache synced before each;
3. the two tables compared: same rows (h, k, l), values within ``--rtol`` (mdx2 with ``--nproc`` > 1
   adds chunks in the order they finish, so its float32 sums vary in the last bits from run to run).

Writes ``reintegrate.csv`` (one row per command; a later run with the same ``--out`` adds its rows and
reuses the scales) and ``reintegrate.png`` into ``--out``; the machine's load (``os.getloadavg``) is
recorded beside each command.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from pipeline.api.bench import measure_command

DIFFUSE = str(Path(sys.executable).with_name("diffuse"))
DEFAULT_SCALE_ARGS = "--absorption.enable True --detector.enable True"


def read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        g = f["/entry/hkl_table"]
        return {k: g[k][()] for k in g if k != "ndiv"}


def compare(ref: Path, ours: Path, rtol: float) -> dict:
    a, b = read(ref), read(ours)
    out = {"rows_mdx2": len(a["h"]), "rows_ours": len(b["h"]), "same_rows": False, "max_rel": None}
    if len(a["h"]) != len(b["h"]) or sorted(a) != sorted(b):
        return out
    out["same_rows"] = all(np.array_equal(a[c], b[c]) for c in "hkl")
    rel, identical = 0.0, True
    for c in a:
        x, y = a[c].astype(np.float64), b[c].astype(np.float64)
        both = np.isfinite(x) & np.isfinite(y)
        same_nonfinite = np.array_equal(np.isnan(x), np.isnan(y)) and np.array_equal(
            x[np.isinf(x)], y[np.isinf(y)]
        )
        identical &= bool(np.array_equal(a[c], b[c], equal_nan=True))
        out["same_rows"] &= same_nonfinite
        if both.any():
            rel = max(rel, float(np.max(np.abs(x[both] - y[both]) / np.maximum(np.abs(x[both]), 1e-30))))
    out.update(max_rel=rel, identical=identical, ok=out["same_rows"] and rel <= rtol)
    return out


def prepare_scales(ds: Path, out: Path, coarse, workers: int, scale_args: str, mdx2_bin: Path) -> Path:
    scales = out / "scales.nxs"
    if scales.exists():
        return scales
    mask = ["--mask", str(ds / "mask.nxs")] if (ds / "mask.nxs").exists() else []
    bkg = ["--background", str(ds / "bkg_data_binned.nxs")] if (ds / "bkg_data_binned.nxs").exists() else []
    sub = [str(x) for x in coarse]
    common = ["--workers", str(workers), "--overwrite", "--quiet"]
    integrated, corrected = out / "coarse_integrated.nxs", out / "coarse_corrected.nxs"
    subprocess.run([DIFFUSE, "integrate", str(ds / "geometry.nxs"), str(ds / "data.nxs"), *mask,
                    "--subdivide", *sub, "--outfile", str(integrated), *common], check=True)  # fmt: skip
    subprocess.run([DIFFUSE, "correct", str(ds / "geometry.nxs"), str(integrated), *bkg,
                    "--outfile", str(corrected), "--overwrite", "--quiet"], check=True)  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run([str(mdx2_bin / "mdx2.scale"), str(corrected), *scale_args.split(),
                    "--outfile", str(scales), "--logfile", str(out / "mdx2.scale.log")], check=True, cwd=out,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    print(
        f"scales: mdx2.scale {scale_args} on {corrected.name} in {time.perf_counter() - t0:.1f} s", flush=True
    )
    return scales


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subs = sorted({r["subdivide"] for r in rows}, key=lambda s: [int(x) for x in s.split()])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, label in (
        (axes[0], "wall_s", "wall time (s)"),
        (axes[1], "peak_tree_rss_mb", "peak RSS (MB)"),
    ):
        for tool, color in (("mdx2.reintegrate", "tab:gray"), ("diffuse reintegrate", "tab:blue")):
            ys = [
                float(next((r[key] for r in rows if r["tool"] == tool and r["subdivide"] == s), np.nan))
                for s in subs
            ]
            ax.plot(subs, ys, "o-", color=color, label=tool)
        ax.set_xlabel("subdivide")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--subdivide", type=int, nargs=3, action="append", help="repeat for several")
    ap.add_argument(
        "--coarse", type=int, nargs=3, default=(1, 1, 1), help="subdivision the scales are fitted at"
    )
    ap.add_argument("--scale-args", default=DEFAULT_SCALE_ARGS, help="mdx2.scale options")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--nproc", type=int, default=2, help="mdx2.reintegrate --nproc")
    ap.add_argument("--rtol", type=float, default=1e-4, help="the issue's criterion: 1e-4 relative")
    ap.add_argument("--no-mdx2", action="store_true", help="time ours only")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/reintegrate"))
    a = ap.parse_args()
    ds, out = a.dataset.resolve(), a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    mdx2_bin = Path(shutil.which("mdx2.reintegrate") or "mdx2.reintegrate").parent
    if not (mdx2_bin / "mdx2.reintegrate").exists():
        sys.exit("mdx2.reintegrate is not on PATH: source ../shared/refkit/setup.sh first")
    scales = prepare_scales(ds, out, a.coarse, a.workers, a.scale_args, mdx2_bin)
    mask = ["--mask", str(ds / "mask.nxs")] if (ds / "mask.nxs").exists() else []
    bkg = ["--background", str(ds / "bkg_data_binned.nxs")] if (ds / "bkg_data_binned.nxs").exists() else []
    rows = []
    for sub in a.subdivide or [(4, 4, 4)]:
        s = [str(x) for x in sub]
        tag = "x".join(s)
        ref, ours = out / f"mdx2_{tag}.nxs", out / f"ours_{tag}.nxs"
        runs = [
            ("diffuse reintegrate", [DIFFUSE, "reintegrate", str(ds / "geometry.nxs"), str(ds / "data.nxs"),
                                     *mask, "--subdivide", *s, "--scale", str(scales), *bkg, "--output",
                                     "intensity", "--workers", str(a.workers), "--outfile", str(ours),
                                     "--overwrite", "--quiet"], None),
        ]  # fmt: skip
        if not a.no_mdx2:
            argv = [str(mdx2_bin / "mdx2.reintegrate"), "geometry.nxs", "data.nxs", *mask, "--subdivide", *s]
            argv += ["--scale", str(scales), *bkg, "--output", "intensity", "--nproc", str(a.nproc)]
            argv += ["--outfile", str(ref), "--logfile", str(out / f"mdx2.reintegrate_{tag}.log")]
            runs.insert(0, ("mdx2.reintegrate", argv, ds))
        for tool, argv, cwd in runs:
            os.sync()
            time.sleep(1.0)
            load = os.getloadavg()[0]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall, peak, rc, _ = measure_command(argv, cwd=cwd, stderr=subprocess.DEVNULL)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            row = {"subdivide": " ".join(s), "tool": tool, "wall_s": round(wall, 1),
                   "peak_tree_rss_mb": round(peak / 2**20), "cpu_s": round(cpu, 1), "rc": rc,
                   "load_1min": round(load, 1),
                   "nproc_or_workers": a.nproc if tool.startswith("mdx2") else a.workers}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
        if not a.no_mdx2 and ref.exists() and ours.exists():
            check = compare(ref, ours, a.rtol)
            print("check:", json.dumps(check), flush=True)
            for r in rows[-2:]:
                r.update(rows_out=check["rows_ours"], same_rows=check["same_rows"], max_rel=check["max_rel"])
            ratio = rows[-2]["wall_s"] / max(rows[-1]["wall_s"], 1e-9)
            mem = rows[-2]["peak_tree_rss_mb"] / max(rows[-1]["peak_tree_rss_mb"], 1)
            print(f"subdivide {' '.join(s)}: {ratio:.2f}x faster, {mem:.2f}x less memory", flush=True)
    table = out / "reintegrate.csv"
    if table.exists():  # runs add to the table (e.g. one subdivision per run, sharing the scales)
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f)) + rows
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    plot(rows, out / "reintegrate.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
