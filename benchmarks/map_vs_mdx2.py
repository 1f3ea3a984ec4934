"""``diffuse map`` against ``mdx2.map`` 1.0.5 on a merged table of a refkit dataset, in one run.

    source ../shared/refkit/setup.sh      # puts mdx2.* (and their stand-ins) on PATH
    .venv/bin/python benchmarks/map_vs_mdx2.py /work/data/medium --work /work/scratch/map_medium \\
        [--subdivide 4 4 4] [--limits -40 40 -40 40 -40 40] [--repeat 1] [--out benchmarks/results/map_medium]

The merged table is made once (cached in ``--work``, not timed): ``diffuse integrate`` and ``diffuse
correct`` (equal to mdx2's, see docs/SPEC.md), then ``mdx2.scale`` and ``mdx2.merge``. Then, for a
3-D map (``--limits``) and an l = 0 slice of the same extent, ``mdx2.map`` and ``diffuse map`` run
as processes of their own, timed from start to exit (imports included) with the peak memory of the
process tree, and their maps are compared value by value (NaN where NaN, same dtype). Writes
``map.csv`` (one line a command, with the load average) and ``ratios.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from pipeline.api.bench import measure_command

DIFFUSE = str(Path(sys.executable).with_name("diffuse"))


def _run(argv: list[str], cwd: Path) -> None:
    print("+", " ".join(map(str, argv)), flush=True)
    subprocess.run([str(a) for a in argv], cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def prepare(ds: Path, work: Path, subdivide: list[int]) -> Path:
    """integrate + correct (ours), scale + merge (mdx2); returns merged.nxs (cached)."""
    merged = work / "merged.nxs"
    if merged.exists():
        return merged
    work.mkdir(parents=True, exist_ok=True)
    sub = [str(s) for s in subdivide]
    mask = ["--mask", ds / "mask.nxs"] if (ds / "mask.nxs").exists() else []
    bkg = ["--background", ds / "bkg_data_binned.nxs"] if (ds / "bkg_data_binned.nxs").exists() else []
    if not (work / "corrected.nxs").exists():
        _run([DIFFUSE, "integrate", ds / "geometry.nxs", ds / "data.nxs", *mask, "--subdivide", *sub,
              "--outfile", work / "integrated.nxs", "--overwrite", "-q"], work)  # fmt: skip
        _run([DIFFUSE, "correct", ds / "geometry.nxs", work / "integrated.nxs", *bkg,
              "--outfile", work / "corrected.nxs", "--overwrite", "-q"], work)  # fmt: skip
    _run(["mdx2.scale", "corrected.nxs", "--outfile", "scales.nxs"], work)
    _run(["mdx2.merge", "corrected.nxs", "--scale", "scales.nxs", "--outfile", "merged.nxs"], work)
    return merged


def same_map(a: Path, b: Path, name: str) -> bool:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        ga, gb = fa["entry"][name], fb["entry"][name]
        if any(not np.array_equal(ga[x][()], gb[x][()]) for x in ("h", "k", "l")):
            return False
        sa, sb = ga["signal"], gb["signal"]
        if sa.dtype != sb.dtype or sa.shape != sb.shape:
            return False
        for h0 in range(0, sa.shape[0], 16):  # plane by plane: never two whole maps in memory
            if not np.array_equal(sa[h0 : h0 + 16], sb[h0 : h0 + 16], equal_nan=True):
                return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--work", type=Path, required=True, help="where the tables and maps go (cached)")
    ap.add_argument("--subdivide", type=int, nargs=3, default=(4, 4, 4))
    ap.add_argument("--limits", type=float, nargs=6, default=(-40, 40, -40, 40, -40, 40))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--cases", nargs="+", default=["3d", "slice_l0"], choices=["3d", "slice_l0"])
    ap.add_argument("--no-mdx2", action="store_true", help="time ours only")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/map_medium"))
    a = ap.parse_args()
    ds, work, out = a.dataset.resolve(), a.work.resolve(), a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    merged = prepare(ds, work, list(a.subdivide))
    geom = ds / "geometry.nxs"
    with h5py.File(merged, "r") as f:
        table_rows = int(f["entry/hkl_table/h"].shape[0])
        ndiv = [int(x) for x in f["entry/hkl_table/ndiv"][()]]
    lim = [f"{x:g}" for x in a.limits]
    cases = {"3d": lim, "slice_l0": [*lim[:4], "0", "0"]}
    cases = {k: v for k, v in cases.items() if k in a.cases}
    rows, ratios = [], {}
    for rep in range(a.repeat):
        for case, limits in cases.items():
            result = {}
            tools = ["diffuse"] if a.no_mdx2 else ["mdx2", "diffuse"]
            for tool in tools:
                outfile = work / f"{tool}_{case}.nxs"
                outfile.unlink(missing_ok=True)
                if tool == "mdx2":
                    argv = ["mdx2.map", geom, merged, "--limits", *limits, "--outfile", outfile]
                else:
                    png = ["--no-png"] if case == "3d" else ["--png", work / "slice_l0.png"]
                    argv = [DIFFUSE, "map", geom, merged, "--limits", *limits, "--outfile", outfile, *png]
                    argv += ["-q", "--overwrite"]
                subprocess.run(["sync"], check=False)
                wall, peak, rc, _ = measure_command([str(x) for x in argv], cwd=work)
                if rc != 0:
                    raise SystemExit(f"{tool} map failed ({rc}): {' '.join(map(str, argv))}")
                load = os.getloadavg()[0]
                with h5py.File(outfile, "r") as f:
                    shape = f["entry/intensity/signal"].shape
                result[tool] = (wall, peak)
                rows.append({
                    "round": rep, "case": case, "tool": tool, "wall_s": round(wall, 2),
                    "peak_mb": round(peak / 2**20), "grid": "x".join(map(str, shape)),
                    "points": int(np.prod(shape)), "table_rows": table_rows, "ndiv": " ".join(map(str, ndiv)),
                    "load1": round(load, 1), "identical": "",
                })  # fmt: skip
                print(rows[-1], flush=True)
            if "mdx2" in result:
                same = same_map(work / f"mdx2_{case}.nxs", work / f"diffuse_{case}.nxs", "intensity")
                rows[-1]["identical"] = rows[-2]["identical"] = same
                ratios.setdefault(case, []).append({
                    "speedup": round(result["mdx2"][0] / result["diffuse"][0], 2),
                    "memory_ratio": round(result["mdx2"][1] / result["diffuse"][1], 2), "identical": same,
                })  # fmt: skip
    with open(out / "map.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "ratios.json").write_text(json.dumps(ratios, indent=1) + "\n")
    if (work / "slice_l0.png").exists():
        shutil.copy2(work / "slice_l0.png", out / "slice_l0.png")
    print(json.dumps(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
