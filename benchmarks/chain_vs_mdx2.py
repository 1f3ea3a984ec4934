"""The whole reduction, step by step, by mdx2 1.0.5 and by us in one run: wall time, peak memory, equality.

    source ../shared/refkit/setup.sh     # mdx2.* on PATH
    .venv/bin/python benchmarks/chain_vs_mdx2.py DATASET [--out DIR] [--workers 2] [--nproc 2]
        [--subdivide 2 2 2] [--reintegrate 4 4 4] [--count-threshold 20] [--limits ...]

DATASET is a refkit dataset (``experiment.expt``, ``data.nxs``, ``bkg_data.nxs``). Each chain runs every
step on its own outputs, in its own directory (``WORKDIR/mdx2``, ``WORKDIR/diffuse``; ``--workdir``,
default a directory under $TMPDIR, replaced on each run):

    import_geometry -> find_peaks -> mask_peaks -> bin_image_series (background) -> integrate ->
    correct -> scale -> merge -> reintegrate -> map

mdx2 gets ``--nproc`` (default 2) wherever it has the option, we get ``--workers``. Every command is
timed from start to exit with the peak RSS of its whole process tree
(``pipeline.api.bench.measure_command``), the page cache synced before each. Then each pair of outputs
is compared: peak tables and masks (pixels that differ), hkl tables (same rows; largest relative
difference of any column), scales (largest relative difference of the model values), the map.

Writes ``chain.csv`` (one row per step and tool, with the comparison and the machine's load) and
``chain.png`` (time per step) into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from pipeline.api.bench import measure_command

DIFFUSE = str(Path(sys.executable).with_name("diffuse"))


def steps(ds: Path, a) -> list[tuple[str, list[str], list[str], str]]:
    """(step, mdx2 argv, diffuse argv, output compared), run in the chain's own directory."""
    sub, rsub = [str(x) for x in a.subdivide], [str(x) for x in a.reintegrate]
    limits = [str(x) for x in a.limits]
    np_ = ["--nproc", str(a.nproc)]
    w = ["--workers", str(a.workers), "--quiet"]
    expt, data, bkg = "experiment.expt", "data.nxs", "bkg_data.nxs"  # linked into each chain's directory
    bins = [str(x) for x in a.background_bins]
    return [
        ("import_geometry", ["mdx2.import_geometry", expt, "--outfile", "geometry.nxs", *np_],
         [DIFFUSE, "import-geometry", expt, "--outfile", "geometry.nxs", "--quiet"], "geometry.nxs"),
        ("find_peaks", ["mdx2.find_peaks", "geometry.nxs", data, "--count_threshold", str(a.count_threshold),
          "--outfile", "peaks.nxs", *np_],
         [DIFFUSE, "find-peaks", "geometry.nxs", data, "--count-threshold", str(a.count_threshold), *w],
         "peaks.nxs"),
        ("mask_peaks", ["mdx2.mask_peaks", "geometry.nxs", data, "peaks.nxs", "--sigma_cutoff", "3",
          "--outfile", "mask.nxs", *np_],
         [DIFFUSE, "mask-peaks", "geometry.nxs", data, "peaks.nxs", "--sigma-cutoff", "3", *w], "mask.nxs"),
        ("bin_background", ["mdx2.bin_image_series", bkg, *bins, "--valid_range", "0", "200",
                            "--outfile", "bkg_binned.nxs", *np_],
         [DIFFUSE, "bin-background", bkg, *bins, "--valid-range", "0", "200", "--outfile", "bkg_binned.nxs",
          "--quiet"], "bkg_binned.nxs"),
        ("integrate", ["mdx2.integrate", "geometry.nxs", data, "--mask", "mask.nxs", "--subdivide", *sub,
          "--outfile", "integrated.nxs", *np_],
         [DIFFUSE, "integrate", "geometry.nxs", data, "--mask", "mask.nxs", "--subdivide", *sub,
          "--outfile", "integrated.nxs", *w], "integrated.nxs"),
        ("correct", ["mdx2.correct", "geometry.nxs", "integrated.nxs", "--background", "bkg_binned.nxs",
          "--outfile", "corrected.nxs", *np_],
         [DIFFUSE, "correct", "geometry.nxs", "integrated.nxs", "--background", "bkg_binned.nxs",
          "--outfile", "corrected.nxs", *w], "corrected.nxs"),
        ("scale", ["mdx2.scale", "corrected.nxs", "--outfile", "scales.nxs", *np_],
         [DIFFUSE, "scale", "corrected.nxs", "--outfile", "scales.nxs", *w], "scales.nxs"),
        ("merge", ["mdx2.merge", "corrected.nxs", "--scale", "scales.nxs", "--outfile", "merged.nxs", *np_],
         [DIFFUSE, "merge", "corrected.nxs", "--scale", "scales.nxs", "--outfile", "merged.nxs", *w],
         "merged.nxs"),
        ("reintegrate", ["mdx2.reintegrate", "geometry.nxs", data, "--mask", "mask.nxs", "--subdivide", *rsub,
                         "--scale", "scales.nxs", "--background", "bkg_binned.nxs", "--output", "intensity",
                         "--outfile", "reintegrated.nxs", *np_],
         [DIFFUSE, "reintegrate", "geometry.nxs", data, "--mask", "mask.nxs", "--subdivide", *rsub,
          "--scale", "scales.nxs", "--background", "bkg_binned.nxs", "--output", "intensity",
          "--outfile", "reintegrated.nxs", *w], "reintegrated.nxs"),
        ("map", ["mdx2.map", "geometry.nxs", "reintegrated.nxs", "--limits", *limits, "--outfile", "map.nxs",
                 *np_],
         [DIFFUSE, "map", "geometry.nxs", "reintegrated.nxs", "--limits", *limits, "--outfile", "map.nxs",
          *w], "map.nxs"),
    ]  # fmt: skip


