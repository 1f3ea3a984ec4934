"""Validate ``diffuse integrate``/``correct`` against real mdx2 1.0.5 across a matrix of datasets.

For every dataset (refkit presets tiny and small; several space groups, cells, settings, rotation
axes, storage chunkings and phi0) and every subdivision (1 1 1, 2 2 2, 4 4 4, 5 5 5, 3 2 5):

1. mdx2.integrate (with the Bragg mask) and mdx2.correct (with the binned background), run by refkit
   inside the dataset directory;
2. our integrate (NeXus + parquet) and our correct of mdx2's integrated table (NeXus + parquet), with
   the same options, on one local Dask cluster (2 single-threaded worker processes);
3. refkit's compare.py on each of our four tables against mdx2's, and ``mdx2.io.loadobj(path,
   "hkl_table")`` (in the refkit venv) on both our NeXus files; plus our own stricter check that
   the integrated tables are bit-identical (same rows in the same order, every column) and the
   largest relative difference of the corrected intensities.

Results go to benchmarks/results/validation.csv (one row per dataset x subdivision x table x format)
and a summary is printed. Datasets are made under --root (default /tmp/validate/) and reused when
present, as are mdx2's outputs (``<dataset>/mdx2-<subdivide>/``), so a re-run after a change to
our code only runs ours; they are kept apart from the golden fixtures in tests/data/.

Run with OUR virtual environment; mdx2, compare.py and loadobj run in the refkit environment through
``bash -c 'source $REFKIT/setup.sh; ...'`` subprocesses:

    .venv/bin/python benchmarks/validate_vs_mdx2.py                   # the whole matrix (~25 min here)
    .venv/bin/python benchmarks/validate_vs_mdx2.py --only tiny-cubic --subdivide 2 2 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "validation.csv"
SUBDIVISIONS = [(1, 1, 1), (2, 2, 2), (4, 4, 4), (5, 5, 5), (3, 2, 5)]


@dataclass
class Dataset:
    name: str
    preset: str
    options: list[str] = field(default_factory=list)
    note: str = ""


DATASETS = [
    Dataset("tiny-cubic", "tiny", [], "I 21 3 (default), axis x, default chunks"),
    Dataset("tiny-C2-mono", "tiny",
            ["--hall", " C 2y", "--cell", "80.1", "60.3", "50.7", "90", "104.5", "90", "--phi0", "12.3"],
            "C 1 2 1 monoclinic beta=104.5, phi0 12.3"),
    Dataset("tiny-P21-alpha", "tiny",
            ["--hall", " P 2xa", "--cell", "50", "60", "70", "101.5", "90", "90", "--axis", "0", "1", "0",
             "--chunks", "6", "64", "100", "--crystal-seed", "3"],
            "P 21 1 1 (non-reference setting, alpha unique), axis y, chunks 6 64 100"),
    Dataset("tiny-P1-triclinic", "tiny",
            ["--hall", " P 1", "--cell", "50", "60", "70", "80", "95", "105", "--chunks", "7", "50", "60",
             "--phi0", "-30", "--crystal-seed", "5"],
            "P 1 triclinic, chunks 7 50 60, phi0 -30"),
    Dataset("tiny-P3121-hex", "tiny",
            ["--hall", ' P 31 2"', "--cell", "60", "60", "90", "90", "90", "120", "--axis", "0.6", "0.8", "0",
             "--chunks", "20", "33", "487", "--phi0", "45", "--crystal-seed", "9"],
            'P 31 2 1 hexagonal, axis (0.6, 0.8, 0), chunks 20 33 487, phi0 45'),
    Dataset("tiny-R3-rhombo", "tiny",
            ["--hall", " P 3*", "--cell", "70", "70", "70", "80", "80", "80", "--chunks", "3", "195", "50",
             "--crystal-seed", "13"],
            "R 3 :R (rhombohedral axes, change-of-basis ASU), chunks 3 195 50"),
    Dataset("small-cubic", "small", [], "I 21 3, 2x3 modules, default chunks"),
    Dataset("small-P212121-odd", "small",
            ["--hall", " P 2ac 2ab", "--cell", "60", "70", "80", "90", "90", "90",
             "--axis", "0", "0.6", "0.8",
             "--chunks", "16", "100", "128", "--phi0", "90", "--crystal-seed", "21"],
            "P 21 21 21 orthorhombic, axis (0, 0.6, 0.8), chunks 16 100 128, phi0 90"),
]  # fmt: skip


def find_refkit() -> Path:
    for candidate in (os.environ.get("REFKIT"), REPO.parent / "shared" / "refkit", "/work/shared/refkit"):
        if candidate and (Path(candidate) / "setup.sh").exists():
            return Path(candidate).resolve()
    sys.exit("refkit not found; set REFKIT=/path/to/shared/refkit")


def in_refkit(refkit: Path, cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd`` in the refkit environment (mdx2 1.0.5 + stubs), in directory ``cwd``."""
    script = f"source {shlex.quote(str(refkit / 'setup.sh'))} >/dev/null && exec {shlex.join(cmd)}"
    result = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{result.stderr[-3000:]}")
    return result


