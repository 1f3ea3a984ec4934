"""``diffuse merge`` vs ``mdx2.merge`` on a large corrected table, in the same run.

The table: tests/data/cubic's corrected 3 2 5 table (7966 rows) repeated ``--copies`` times, copy i
shifted by (h, k) += (20 (i % 50), 20 (i // 50)) so every copy lands in voxels of its own (the per
voxel redundancy of the original stays; phi, ix, iy, s stay, so its ``mdx2.scale --mca2020`` scales
apply). Default 2500 copies = 19.9 M rows. Both programs merge it with those scales and
``--outlier 3`` (and, in a second case, ``--split weightedRandomHalf`` with numpy seeded alike);
wall time and peak RSS of the process tree come from refkit's treemem.py; the outputs are compared
column by column (``identical`` = every byte equal).

    python benchmarks/merge_vs_mdx2.py --workdir /work/scratch-merge/bench [--copies 2500]

Writes benchmarks/results/merge_vs_mdx2.csv (one row per program and case, with ``uptime``'s load).
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
ROOT = HERE.parent
BASE = ROOT / "tests" / "data" / "cubic" / "mdx2" / "corrected_325_bkg.nxs"
SCALES = ROOT / "tests" / "data" / "merge" / "scales_325.nxs"
REFKIT = Path(os.environ.get("DIFFUSE_REFKIT", "/work/shared/refkit"))
MDX2 = Path("/tmp/mdx2ref/bin")
SEEDED = (
    "import sys, numpy as np; np.random.seed(int(sys.argv[1])); sys.argv = ['mdx2.merge'] + sys.argv[2:]; "
    "from mdx2.command_line.merge import run; run()"
)


def make_table(path: Path, copies: int) -> int:
    with h5py.File(BASE, "r") as f:
        g = f["/entry/hkl_table"]
        base = {k: g[k][()] for k in g}
    n = len(base["h"])
    if path.exists():
        with h5py.File(path, "r") as f:
            if f["/entry/hkl_table/h"].shape[0] == n * copies:
                return n * copies
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        g = entry.create_group("hkl_table")
        g.attrs["mdx2_module"] = "mdx2.data"
        g.attrs["mdx2_class"] = "HKLTable"
        g.create_dataset("ndiv", data=base["ndiv"])
        cols = [k for k in base if k != "ndiv"]
        ds = {k: g.create_dataset(k, shape=(n * copies,), dtype=base[k].dtype) for k in cols}
        block = 100
        for i0 in range(0, copies, block):
            i = np.arange(i0, min(i0 + block, copies))
            for k in cols:
                v = np.tile(base[k], len(i))
                if k in ("h", "k"):
                    shift = (20 * (i % 50) if k == "h" else 20 * (i // 50)).astype(v.dtype)
                    v = v + np.repeat(shift, n)
                ds[k][i0 * n : (i0 + len(i)) * n] = v
    tmp.rename(path)
    return n * copies


def treemem(cmd: list[str], cwd: Path) -> dict:
    p = subprocess.run(
        [sys.executable, str(REFKIT / "treemem.py"), "--", *cmd], cwd=cwd, capture_output=True, text=True
    )
    last = p.stderr.strip().splitlines()[-1]
    out = json.loads(last)
    if out.get("rc") != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{p.stderr[-3000:]}")
    return out


def identical(a: Path, b: Path) -> bool:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        ga, gb = fa["/entry/hkl_table"], fb["/entry/hkl_table"]
        if sorted(ga) != sorted(gb):
            return False
        return all(ga[k].dtype == gb[k].dtype and ga[k][()].tobytes() == gb[k][()].tobytes() for k in gb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--copies", type=int, default=2500)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "merge_vs_mdx2.csv")
    ap.add_argument("--cases", default="scales_o3,wrh")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    table = args.workdir / f"corrected_x{args.copies}.nxs"
    t = time.perf_counter()
    rows = make_table(table, args.copies)
    print(f"table: {rows:,} rows ({time.perf_counter() - t:.0f} s)", flush=True)
    diffuse = str(ROOT / ".venv" / "bin" / "diffuse")
    env_path = f"{MDX2}:{os.environ['PATH']}"
    cases = {
        "scales_o3": ["--outlier", "3"],
        "wrh": ["--outlier", "3", "--split", "weightedRandomHalf"],
    }
    results = []
    for case in args.cases.split(","):
        extra = cases[case]
        ref = args.workdir / f"mdx2_{case}.nxs"
        ours = args.workdir / f"ours_{case}.nxs"
        os.environ["PATH"] = env_path
        os.environ["PYTHONPATH"] = f"{REFKIT / 'stubs'}:{REFKIT}"  # refkit's setup.sh
        m = treemem(
            [
                str(MDX2 / "python"),
                "-c",
                SEEDED,
                "1",
                str(table),
                "--scale",
                str(SCALES),
                *extra,
                "--outfile",
                str(ref),
            ],
            args.workdir,
        )
        load_m = os.getloadavg()[0]
        seed = ["--seed", "1"] if "--split" in extra else []
        o = treemem(
            [diffuse, "merge", str(table), "--scale", str(SCALES), *extra, *seed, "--outfile", str(ours),
             "--overwrite", "-q"],
            args.workdir,
        )  # fmt: skip
        load_o = os.getloadavg()[0]
        same = identical(ours, ref)
        for prog, r, load in (("mdx2.merge", m, load_m), ("diffuse merge", o, load_o)):
            results.append(
                {
                    "case": case,
                    "program": prog,
                    "rows": rows,
                    "wall_s": round(r["wall_s"], 2),
                    "peak_tree_rss_mb": round(r["peak_tree_rss_mb"]),
                    "identical_to_mdx2": same,
                    "load_1min": round(load, 2),
                }
            )
        print(results[-2], results[-1], sep="\n", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0]))
        w.writeheader()
        w.writerows(results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