def _datasets(path: Path) -> dict[str, np.ndarray]:
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "fiub" and obj.ndim >= 1:
            out[name] = obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def compare(a: Path, b: Path) -> dict:
    """Every numeric dataset of two files: same shapes, the largest relative difference, and (bool
    datasets: masks) how many values differ."""
    if not (a.exists() and b.exists()):
        return {"compared": False}
    x, y = _datasets(a), _datasets(b)
    common = sorted(set(x) & set(y))
    out = {
        "compared": True,
        "datasets": len(common),
        "same_shapes": True,
        "max_rel": 0.0,
        "values_differing": 0,
    }
    for name in common:
        u, v = x[name], y[name]
        if u.shape != v.shape:
            out["same_shapes"] = False
            continue
        if u.dtype.kind == "b" or v.dtype.kind == "b":
            out["values_differing"] += int(np.count_nonzero(u != v))
            continue
        u, v = u.astype(np.float64), v.astype(np.float64)
        both = np.isfinite(u) & np.isfinite(v)
        out["values_differing"] += int(np.count_nonzero(np.isfinite(u) != np.isfinite(v)))
        if both.any():
            rel = np.abs(u[both] - v[both]) / np.maximum(np.abs(u[both]), 1e-30)
            out["max_rel"] = max(out["max_rel"], float(rel.max()))
    return out


def sync_and_drop_caches() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        pass  # not root: timings then include a warm page cache for both tools alike


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/chain"), help="CSV and PNG")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "chain_vs_mdx2")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--subdivide", type=int, nargs=3, default=(2, 2, 2))
    p.add_argument("--reintegrate", type=int, nargs=3, default=(4, 4, 4))
    p.add_argument("--count-threshold", type=float, default=20)
    p.add_argument("--background-bins", type=int, nargs=3, default=(10, 20, 20))
    p.add_argument("--limits", type=float, nargs=6, default=(-10, 10, -10, 10, 0, 0))
    p.add_argument(
        "--mdx2-bin", type=Path, default=Path(os.environ.get("REFKIT_VENV", "/tmp/mdx2ref")) / "bin"
    )
    a = p.parse_args()
    if "refkit" not in os.environ.get("PYTHONPATH", ""):
        sys.exit("source ../shared/refkit/setup.sh first (mdx2's import_geometry needs its PYTHONPATH)")
    ds = a.dataset.resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    dirs = {"mdx2": a.workdir / "mdx2", "diffuse": a.workdir / "diffuse"}
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        # the inputs as links beside the outputs: mdx2 opens the virtual datasets' sources (datastore/...)
        # relative to its working directory
        for name in ("experiment.expt", "data.nxs", "bkg_data.nxs", "datastore"):
            if (ds / name).exists():
                (d / name).symlink_to(ds / name)
    env = dict(os.environ, PATH=f"{a.mdx2_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    rows = []
    for step, mdx2_argv, ours_argv, output in steps(ds, a):
        for tool, argv in (("mdx2", mdx2_argv), ("diffuse", ours_argv)):
            sync_and_drop_caches()
            load = os.getloadavg()[0]
            wall, peak, rc, _ = measure_command(argv, cwd=dirs[tool], env=env, stderr=subprocess.DEVNULL)
            row = {"step": step, "tool": tool, "wall_s": round(wall, 2), "rc": rc}
            rows.append({**row, "peak_tree_rss_mb": round(peak / 1e6, 1), "load_1min": round(load, 2)})
            print(
                f"{step:16s} {tool:8s} {wall:8.1f} s {peak / 1e9:6.2f} GB  rc {rc}  load {load:.1f}",
                flush=True,
            )
            if rc != 0:
                sys.exit(f"{tool} failed at {step}: {' '.join(argv)}")
        rows[-1].update(compare(dirs["mdx2"] / output, dirs["diffuse"] / output))
        print(f"{'':16s} compared: {rows[-1]}", flush=True)
    total = {t: sum(r["wall_s"] for r in rows if r["tool"] == t) for t in dirs}
    rows.append({"step": "total", "tool": "mdx2", "wall_s": round(total["mdx2"], 1)})
    rows.append({"step": "total", "tool": "diffuse", "wall_s": round(total["diffuse"], 1)})
    print(f"total: mdx2 {total['mdx2']:.1f} s, diffuse {total['diffuse']:.1f} s "
          f"({total['mdx2'] / total['diffuse']:.1f}x)")  # fmt: skip
    meta = {
        "dataset": str(ds),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "workers": a.workers,
        "nproc": a.nproc,
    }
    fields = ["step", "tool", "wall_s", "peak_tree_rss_mb", "rc", "load_1min", "compared", "datasets",
              "same_shapes", "max_rel", "values_differing", *meta]  # fmt: skip
    with open(a.out / "chain.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, **meta})
    plot(rows, a.out / "chain.png", f"{ds.name}: mdx2 --nproc {a.nproc} vs diffuse --workers {a.workers}")


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["step"] for r in rows if r["tool"] == "mdx2" and r["step"] != "total"]
    t = {
        tool: [r["wall_s"] for r in rows if r["tool"] == tool and r["step"] != "total"]
        for tool in ("mdx2", "diffuse")
    }
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.bar(x - 0.2, t["mdx2"], 0.4, label="mdx2 1.0.5")
    ax.bar(x + 0.2, t["diffuse"], 0.4, label="diffuse")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("wall time (s)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
