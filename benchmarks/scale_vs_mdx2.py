"""``diffuse scale`` against ``mdx2.scale`` (1.0.5) on the same corrected tables, in one run.

    source ../shared/refkit/setup.sh      # puts mdx2.scale / mdx2.merge on PATH
    .venv/bin/python benchmarks/scale_vs_mdx2.py corr_4.nxs [corr_10.nxs ...] [--mca2020] \\
        [--skip-mdx2-above ROWS] [--out benchmarks/results/scale_medium]

For each table: ``mdx2.scale`` and ``diffuse scale`` (local threads), each as its own process timed
from start to exit with the peak RSS of its process tree; then both scales.nxs are given to
``mdx2.merge`` and the merged intensities compared (max / median relative difference and the
fraction of reflections that differ by more than 1e-3). Writes scale.csv and scale.png; the load
average (``uptime``) is recorded beside each pair: on a shared machine only the ratio measured in the
same run means anything.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

from pipeline.api.bench import measure_command

DIFFUSE = str(Path(sys.executable).with_name("diffuse"))
FIELDS = [
    "table",
    "rows",
    "model",
    "tool",
    "seconds",
    "peak_gb",
    "load1",
    "merge_max_rel",
    "merge_median_rel",
    "merge_frac_gt_1e-3",
    "status",
]


def _load() -> float:
    return os.getloadavg()[0]


def _rows(table: Path) -> int:
    with h5py.File(table, "r") as f:
        return int(f["entry/hkl_table/h"].shape[0])


def _merged(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["entry/hkl_table/intensity"][()].astype(float)


def compare_merged(table: Path, ours: Path, ref: Path, work: Path) -> dict:
    """mdx2.merge with each scales file; relative differences of the merged intensities."""
    out = {}
    for name, scales in (("ours", ours), ("ref", ref)):
        dst = work / f"merged_{name}.nxs"
        subprocess.run(
            ["mdx2.merge", str(table), "--scale", str(scales), "--outfile", str(dst)],
            check=True,
            capture_output=True,
            cwd=work,
        )
        out[name] = _merged(dst)
    a, b = out["ours"], out["ref"]
    ok = np.isfinite(a) & np.isfinite(b) & (b != 0)
    rel = np.abs(a[ok] - b[ok]) / np.abs(b[ok])
    return {
        "merge_max_rel": f"{rel.max():.3g}",
        "merge_median_rel": f"{np.median(rel):.3g}",
        "merge_frac_gt_1e-3": f"{np.mean(rel > 1e-3):.3g}",
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tables", nargs="+", type=Path)
    ap.add_argument("--mca2020", action="store_true")
    ap.add_argument(
        "--skip-mdx2-above", type=int, default=None, help="do not run mdx2.scale on larger tables"
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/scale_medium"))
    ap.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "scale_vs_mdx2",
        help="scales, merged tables and logs of each run (kept out of --out: they are large)",
    )  # fmt: skip
    a = ap.parse_args(argv)
    a.out = a.out.resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    model = "mca2020" if a.mca2020 else "default"
    csv_path = a.out / "scale.csv"
    new = not csv_path.exists()
    rows_out = []
    for table in a.tables:
        table = table.resolve()
        n = _rows(table)
        work = a.workdir.resolve() / f"work_{table.stem}_{model}"
        work.mkdir(parents=True, exist_ok=True)
        extra = ["--mca2020"] if a.mca2020 else []
        results = {}
        runs = [
            (
                "diffuse",
                [
                    DIFFUSE,
                    "scale",
                    str(table),
                    *extra,
                    "--outfile",
                    str(work / "ours.nxs"),
                    "--overwrite",
                    "--quiet",
                ],
            )
        ]
        if a.skip_mdx2_above is None or n <= a.skip_mdx2_above:
            runs.insert(0, ("mdx2", ["mdx2.scale", str(table), *extra, "--outfile", str(work / "ref.nxs")]))
        for tool, argv_ in runs:
            load = _load()
            wall, peak, rc, _ = measure_command(argv_, cwd=work, stderr=subprocess.DEVNULL)
            results[tool] = {
                "table": table.name,
                "rows": n,
                "model": model,
                "tool": tool,
                "seconds": round(wall, 1),
                "peak_gb": round(peak / 2**30, 2),
                "load1": round(load, 1),
                "status": "ok" if rc == 0 else f"exit {rc}",
            }
            print(results[tool], flush=True)
        if "mdx2" in results and all(r["status"] == "ok" for r in results.values()):
            results["diffuse"].update(compare_merged(table, work / "ours.nxs", work / "ref.nxs", work))
            print(results["diffuse"], flush=True)
        rows_out += results.values()
        shutil.rmtree(work / "__pycache__", ignore_errors=True)
    with open(csv_path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        for r in rows_out:
            w.writerow({k: r.get(k, "") for k in FIELDS})
    plot(csv_path, a.out / "scale.png")


def plot(csv_path: Path, png: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with open(csv_path) as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    for i, (key, label) in enumerate((("seconds", "wall time (s)"), ("peak_gb", "peak memory (GB)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for tool, marker in (("mdx2", "o"), ("diffuse", "s")):
            for model, ls in (("default", "-"), ("mca2020", "--")):
                pts = sorted(
                    (int(r["rows"]), float(r[key])) for r in rows if r["tool"] == tool and r["model"] == model
                )
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker=marker, ls=ls, label=f"{tool} {model}")
        ax.set_xscale("log")
        ax.set_xlabel("rows of the corrected table")
        ax.set_ylabel(label)
        ax.legend()
    fig.savefig(png, dpi=90)


if __name__ == "__main__":
    main()
