"""Integrate and correct against mdx2 1.0.5 and against the machine's I/O floor, in one run.

    source ../shared/refkit/setup.sh      # puts mdx2.integrate/mdx2.correct (and their stand-ins) on PATH
    .venv/bin/python benchmarks/speed_vs_mdx2.py /tmp/ds_medium --mdx2 \\
        --compare ../shared/refkit/compare.py [--subdivide 4 4 4] [--workers 2] [--repeat 1] [--out DIR]

Every command runs as its own process and is timed from start to exit (imports and cluster start
included), with the peak memory of its whole process tree:

* I/O floor: read and decompress data and mask, storage chunk by storage chunk, with h5py, in
  ``--workers`` processes (what any reader of these files must do);
* ``mdx2.integrate --nproc W`` and ``diffuse integrate --workers W``;
* ``mdx2.correct`` and ``diffuse correct`` on the integrated table.
Outputs are checked with refkit's compare.py (set ``--compare``). Writes speed.csv and speed.png.
mdx2 must be run from the dataset directory (its virtual dataset paths are relative).

Before each timed command the page cache is synced (the previous command's output written back). Timings
on a shared VM drift by 10-40 % from minute to minute, for mdx2 and us alike. ``--repeat N``
runs the whole sequence N times, interleaved; ratios.json holds the
ratios of each round (each is "one run on the same machine") and of the medians. Each diffuse
command writes its run log beside its output (kept in ``--out``): ``integrate.timings_s`` there is
the time budget (startup, cluster, plan, map and the map tasks' read/mask/bin/spill seconds, reduce,
export).
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
from multiprocessing import Pool
from pathlib import Path

import h5py
import numpy as np

from pipeline.api.bench import measure_command
from pipeline.io.images import open_image_stack, storage_chunk_slices

DIFFUSE = str(Path(sys.executable).with_name("diffuse"))


def _read_chunk(args):
    data, dataset, mask, sl = args
    with h5py.File(data, "r") as f:
        f[dataset][sl]
    if mask:
        with h5py.File(mask, "r") as m:
            m["/entry/mask/signal"][sl]
    return 0


def io_floor(ds: Path, workers: int) -> float:
    stack = open_image_stack(ds / "data.nxs")
    along = [storage_chunk_slices(stack.shape, stack.storage_chunks, a) for a in range(3)]
    mask = str(ds / "mask.nxs") if (ds / "mask.nxs").exists() else None
    jobs = [
        (stack.path, stack.dataset, mask, (a, b, c)) for a in along[0] for b in along[1] for c in along[2]
    ]
    with Pool(workers) as pool:
        t0 = time.perf_counter()
        pool.map(_read_chunk, jobs, chunksize=1)
        return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--mdx2", action="store_true", help="also run mdx2.integrate/mdx2.correct found on PATH")
    ap.add_argument("--compare", type=Path, help="refkit compare.py, to check our outputs against mdx2's")
    ap.add_argument("--subdivide", type=int, nargs=3, default=(4, 4, 4))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the whole sequence (medians reported)")
    ap.add_argument(
        "--no-correct", action="store_true", help="integrate only (no mdx2.correct/diffuse correct)"
    )
    ap.add_argument("--no-floor", action="store_true", help="skip the h5py I/O floor")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/speed"))
    a = ap.parse_args()
    ds, out, w = a.dataset.resolve(), a.out.resolve(), a.workers
    out.mkdir(parents=True, exist_ok=True)
    sub = [str(x) for x in a.subdivide]
    mask = ["--mask", str(ds / "mask.nxs")] if (ds / "mask.nxs").exists() else []
    bkg = ["--background", str(ds / "bkg_data_binned.nxs")] if (ds / "bkg_data_binned.nxs").exists() else []
    rows = []
    current_round = [0]

    def settle():
        """Before each timed command: write back the previous command's dirty pages (hundreds of MB
        of output), so no command pays for another's writeback."""
        os.sync()
        time.sleep(1.0)

    def record(name, wall, peak=0, rc=0, note=""):
        rows.append(
            {
                "round": current_round[0],
                "step": name,
                "wall_s": round(wall, 2),
                "peak_tree_rss_mb": round(peak / 2**20),
                "rc": rc,
                "note": note,
            }
        )
        print(f"{name:32} {wall:8.2f} s  {peak / 2**30:6.2f} GB  rc={rc} {note}", flush=True)

    for rnd in range(a.repeat):
        current_round[0] = rnd
        if not a.no_floor:
            settle()
            record("io floor (h5py, data+mask)", io_floor(ds, w))
        record("load average (1 min) at start", 0, 0, 0, f"{os.getloadavg()[0]:.2f}")
        ours_int, ours_cor = out / "integrated.nxs", out / "corrected.nxs"
        ref_int, ref_cor = out / "mdx2_integrated.nxs", out / "mdx2_corrected.nxs"
        mdx2_bin = Path(shutil.which("mdx2.integrate") or "mdx2.integrate").parent if a.mdx2 else None
        if mdx2_bin and not (mdx2_bin / "mdx2.integrate").exists():
            sys.exit("mdx2.integrate is not on PATH: source ../shared/refkit/setup.sh first")
        if mdx2_bin:
            argv = [
                str(mdx2_bin / "mdx2.integrate"),
                "geometry.nxs",
                "data.nxs",
                *mask,
                "--subdivide",
                *sub,
                "--nproc",
                str(w),
                "--outfile",
                str(ref_int),
                "--logfile",
                str(out / "mdx2.integrate.log"),
            ]
            settle()
            record("mdx2.integrate", *measure_command(argv, cwd=ds, stderr=subprocess.DEVNULL)[:3])
        argv = [
            DIFFUSE,
            "integrate",
            str(ds / "geometry.nxs"),
            str(ds / "data.nxs"),
            *mask,
            "--subdivide",
            *sub,
            "--workers",
            str(w),
            "--outfile",
            str(ours_int),
            "--overwrite",
            "--quiet",
        ]
        settle()
        record("diffuse integrate", *measure_command(argv)[:3])
        if a.no_correct:
            continue
        if mdx2_bin:
            argv = [
                str(mdx2_bin / "mdx2.correct"),
                "geometry.nxs",
                str(ref_int),
                *bkg,
                "--outfile",
                str(ref_cor),
                "--logfile",
                str(out / "mdx2.correct.log"),
            ]
            settle()
            record("mdx2.correct", *measure_command(argv, cwd=ds, stderr=subprocess.DEVNULL)[:3])
        argv = [
            DIFFUSE,
            "correct",
            str(ds / "geometry.nxs"),
            str(ours_int),
            *bkg,
            "--outfile",
            str(ours_cor),
            "--overwrite",
            "--quiet",
        ]
        settle()
        record("diffuse correct", *measure_command(argv)[:3])
    if a.compare and mdx2_bin:
        py = str(mdx2_bin / "python")
        for name, ref, cand, kind in (
            ("integrated", ref_int, ours_int, "integrated"),
            *([] if a.no_correct else [("corrected", ref_cor, ours_cor, "corrected")]),
        ):
            res = subprocess.run(
                [py, str(a.compare), str(ref), str(cand), "--kind", kind], capture_output=True, text=True
            )
            verdict = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr[-200:]
            record(f"compare {name}", 0, 0, res.returncode, verdict)

    def ratios_of(by):
        out = {}
        if "mdx2.integrate" in by:
            out["mdx2_integrate / diffuse_integrate"] = by["mdx2.integrate"] / by["diffuse integrate"]
            if "mdx2.correct" in by:
                out["mdx2_correct / diffuse_correct"] = by["mdx2.correct"] / by["diffuse correct"]
        if "io floor (h5py, data+mask)" in by:
            out["diffuse_integrate / io_floor"] = by["diffuse integrate"] / by["io floor (h5py, data+mask)"]
        return out

    timed = [r for r in rows if r["wall_s"] > 0]
    per_round = [
        ratios_of({r["step"]: r["wall_s"] for r in timed if r["round"] == rnd}) for rnd in range(a.repeat)
    ]
    steps = dict.fromkeys(r["step"] for r in timed)
    medians = {step: float(np.median([r["wall_s"] for r in timed if r["step"] == step])) for step in steps}
    ratios = ratios_of(medians)
    for k, v in ratios.items():
        print(f"{k:45} {v:6.2f}")
    with open(out / "speed.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "median_wall_s": medians,
        "median": {k: round(v, 2) for k, v in ratios.items()},
        "rounds": [{k: round(v, 2) for k, v in r.items()} for r in per_round],
    }
    (out / "ratios.json").write_text(json.dumps(summary, indent=1))
    median_rows = [{"step": k, "wall_s": v} for k, v in medians.items()]
    title = f"{ds.name}, subdivide {' '.join(sub)}, {w} workers"
    if a.repeat > 1:
        title += f", median of {a.repeat} rounds"
    plot(median_rows, out / "speed.png", title)
    for f in (ours_int, ours_cor, ref_int, ref_cor):
        f.unlink(missing_ok=True)
    return 0 if all(r["rc"] == 0 for r in rows) else 1


def plot(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in rows if r["wall_s"] > 0]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    colors = [
        "tab:gray" if "floor" in r["step"] else "tab:red" if "mdx2" in r["step"] else "tab:blue"
        for r in timed
    ]
    ax.barh(range(len(timed)), [r["wall_s"] for r in timed], color=colors)
    ax.set_yticks(range(len(timed)), [r["step"] for r in timed])
    ax.invert_yaxis()
    ax.set_xlabel("wall time of the whole command (s)")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
