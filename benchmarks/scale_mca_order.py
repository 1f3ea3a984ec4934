"""Does row order or the LSQR implementation bring ``diffuse scale --mca2020`` to mdx2's answer?

    source ../shared/refkit/setup.sh      # mdx2.scale / mdx2.merge on PATH; scipy in this venv
    .venv/bin/python benchmarks/scale_mca_order.py tests/data/cubic/mdx2/corrected_325_bkg.nxs \\
        [--out benchmarks/results/scale_mca_order]

Variants of our fit (the test's small --mca2020 grids), each given to ``mdx2.merge`` and compared with
``mdx2.merge`` using mdx2.scale's own scales (median / max relative difference of the merged
intensities, fraction above 1e-3):

* ``base``: as shipped (rows range-partitioned by H, our LSQR transcription);
* ``table_order``: one partition with the rows in table order (no H sort), so every normal-equation
  sum runs over rows in mdx2's order;
* ``scipy_lsqr``: scipy's own ``lsqr`` (same defaults as mdx2's call) on our ``G``;
* ``table_order+scipy_lsqr``: both;
* ``mdx2_shuffled``: mdx2.scale itself on the same table with its rows permuted (seed 7): mdx2's own
  reproducibility bound.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

MCA = [
    "--mca2020",
    "--offset.dphi",
    "0.5",
    "--absorption.dphi",
    "0.5",
    "--absorption.nx",
    "6",
    "--absorption.ny",
    "6",
    "--detector.nx",
    "30",
    "--detector.ny",
    "30",
]
VARIANTS = ("base", "table_order", "scipy_lsqr", "table_order+scipy_lsqr")


def fit_variant(variant: str, table: str, outfile: str) -> list[float]:
    """Run our fit with the variant's patches (in a child process, so patches do not leak)."""
    import numpy as np

    from pipeline.config import AbsorptionOptions, DetectorOptions, OffsetOptions, ScaleParams
    from pipeline.graph import scale as g
    from pipeline.kernels import scaling_fit as sf

    if "table_order" in variant:
        read = g._read_run

        def unsorted(source, start, stop, batch, ndiv, subsample, group, rundir):
            run = read(source, start, stop, batch, ndiv, subsample, "s", rundir)  # "s": no H sort
            rows = source.read(start, stop, ("h", "k", "l"))
            for c, n in zip("hkl", ndiv, strict=True):
                run["cols"][c + "i"] = np.round(np.asarray(rows[c]) * n).astype(np.int32)
            run["h_lo"], run["h_counts"] = 0, np.array([run["rows"]])
            return run

        g._read_run = unsorted
        g._h_ranges = lambda runs, rows_per_part: [(0, 1)]
    if "scipy_lsqr" in variant:
        import scipy.sparse as sp
        from scipy.sparse.linalg import lsqr

        def solve(AA, Ay, regs, extra_diag=0.0):
            G = sf.Sparse.sum(AA, *(B.scaled(a) for a, B in regs))
            M = sp.csr_matrix((G.vals, G.cols, G.indptr), shape=(G.n, G.n))
            if extra_diag:
                M = M + extra_diag * sp.eye(G.n)
            x, istop, itn = lsqr(M, Ay)[:3]
            return x, istop, itn

        sf.solve = solve
    p = ScaleParams(
        hkl=(table,),
        outfile=(outfile,),
        mca2020=True,
        offset=OffsetOptions(dphi=0.5),
        absorption=AbsorptionOptions(dphi=0.5, nx=6, ny=6),
        detector=DetectorOptions(nx=30, ny=30),
        overwrite=True,
    )
    r = g.fit_scales(p.hkl, p)
    g.write_outputs(p, r)
    return [h["x2"] for h in r.history]


def merged(table: Path, scales: Path, work: Path) -> np.ndarray:
    dst = work / f"merged_{scales.stem}.nxs"
    subprocess.run(
        ["mdx2.merge", str(table), "--scale", str(scales), "--outfile", str(dst)],
        check=True,
        capture_output=True,
        cwd=work,
    )
    with h5py.File(dst) as f:
        return f["entry/hkl_table/intensity"][()].astype(float)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/scale_mca_order"))
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # child process
    a = ap.parse_args(argv)
    if a.variant:
        x2 = fit_variant(a.variant, str(a.table), str(a.out))
        print(" ".join(f"{v:.6f}" for v in x2))
        return
    a.out = a.out.resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    work = a.out / "work_cubic"
    work.mkdir(exist_ok=True)
    table = work / "corrected.nxs"
    shutil.copyfile(a.table, table)
    with h5py.File(table) as f:
        n = f["entry/hkl_table/h"].shape[0]
    shuffled = work / "shuffled.nxs"
    shutil.copyfile(table, shuffled)
    perm = np.random.default_rng(7).permutation(n)
    with h5py.File(shuffled, "r+") as f:
        g = f["entry/hkl_table"]
        for k in g:
            if isinstance(g[k], h5py.Dataset) and g[k].shape[:1] == (n,):
                g[k][...] = g[k][()][perm]
    run = {"cwd": work, "check": True, "capture_output": True}
    subprocess.run(["mdx2.scale", "corrected.nxs", *MCA, "--outfile", "ref.nxs"], **run)
    subprocess.run(["mdx2.scale", "shuffled.nxs", *MCA, "--outfile", "mdx2_shuffled.nxs"], **run)
    ref = merged(table, work / "ref.nxs", work)
    rows = []
    for v in (*VARIANTS, "mdx2_shuffled"):
        scales = work / f"{v}.nxs"
        x2 = ""
        if v != "mdx2_shuffled":
            out = subprocess.run(
                [sys.executable, __file__, str(table), "--out", str(scales), "--variant", v],
                check=True,
                capture_output=True,
                text=True,
            )
            x2 = out.stdout.split()
        m = merged(table, scales, work)
        ok = np.isfinite(m) & np.isfinite(ref) & (ref != 0)
        rel = np.abs(m[ok] - ref[ok]) / np.abs(ref[ok])
        rows.append(
            {
                "variant": v,
                "median_rel": f"{np.median(rel):.3g}",
                "max_rel": f"{rel.max():.3g}",
                "frac_gt_1e-3": f"{np.mean(rel > 1e-3):.3g}",
                "iterations": len(x2) if x2 else "",
                "final_x2": x2[-1] if x2 else "",
            }
        )
        print(rows[-1], flush=True)
    with open(a.out / "mca_order.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
