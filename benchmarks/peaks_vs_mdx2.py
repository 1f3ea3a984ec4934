"""find-peaks and mask-peaks against mdx2 1.0.5 in one run: wall time, peak memory, equality.

    source ../shared/refkit/setup.sh     # mdx2.find_peaks / mdx2.mask_peaks on PATH
    .venv/bin/python benchmarks/peaks_vs_mdx2.py /work/data/medium --count-threshold 50 \\
        [--sigma-cutoff 3] [--workers 2] [--repeat 1] [--out DIR] [--tag medium]

Each command runs as its own process, timed from start to exit (imports and cluster start
included), with the peak RSS of its whole process tree (refkit's treemem.py). mdx2 runs from the
dataset directory (relative virtual-dataset paths) with its outputs and log file in ``--out``; the
dataset directory is never written. After each round the outputs are compared: the peak table rows
(and outliers, and the model) exactly, and the masks bit for bit. Rows go to
benchmarks/results/peaks_<tag>.csv with the load average next to each figure (a shared machine:
ratios measured in the same round are what count).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
DIFFUSE = str(Path(sys.executable).with_name("diffuse"))
TREEMEM = Path(os.environ.get("DIFFUSE_REFKIT", "/work/shared/refkit")) / "treemem.py"


def measure(argv: list[str], cwd: Path) -> tuple[float, float, int]:
    """(wall s, peak tree RSS MB, return code) of ``argv`` run in ``cwd``."""
    load = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, str(TREEMEM), "--", *argv], cwd=cwd, capture_output=True, text=True, check=False
    )
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "{}"
    try:
        m = json.loads(last)
    except json.JSONDecodeError:
        m = {"wall_s": float("nan"), "peak_tree_rss_mb": float("nan"), "rc": proc.returncode}
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
    return m["wall_s"], m["peak_tree_rss_mb"], m["rc"], load


def _read(path, name):
    with h5py.File(path, "r") as f:
        return f[name][()]


def same_peaks(a: Path, b: Path) -> bool:
    names = [
        f"/entry/{g}/{c}"
        for g in ("peaks", "outliers")
        for c in ("observed_phi", "observed_px_x", "observed_px_y")
    ]
    names += ["/entry/peak_model/r0", "/entry/peak_model/sigma"]
    return all(np.array_equal(_read(a, n), _read(b, n)) for n in names)


def mask_diff(a: Path, b: Path) -> int:
    """Pixels that differ (read in phi slabs)."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        da, db = fa["/entry/mask/signal"], fb["/entry/mask/signal"]
        if da.shape != db.shape:
            return -1
        step = max(1, (64 * 2**20) // max(1, da.shape[1] * da.shape[2]))
        return int(
            sum(int((da[i : i + step] != db[i : i + step]).sum()) for i in range(0, da.shape[0], step))
        )


def mask_count(path: Path) -> int:
    with h5py.File(path, "r") as f:
        d = f["/entry/mask/signal"]
        step = max(1, (64 * 2**20) // max(1, d.shape[1] * d.shape[2]))
        return int(sum(int(d[i : i + step].sum()) for i in range(0, d.shape[0], step)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--count-threshold", type=float, default=50.0)
    ap.add_argument("--sigma-cutoff", type=float, default=3.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--tag", default=None)
    ap.add_argument(
        "--steps",
        default="find,mask",
        help="find,mask (default) or one of them; mask alone reuses the peaks files in --out",
    )
    ap.add_argument("--append", action="store_true", help="add rows to the CSV instead of replacing it")
    args = ap.parse_args()
    ds = args.dataset.resolve()
    tag = args.tag or ds.name
    out = (args.out or Path(f"/tmp/peaks_bench_{tag}")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with h5py.File(ds / "data.nxs", "r") as f:
        shape = f["/entry/image_series/data"].shape
    pixels = int(np.prod(shape))
    thr, sig, w = str(args.count_threshold), str(args.sigma_cutoff), str(args.workers)
    rows = []
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True, check=False
    ).stdout.strip()
    for rnd in range(args.repeat):
        cmds = {
            ("mdx2", "find-peaks"): [
                "mdx2.find_peaks",
                "geometry.nxs",
                "data.nxs",
                "--count_threshold",
                thr,
                "--sigma_cutoff",
                sig,
                "--nproc",
                w,
                "--outfile",
                str(out / "mdx2_peaks.nxs"),
                "--logfile",
                str(out / "mdx2.find_peaks.log"),
            ],
            ("diffuse", "find-peaks"): [
                DIFFUSE,
                "find-peaks",
                "geometry.nxs",
                "data.nxs",
                "--count-threshold",
                thr,
                "--sigma-cutoff",
                sig,
                "--workers",
                w,
                "--outfile",
                str(out / "peaks.nxs"),
                "--overwrite",
                "--quiet",
            ],
            ("mdx2", "mask-peaks"): [
                "mdx2.mask_peaks",
                "geometry.nxs",
                "data.nxs",
                str(out / "mdx2_peaks.nxs"),
                "--sigma_cutoff",
                sig,
                "--nproc",
                w,
                "--outfile",
                str(out / "mdx2_mask.nxs"),
                "--logfile",
                str(out / "mdx2.mask_peaks.log"),
            ],
            ("diffuse", "mask-peaks"): [
                DIFFUSE,
                "mask-peaks",
                "geometry.nxs",
                "data.nxs",
                str(out / "peaks.nxs"),
                "--sigma-cutoff",
                sig,
                "--workers",
                w,
                "--outfile",
                str(out / "mask.nxs"),
                "--overwrite",
                "--quiet",
            ],
        }
        results = {}
        steps = {f"{s.strip()}-peaks" for s in args.steps.split(",")}
        for (tool, step), argv in cmds.items():
            if step not in steps:
                continue
            os.sync()
            wall, mb, rc, load = measure(argv, ds)
            results[(tool, step)] = (wall, mb, rc, load)
            print(
                f"round {rnd} {tool:8s} {step:10s} {wall:8.1f} s {mb:8.0f} MB rc={rc} load={load:.1f}",
                flush=True,
            )
        peaks_equal = same_peaks(out / "peaks.nxs", out / "mdx2_peaks.nxs")
        have_masks = (out / "mask.nxs").exists() and (out / "mdx2_mask.nxs").exists()
        differ = mask_diff(out / "mask.nxs", out / "mdx2_mask.nxs") if have_masks else -1
        n_peaks = int(_read(out / "peaks.nxs", "/entry/peaks/observed_phi").size)
        masked = mask_count(out / "mask.nxs") if (out / "mask.nxs").exists() else -1
        print(
            f"round {rnd}: peak tables equal: {peaks_equal}; mask pixels differing: {differ}; "
            f"{n_peaks} peak pixels, {masked} masked",
            flush=True,
        )
        for (tool, step), (wall, mb, rc, load) in results.items():
            rows.append(
                {
                    "round": rnd,
                    "commit": commit,
                    "dataset": tag,
                    "pixels": pixels,
                    "shape": "x".join(map(str, shape)),
                    "tool": tool,
                    "step": step,
                    "workers": args.workers,
                    "wall_s": round(wall, 2),
                    "peak_tree_rss_mb": round(mb, 1),
                    "rc": rc,
                    "load_1min": round(load, 2),
                    "count_threshold": args.count_threshold,
                    "sigma_cutoff": args.sigma_cutoff,
                    "peak_pixels": n_peaks,
                    "masked_pixels": masked,
                    "peaks_equal": peaks_equal,
                    "mask_pixels_differing": differ,
                    "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                }
            )
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    path = res / f"peaks_{tag}.csv"
    if args.append and path.exists():  # keep earlier rows (columns of both)
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f)) + rows
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=fields, restval="")
        wr.writeheader()
        wr.writerows(rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
