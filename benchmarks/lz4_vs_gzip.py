"""Bitshuffle-LZ4 (Eiger) against gzip+shuffle (mdx2's data.nxs): decode throughput per core, and
integrate end to end against mdx2 1.0.5, in one run.

    .venv/bin/diffuse simulate /tmp/e16 --preset eiger16m            # 10 frames of 18 M pixels
    .venv/bin/python benchmarks/lz4_vs_gzip.py /tmp/e16 [--mdx2 REFKIT_DATASET --refkit ../shared/refkit]

Decode (``decode.csv``): every chunk of the same frames read and decoded to pixels, by 1 and by 2
threads of one process, for

* ``lz4-direct``: the Eiger master's data files (uint16, one frame per chunk, bitshuffle-LZ4) through
  our direct path (raw chunk read + bitshuffle's own decoder called without the GIL);
* ``lz4-direct+counts``: the same plus the conversion to mdx2's int32 counts with -1 where masked
  (what ``integrate`` reads);
* ``lz4-h5py``: the same files through h5py and the hdf5plugin filter (holds the GIL);
* ``gzip-direct``: the data.nxs ``diffuse import-data`` writes from them (int32, gzip level 1 +
  shuffle, mdx2's chunks), through our direct path (libdeflate, GIL released);
* ``gzip-h5py``: the same through h5py (zlib).

End to end (``endtoend.csv``, with ``--mdx2 DIR``: a refkit dataset): ``mdx2.integrate`` on its
data.nxs, ``diffuse integrate`` on that data.nxs and on an Eiger master made from it with
scripts/nxs_to_eiger.py (``--chunks`` = the refkit chunks), wall time and peak memory of the whole
process tree; tables compared row for row. The machine is shared: the load average is recorded.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import numpy as np

from pipeline.api.bench import measure_command
from pipeline.io.chunks import ChunkReader
from pipeline.io.images import open_image_stack, storage_chunk_slices

ROOT = Path(__file__).resolve().parent.parent
DIFFUSE = str(Path(sys.executable).with_name("diffuse"))


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _chunk_jobs(path: str, dataset: str) -> list[tuple[str, str, tuple]]:
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        shape, chunks = ds.shape, ds.chunks
    along = [storage_chunk_slices(shape, chunks, a) for a in range(3)]
    return [(path, dataset, (a, b, c)) for a in along[0] for b in along[1] for c in along[2]]


def _run(jobs, threads: int, direct: bool) -> tuple[float, float]:
    """Seconds to decode every chunk of ``jobs`` with ``threads`` threads (each its own file handles)."""

    def work(part):
        files, readers = {}, {}
        for path, dataset, sl in part:
            if path not in files:
                files[path] = h5py.File(path, "r")
                readers[path] = ChunkReader(files[path][dataset])
            if direct:
                readers[path].read(sl)
            else:
                files[path][dataset][sl]
        for f in files.values():
            f.close()

    parts = [jobs[i::threads] for i in range(threads)]
    return _timed(work, parts, threads)


def _timed(work, parts, threads: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to run ``work`` on each part in its own thread."""
    c0, t0 = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, parts))
    return time.perf_counter() - t0, time.process_time() - c0


def _run_counts(stack, threads: int) -> tuple[float, float]:
    frames = [slice(i, i + 1) for i in range(stack.shape[0])]
    whole = (slice(0, stack.shape[1]), slice(0, stack.shape[2]))

    def work(part):
        with stack.open() as images:
            for p in part:
                images.read((p, *whole))

    parts = [frames[i::threads] for i in range(threads)]
    return _timed(work, parts, threads)


