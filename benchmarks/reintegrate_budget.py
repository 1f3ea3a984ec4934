"""Time budget of ``diffuse reintegrate``: where one map task and the reduction of its rows spend
their time, in-process on one thread (wall and system seconds per stage).

    .venv/bin/python benchmarks/reintegrate_budget.py /work/data/medium SCALES [--subdivide 10 10 10]
        [--task 2] [--work DIR]

Stages are timed by wrapping the functions the map task (``graph/tasks.run_map_task``) and the
reduce task call: read + decode of data and mask, the Miller block, binning (``bin_chunk``), the
per-row values (corrections, scales, background: ``_chunk_values``), the ASU mapping, the rows'
emission, the spill (sort by H + save), then the reduction (dense accumulation, output columns,
part file). Multiply by the number of map tasks (and divide by the threads) for a whole run.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

acc: dict[str, tuple[float, float]] = {}


def timed(name, f):
    def g(*a, **k):
        t = time.perf_counter()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        out = f(*a, **k)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        w, s = acc.get(name, (0.0, 0.0))
        acc[name] = (w + time.perf_counter() - t, s + r1.ru_stime - r0.ru_stime)
        return out

    return g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("scales", type=Path)
    ap.add_argument("--subdivide", type=int, nargs=3, default=(10, 10, 10))
    ap.add_argument("--task", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/reintegrate_budget"))
    ap.add_argument("--max-run-rows", type=int, default=4_000_000, help="1: a run per chunk")
    a = ap.parse_args()

    import pipeline.graph.reintegrate as GR
    import pipeline.graph.tasks as T
    import pipeline.kernels.reintegrate as R
    from pipeline.cluster.buffers import keep_large_buffers
    from pipeline.config import ReintegrateParams
    from pipeline.graph.plan import plan_integration

    keep_large_buffers()  # as the diffuse command does for its own process
    ds = a.dataset
    p = ReintegrateParams(
        ds / "geometry.nxs", ds / "data.nxs", mask=ds / "mask.nxs", subdivide=tuple(a.subdivide),
        background=ds / "bkg_data_binned.nxs", scale=a.scales, outfile=str(a.work / "x.nxs"),
        output="intensity",
    )  # fmt: skip
    t0 = time.perf_counter()
    model = GR.build_model(p)
    plan = plan_integration(p, 2)
    acc["start-up: model + plan"] = (time.perf_counter() - t0, 0.0)
    steps = GR.ReintegrateSteps(model, "intensity", {})
    T.bin_chunk = timed("map: bin_chunk", T.bin_chunk)
    T.prepare_miller_block = timed("map: Miller block", T.prepare_miller_block)
    T._read = timed("map: read + decode (data, mask)", T._read)
    T._spill_run = timed("map: spill (sort by H + save)", T._spill_run)
    R.asu_images = timed("map: rows: ASU mapping", R.asu_images)
    R._chunk_values = timed("map: rows: values (corr., scales, bkg)", R._chunk_values)
    R._emit = timed("map: rows: emit", R._emit)
    object.__setattr__(steps, "after_binning", timed("map: rows: total", steps.after_binning))
    shutil.rmtree(a.work, ignore_errors=True)
    (a.work / "map").mkdir(parents=True)
    (a.work / "reduce").mkdir()
    ctx = T.MapContext(
        plan.stack, plan.masks, plan.geometry, plan.ndiv, steps.h_range, str(a.work / "map"),
        max_run_rows=a.max_run_rows, steps=steps,
    )  # fmt: skip
    task = plan.tasks[a.task]
    t = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    rec = T.run_map_task(task, ctx)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    acc["MAP TASK total"] = (time.perf_counter() - t, r1.ru_stime - r0.ru_stime)
    GR.accumulate_pieces = timed("reduce: accumulate (dense block)", R.accumulate_pieces)
    GR.finish_rows = timed("reduce: output columns", R.finish_rows)
    T.save_npy_atomic = timed("reduce: save part", T.save_npy_atomic)
    rctx = T.ReduceContext(plan.ndiv, 1.0, str(a.work / "reduce"), None, steps)
    sources = [(str(a.work / "map" / r["file"]), 0, r["rows"]) for r in rec["runs"]]
    t = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    T.run_reduce_task(0, sources, rctx)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    acc["REDUCE (this task's rows) total"] = (time.perf_counter() - t, r1.ru_stime - r0.ru_stime)
    print(f"task {task.index} of {len(plan.tasks)}: {task.n_pixels / 1e6:.0f} Mpx, {rec['rows']:,} rows")
    print("stage,wall_s,sys_s")
    for k, (w, s) in acc.items():
        print(f"{k},{w:.2f},{s:.2f}")
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
