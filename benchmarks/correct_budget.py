"""Time budget of one ``correct`` run (issue 17): imports, numba, and the row work by stage.

    flock -x /work/coord/bench.lock .venv/bin/python benchmarks/correct_budget.py /work/data/medium \\
        /work/scratch-scale/medium/int_4.nxs --out /work/scratch-correct/budget.nxs

Runs :func:`pipeline.correct` as the command does (threads of this process) with its stages wrapped:
the imports, then per stage the seconds summed over the threads that ran it (geometry and
background, loading the kernels (the module compiled ahead of time, or numba's), reading, the two
kernels, writing, closing).
"""

from __future__ import annotations

import argparse
import collections
import os
import threading
import time
from pathlib import Path

T0 = time.perf_counter()
EVENTS: list[tuple[float, str, str]] = []


def mark(name: str) -> None:
    EVENTS.append((time.perf_counter() - T0, threading.current_thread().name, name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path, help="directory with geometry.nxs and bkg_data_binned.nxs")
    ap.add_argument("integrated", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="the corrected table (replaced)")
    a = ap.parse_args()
    import h5py  # noqa: F401
    import numpy  # noqa: F401

    import pipeline.api.correct
    import pipeline.graph.correct as graph
    import pipeline.io.tables as tables

    mark("imports")
    import pipeline.kernels.corrections_fused as fused

    def timed(f, label):
        def call(*args, **kwargs):
            mark(label + ">")
            try:
                return f(*args, **kwargs)
            finally:
                mark("<" + label)

        return call

    def wrap(owner, name, label):
        setattr(owner, name, timed(getattr(owner, name), label))

    kernels = fused._Kernels  # the kernels as loaded (compiled ahead of time, or numba's), timed
    fused._Kernels = lambda correct, asu, ahead: kernels(
        timed(correct, "correction kernel"), timed(asu, "ASU kernel"), ahead
    )
    for owner, name, label in (
        (graph, "build_model", "geometry and background"), (fused, "load_kernels", "kernel load"),
        (tables.TableSource, "read_pieces", "read (mapping)"), (tables.NexusTableWriter, "write", "write"),
        (tables.NexusTableWriter, "commit", "close"),
    ):  # fmt: skip
        wrap(owner, name, label)
    a.out.unlink(missing_ok=True)
    os.sync()
    time.sleep(0.5)
    t = time.perf_counter()
    pipeline.api.correct.correct(
        a.dataset / "geometry.nxs", a.integrated, a.dataset / "bkg_data_binned.nxs", outfile=a.out
    )
    wall = time.perf_counter() - t
    sums, started = collections.defaultdict(float), {}
    for at, thread, name in EVENTS:
        if name.endswith(">"):
            started[thread, name[:-1]] = at
        elif name.startswith("<"):
            sums[name[1:]] += at - started.pop((thread, name[1:]))
    marks = {name: at for at, _, name in EVENTS if name == "imports"}
    print(
        f"imports {marks['imports']:.3f} s; "
        f"correct {wall:.3f} s wall: " + ", ".join(f"{k} {v:.3f}" for k, v in sums.items()) + " (thread-s)"
    )


if __name__ == "__main__":
    main()
