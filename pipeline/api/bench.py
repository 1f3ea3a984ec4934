"""Benchmark sweeps: integrate one dataset at several subdivisions, recording time and memory.

Each run is a separate process (as a user would run it), and the peak resident memory of its whole
process tree (client, scheduler, nannies, workers) is sampled every 0.1 s. Rows, partial rows and
output sizes come from the run's own result. Results go to a CSV and a PNG plot; optionally mdx2's
``mdx2.integrate`` is run the same way for comparison.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from pipeline.io.atomic import atomic_path, save_figure_atomic

__all__ = ["SweepRow", "measure_command", "plot_sweep", "sweep_subdivide"]

log = logging.getLogger(__name__)


@dataclass
class SweepRow:
    tool: str  # "diffuse" or "mdx2"
    subdivide: str  # "4 4 4"
    workers: int
    wall_s: float
    peak_tree_rss_mb: float
    partial_rows: int | None
    rows: int | None
    output_bytes: int
    returncode: int


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure_command(argv: list[str], interval: float = 0.1, **popen) -> tuple[float, int, int, str]:
    """Run ``argv``; return (wall seconds, peak RSS of its process tree in bytes, return code, stdout).
    The memory is sampled every ``interval`` s; the wall time ends when the process does (between
    samples a wait on the process's pidfd, not a sleep, which rounded a 1 s command up by 0.05 s on
    average)."""
    import select

    t0 = time.perf_counter()
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(argv, stdout=out, **popen)
    ps = psutil.Process(proc.pid)
    try:
        exited = os.pidfd_open(proc.pid)  # readable once the process has ended (Linux >= 5.3)
    except (AttributeError, OSError):
        exited = None
    peak = 0
    try:
        while proc.poll() is None:
            peak = max(peak, _tree_rss(ps))
            if exited is None:
                time.sleep(interval)
            else:
                select.select([exited], [], [], interval)
    finally:
        if exited is not None:
            os.close(exited)
    wall = time.perf_counter() - t0
    out.seek(0)
    return wall, peak, proc.returncode, out.read()


_ONE_RUN = """
import json, sys, pipeline
if __name__ == "__main__":
    from pipeline.config import ClusterSpec
    kw = json.loads(sys.argv[1])
    cluster = ClusterSpec(**kw.pop("cluster"))
    r = pipeline.integrate(**kw, cluster=cluster)
    print(json.dumps({"rows": r.rows, "partial_rows": r.partial_rows, "seconds": r.seconds}))
"""


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.exists() else 0


def sweep_subdivide(
    geometry: str,
    data: str,
    masks: list[str],
    subdivisions: list[tuple[int, int, int]],
    outdir: str | os.PathLike,
    workers: int = 2,
    memory_limit: str | None = None,
    mdx2: str | None = None,
    keep_outputs: bool = False,
) -> list[SweepRow]:
    """Integrate at each subdivision (and with ``mdx2``, the path of ``mdx2.integrate``, if given)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rows: list[SweepRow] = []
    for sub in subdivisions:
        label = " ".join(map(str, sub))
        out = outdir / f"integrated_{'x'.join(map(str, sub))}.nxs"
        kwargs = {
            "geometry": os.path.abspath(geometry),
            "data": os.path.abspath(data),
            "mask": [os.path.abspath(m) for m in masks] or None,
            "subdivide": list(sub),
            "outfile": str(out),
            "overwrite": True,
            "cluster": {"workers": workers, "memory_limit": memory_limit},
        }
        wall, peak, rc, stdout = measure_command([sys.executable, "-c", _ONE_RUN, json.dumps(kwargs)])
        result = json.loads(stdout.strip().splitlines()[-1]) if rc == 0 and stdout.strip() else {}
        rows.append(
            SweepRow(
                "diffuse",
                label,
                workers,
                round(wall, 2),
                round(peak / 2**20, 1),
                result.get("partial_rows"),
                result.get("rows"),
                _size(out),
                rc,
            )
        )
        log.info("diffuse %s: %.1f s, %.0f MB, %s rows", label, wall, peak / 2**20, result.get("rows"))
        if mdx2:
            ref = outdir / f"mdx2_{'x'.join(map(str, sub))}.nxs"
            argv = [
                mdx2,
                os.path.abspath(geometry),
                os.path.abspath(data),
                "--subdivide",
                *map(str, sub),
                "--nproc",
                str(workers),
                "--outfile",
                str(ref),
                "--logfile",
                str(outdir / "mdx2.log"),
            ]
            if masks:
                argv += ["--mask", os.path.abspath(masks[0])]
            wall, peak, rc, _ = measure_command(argv, cwd=os.path.dirname(os.path.abspath(data)))
            rows.append(
                SweepRow(
                    "mdx2", label, workers, round(wall, 2), round(peak / 2**20, 1), None, None, _size(ref), rc
                )
            )
            log.info("mdx2 %s: %.1f s, %.0f MB", label, wall, peak / 2**20)
            if not keep_outputs:
                ref.unlink(missing_ok=True)
        if not keep_outputs:
            out.unlink(missing_ok=True)
            shutil.rmtree(out.with_suffix(".nxs.log"), ignore_errors=True)
    return rows


def write_csv(rows: list[SweepRow], path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        for r in rows:
            writer.writerow(asdict(r))
    return path


def plot_sweep(rows: list[SweepRow], path: str | os.PathLike, title: str = "") -> Path:
    """Peak memory and wall time against voxels per Miller unit (ndiv_h·ndiv_k·ndiv_l), per tool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(10, 4))
    for tool, marker in (("diffuse", "o"), ("mdx2", "s")):
        pts = [r for r in rows if r.tool == tool and r.returncode == 0]
        if not pts:
            continue
        x = [voxel_count(r.subdivide) for r in pts]
        ax_mem.plot(x, [r.peak_tree_rss_mb / 1024 for r in pts], marker=marker, label=tool)
        ax_time.plot(x, [r.wall_s for r in pts], marker=marker, label=tool)
    for ax, ylabel in ((ax_mem, "peak RSS of the process tree (GB)"), (ax_time, "wall time (s)")):
        ax.set_xscale("log")
        ax.set_xlabel("voxels per Miller-index unit cell (ndiv_h x ndiv_k x ndiv_l)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title or "integrate: memory and time against subdivision")
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=120)
    plt.close(fig)
    return Path(path)


def voxel_count(label: str) -> int:
    """'4 4 4' -> 64."""
    h, k, l = (int(v) for v in label.split())
    return h * k * l