def decode_benchmark(ds: Path, out: Path, repeat: int) -> list[dict]:
    master = ds / "data_master.h5"
    stack = open_image_stack(master)
    pixels = int(np.prod(stack.shape))
    lz4_jobs = [job for _, _, p, d in stack.slabs for job in _chunk_jobs(p, d)]
    imported = out / "imported" / "data.nxs"
    if not imported.exists():
        imported.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [DIFFUSE, "import-data", str(master), "--outfile", str(imported), "--quiet"], check=True
        )
    gz = open_image_stack(imported)
    gzip_jobs = [job for _, _, p, d in gz.slabs for job in _chunk_jobs(p, d)]
    with h5py.File(lz4_jobs[0][0], "r") as f:
        lz4_bytes = sum(os.path.getsize(p) for p in dict.fromkeys(j[0] for j in lz4_jobs))
        fast = ChunkReader(f[lz4_jobs[0][1]]).fast
    gz_bytes = sum(os.path.getsize(p) for p in dict.fromkeys(j[0] for j in gzip_jobs))
    assert fast, "bitshuffle-LZ4 chunks do not take the direct path (hdf5plugin's libh5bshuf missing?)"
    cases = {
        "lz4-direct": lambda t: _run(lz4_jobs, t, True),
        "lz4-direct+counts": lambda t: _run_counts(stack, t),
        "lz4-h5py": lambda t: _run(lz4_jobs, t, False),
        "gzip-direct": lambda t: _run(gzip_jobs, t, True),
        "gzip-h5py": lambda t: _run(gzip_jobs, t, False),
    }
    rows = []
    _run(lz4_jobs[:2], 1, True)  # warm up (numba, page cache)
    _run_counts(stack, 1)
    _run(gzip_jobs, 1, True)
    for name, fn in cases.items():
        for threads in (1, 2):
            times = [fn(threads) for _ in range(repeat)]
            wall = min(t[0] for t in times)
            cpu = min(t[1] for t in times)
            row = {
                "case": name,
                "threads": threads,
                "pixels": pixels,
                "wall_s": round(wall, 3),
                "cpu_s": round(cpu, 3),
                "mpx_per_s": round(pixels / wall / 1e6, 1),
                "mpx_per_cpu_s": round(pixels / cpu / 1e6, 1),  # per core, whatever the machine's load
                "cores_busy": round(cpu / wall, 2),
                "file_mb": round((gz_bytes if name.startswith("gzip") else lz4_bytes) / 1e6, 1),
                "load_avg": _load(),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def end_to_end(ds: Path, out: Path, subdivide: list[str], refkit: Path) -> list[dict]:
    chunks = json.loads((ds / "dataset.json").read_text())["chunks"]
    eiger = out / "eiger"
    if not (eiger / "eiger_master.h5").exists():
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "nxs_to_eiger.py"), str(ds / "data.nxs"), str(eiger),
             "--expt", str(ds / "experiment.expt")],
            check=True,
        )  # fmt: skip
    opts = ["--mask", str(ds / "mask.nxs"), "--subdivide", *subdivide]
    runs = {
        "mdx2.integrate data.nxs (--nproc 2)": (
            ["bash", "-c", f"source {refkit}/setup.sh >/dev/null && exec mdx2.integrate geometry.nxs "
             f"data.nxs --nproc 2 --outfile {out / 'mdx2.nxs'} --mask mask.nxs "
             f"--subdivide {' '.join(subdivide)}"],
            out / "mdx2.nxs",
        ),
        "diffuse integrate data.nxs": (
            [DIFFUSE, "integrate", str(ds / "geometry.nxs"), str(ds / "data.nxs"), *opts,
             "--outfile", str(out / "ours_gzip.nxs"), "--overwrite", "--quiet"],
            out / "ours_gzip.nxs",
        ),
        "diffuse integrate eiger_master.h5 (LZ4, --chunks)": (
            [DIFFUSE, "integrate", str(ds / "geometry.nxs"), str(eiger / "eiger_master.h5"), *opts,
             "--chunks", *map(str, chunks), "--outfile", str(out / "ours_lz4.nxs"), "--overwrite", "--quiet"],
            out / "ours_lz4.nxs",
        ),
    }  # fmt: skip
    rows = []
    for name, (argv, result) in runs.items():
        subprocess.run(["sync"], check=False)
        wall, peak, rc, _ = measure_command(argv, cwd=ds)
        row = {
            "run": name,
            "seconds": round(wall, 2),
            "peak_mb": round(peak / 2**20),
            "rc": rc,
            "load_avg": _load(),
        }
        if rc == 0 and name != "mdx2.integrate data.nxs (--nproc 2)":
            cmp = subprocess.run(
                [sys.executable, "-c", _COMPARE, str(out / "mdx2.nxs"), str(result)],
                capture_output=True,
                text=True,
            )
            row["same_table_as_mdx2"] = cmp.stdout.strip()
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


_COMPARE = """
import sys, h5py, numpy as np
a, b = (h5py.File(p, "r")["/entry/hkl_table"] for p in sys.argv[1:3])
exact = ("h", "k", "l", "n", "counts", "pixels")
same = len(a["h"]) == len(b["h"]) and all(np.array_equal(a[k][()], b[k][()]) for k in exact)
floats = ("phi", "iy", "ix", "seconds")
same = same and all(np.array_equal(a[k][()].astype("f4"), b[k][()].astype("f4")) for k in floats)
print("yes" if same else "NO")
"""


def _write(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path, help="a dataset from 'diffuse simulate --preset eiger16m'")
    ap.add_argument(
        "--mdx2", type=Path, help="a refkit dataset for the end-to-end runs against mdx2.integrate"
    )
    ap.add_argument("--subdivide", nargs=3, default=["2", "2", "2"])
    ap.add_argument(
        "--refkit", type=Path, default=ROOT.parent / "shared" / "refkit", help="refkit (setup.sh)"
    )
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lz4_vs_gzip")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lz4_vs_gzip-work"), help="scratch (large files)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    _write(a.out / "decode.csv", decode_benchmark(a.dataset.resolve(), work, a.repeat))
    if a.mdx2:
        _write(a.out / "endtoend.csv", end_to_end(a.mdx2.resolve(), work, a.subdivide, a.refkit))


if __name__ == "__main__":
    main()