def make_dataset(refkit: Path, root: Path, ds: Dataset) -> Path:
    path = root / ds.name
    stamp = path / "validate-options.json"
    wanted = json.dumps(["--preset", ds.preset, *ds.options])
    if stamp.exists() and stamp.read_text() == wanted and (path / "dataset.json").exists():
        return path
    subprocess.run(["rm", "-rf", str(path)], check=True)
    t = time.perf_counter()
    in_refkit(
        refkit, root, "python", str(refkit / "make_dataset.py"), str(path), "--preset", ds.preset, *ds.options
    )
    stamp.write_text(wanted)
    print(f"  made {ds.name} in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def compare(refkit: Path, cwd: Path, reference: Path, candidate: Path, kind: str) -> dict:
    r = in_refkit(
        refkit,
        cwd,
        "python",
        str(refkit / "compare.py"),
        str(reference),
        str(candidate),
        "--kind",
        kind,
        check=False,
    )
    lines = r.stdout.strip().splitlines()
    figures = json.loads(lines[0]) if lines and lines[0].startswith("{") else {}
    verdict = lines[-1] if lines else f"FAIL: compare.py crashed: {r.stderr[-300:]}"
    return {"verdict": verdict, **figures}


LOADOBJ = (
    "import json, sys\n"
    "from mdx2.io import loadobj\n"
    "t = loadobj(sys.argv[1], 'hkl_table')\n"
    "df = t.to_frame()\n"
    "print(json.dumps({'rows': len(t), 'ndiv': [int(x) for x in t.ndiv], 'columns': sorted(df.columns)}))\n"
)


def check_loadobj(refkit: Path, cwd: Path, path: Path, rows: int, ndiv) -> str:
    r = in_refkit(refkit, cwd, "python", "-c", LOADOBJ, str(path), check=False)
    if r.returncode != 0:
        return "FAIL: " + (r.stderr.strip().splitlines() or ["?"])[-1][:200]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    if got["rows"] != rows or got["ndiv"] != list(ndiv):
        return f"FAIL: loadobj gave {got['rows']} rows, ndiv {got['ndiv']}"
    return "ok"


def bit_identical(reference: Path, candidate: Path) -> str:
    """Stricter than compare.py: the same rows in the same order and every column bit for bit."""
    with h5py.File(reference, "r") as a, h5py.File(candidate, "r") as b:
        ga, gb = a["/entry/hkl_table"], b["/entry/hkl_table"]
        if sorted(ga) != sorted(gb):
            return f"columns differ: {sorted(set(ga) ^ set(gb))}"
        bad = []
        for name in ga:
            x, y = ga[name][()], gb[name][()]
            if x.dtype != y.dtype or x.shape != y.shape:
                bad.append(f"{name} {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
            elif not np.array_equal(x.view(f"u{x.itemsize}"), y.view(f"u{y.itemsize}")):
                bad.append(f"{name} ({int(np.count_nonzero(x != y))} values)")
    return "yes" if not bad else "no: " + ", ".join(bad)


def max_relerr(reference: Path, candidate: Path, column: str) -> float:
    with h5py.File(reference, "r") as a, h5py.File(candidate, "r") as b:
        x = a[f"/entry/hkl_table/{column}"][()].astype(np.float64)
        y = b[f"/entry/hkl_table/{column}"][()].astype(np.float64)
    if x.shape != y.shape:
        return float("nan")
    finite = np.isfinite(x) & np.isfinite(y)
    if not np.array_equal(np.isfinite(x), np.isfinite(y)):
        return float("inf")
    err = np.abs(x[finite] - y[finite]) / np.maximum(np.abs(x[finite]), 1e-30)
    return float(err.max()) if err.size else 0.0


def run_case(refkit: Path, client, path: Path, ds: Dataset, ndiv) -> list[dict]:
    import pipeline

    tag = "".join(str(x) for x in ndiv)
    out = path / f"validate-{tag}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir()
    # 1. mdx2 (its outputs are kept in mdx2-<tag>/ and reused: mdx2 1.0.5 does not change between runs)
    ref_dir = path / f"mdx2-{tag}"
    timings = ref_dir / "seconds.json"
    if not timings.exists():
        subprocess.run(["rm", "-rf", str(ref_dir)], check=True)
        ref_dir.mkdir()
        sub = [str(x) for x in ndiv]
        t = time.perf_counter()
        integrate = "mdx2.integrate geometry.nxs data.nxs --mask mask.nxs --nproc 2 --subdivide".split()
        in_refkit(refkit, path, *integrate, *sub, "--outfile", f"{ref_dir.name}/integrated.nxs")
        t_int = time.perf_counter() - t
        t = time.perf_counter()
        correct = f"mdx2.correct geometry.nxs {ref_dir.name}/integrated.nxs --background bkg_data_binned.nxs"
        in_refkit(refkit, path, *correct.split(), "--outfile", f"{ref_dir.name}/corrected.nxs")
        timings.write_text(json.dumps({"integrate": t_int, "correct": time.perf_counter() - t}))
    t_mdx2 = json.loads(timings.read_text())
    t_mdx2_int, t_mdx2_cor = t_mdx2["integrate"], t_mdx2["correct"]
    for name in ("integrated", "corrected"):
        shutil.copy2(ref_dir / f"{name}.nxs", out / f"mdx2_{name}.nxs")
    # 2. ours
    t = time.perf_counter()
    r_int = pipeline.integrate(
        path / "geometry.nxs",
        path / "data.nxs",
        mask=path / "mask.nxs",
        subdivide=ndiv,
        outfile=out / "integrated.nxs",
        parquet=out / "integrated.parquet",
        client=client,
    )
    t_ours_int = time.perf_counter() - t
    t = time.perf_counter()
    r_cor = pipeline.correct(
        path / "geometry.nxs",
        out / "mdx2_integrated.nxs",
        background=path / "bkg_data_binned.nxs",
        outfile=out / "corrected.nxs",
        parquet=out / "corrected.parquet",
        client=client,
    )
    t_ours_cor = time.perf_counter() - t
    # 3. verdicts
    info = json.loads((path / "dataset.json").read_text())
    rows = []
    for kind, ref, ours, rows_ours, t_m, t_o in (
        ("integrated", out / "mdx2_integrated.nxs", out / "integrated", r_int.rows, t_mdx2_int, t_ours_int),
        ("corrected", out / "mdx2_corrected.nxs", out / "corrected", r_cor.rows, t_mdx2_cor, t_ours_cor),
    ):
        nexus = ours.with_suffix(".nxs")
        loadobj = check_loadobj(refkit, out, nexus, rows_ours, ndiv)
        strict = (
            bit_identical(ref, nexus)
            if kind == "integrated"
            else f"{max_relerr(ref, nexus, 'intensity'):.1e}"
        )
        for fmt, candidate in (("nexus", nexus), ("parquet", ours.with_suffix(".parquet"))):
            c = compare(refkit, out, ref, candidate, kind)
            rows.append(
                {
                    "dataset": ds.name,
                    "preset": ds.preset,
                    "pixels": info["pixels"],
                    "hall": info["hall"].strip(),
                    "cell": " ".join(f"{x:g}" for x in info["cell"]),
                    "axis": " ".join(f"{x:g}" for x in info["axis"]),
                    "chunks": " ".join(str(x) for x in info["chunks"]),
                    "note": ds.note,
                    "subdivide": " ".join(str(x) for x in ndiv),
                    "table": kind,
                    "format": fmt,
                    "verdict": c["verdict"],
                    "ref_rows": c.get("ref_rows"),
                    "cand_rows": c.get("cand_rows"),
                    "only_ref": c.get("only_ref"),
                    "only_cand": c.get("only_cand"),
                    "match_fraction": c.get("exact_rows_fraction", c.get("common_fraction")),
                    "bit_identical_or_max_relerr": strict,
                    "loadobj": loadobj if fmt == "nexus" else "",
                    "mdx2_seconds": round(t_m, 2),
                    "ours_seconds": round(t_o, 2),
                }
            )
    subprocess.run(["rm", "-rf", str(out)], check=True)  # keep /tmp tidy; the CSV has the figures
    return rows


def summary(rows: list[dict]) -> str:
    lines = [
        f"{'dataset':20s} {'subdiv':7s} {'rows':>9s}  int:nx int:pq bit  cor:nx cor:pq relerr   loadobj  "
        "mdx2 s  ours s"
    ]
    keyed = {(r["dataset"], r["subdivide"], r["table"], r["format"]): r for r in rows}
    for ds, sub in dict.fromkeys((r["dataset"], r["subdivide"]) for r in rows):
        i_nx, i_pq = keyed[ds, sub, "integrated", "nexus"], keyed[ds, sub, "integrated", "parquet"]
        c_nx, c_pq = keyed[ds, sub, "corrected", "nexus"], keyed[ds, sub, "corrected", "parquet"]

        def v(r):
            return "ok" if r["verdict"] == "ok" else "FAIL"

        load = "ok" if i_nx["loadobj"] == c_nx["loadobj"] == "ok" else "FAIL"
        bit = "yes" if i_nx["bit_identical_or_max_relerr"] == "yes" else "no"
        lines.append(
            f"{ds:20s} {sub:7s} {i_nx['ref_rows']:>9,}  {v(i_nx):6s} {v(i_pq):6s} {bit:4s} {v(c_nx):6s} "
            f"{v(c_pq):6s} {c_nx['bit_identical_or_max_relerr']:8s} {load:8s} "
            f"{i_nx['mdx2_seconds'] + c_nx['mdx2_seconds']:6.1f}  "
            f"{i_nx['ours_seconds'] + c_nx['ours_seconds']:6.1f}"
        )
    failed = [r for r in rows if r["verdict"] != "ok" or r["loadobj"] not in ("ok", "")]
    lines.append(f"{len(rows)} comparisons, {len(failed)} failed")
    for r in failed:
        lines.append(
            f"  FAIL {r['dataset']} {r['subdivide']} {r['table']} {r['format']}: "
            f"{r['verdict']} {r['loadobj']}"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/validate"), help="where datasets are made")
    ap.add_argument("--only", nargs="*", help="dataset names to run (default: all)")
    ap.add_argument(
        "--subdivide", type=int, nargs=3, action="append", help="subdivision(s) (default: all five)"
    )
    ap.add_argument("--csv", type=Path, default=RESULTS)
    a = ap.parse_args()
    from distributed import Client, LocalCluster

    refkit = find_refkit()
    a.root.mkdir(parents=True, exist_ok=True)
    datasets = [d for d in DATASETS if not a.only or d.name in a.only]
    subdivisions = [tuple(s) for s in a.subdivide] if a.subdivide else SUBDIVISIONS
    rows: list[dict] = []
    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # no dashboard, and not on :8787
        ) as lc,
        Client(lc) as client,
    ):
        for ds in datasets:
            print(f"{ds.name}: {ds.note}", flush=True)
            path = make_dataset(refkit, a.root, ds)
            for ndiv in subdivisions:
                case = run_case(refkit, client, path, ds, ndiv)
                rows += case
                bad = [r for r in case if r["verdict"] != "ok" or r["loadobj"] not in ("ok", "")]
                print(
                    f"  subdivide {ndiv}: {case[0]['ref_rows']:,} rows, {'FAIL' if bad else 'ok'} "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    a.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(a.csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(summary(rows))
    print(f"wrote {a.csv} in {time.perf_counter() - t0:.0f} s")
    return 1 if any(r["verdict"] != "ok" or r["loadobj"] not in ("ok", "") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
