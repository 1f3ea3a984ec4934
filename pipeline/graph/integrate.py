"""Wire the integration on a dask cluster: map tasks -> partition choice -> reduce tasks -> export.

1. map: one task per group of storage chunks bins pixels and spills sorted partial rows to the work
   directory, returning rows per H value;
2. partition: contiguous ranges of H with about the same number of partial rows, each small enough
   for one worker's memory budget (every row of a voxel lands in the same partition);
3. reduce: one task per partition applies mdx2's partial-observation split and sums, writing the
   finished rows (and a parquet part);
4. export: the parts, already sorted by (h, k, l, n), are streamed in order into the NeXus file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.config import IntegrateParams, Tuning
from pipeline.errors import DiskFullError, PipelineError
from pipeline.graph.plan import IntegrationPlan, plan_integration
from pipeline.graph.run_tasks import run_tasks
from pipeline.graph.tasks import (
    MapContext,
    ReduceContext,
    RowSteps,
    flush_held_runs,
    hold_runs,
    holding_expired,
    release_held_runs,
    run_map_task,
    run_reduce_task,
)
from pipeline.graph.workdir import WorkDir, fingerprint_files
from pipeline.io.atomic import atomic_path, check_output_path
from pipeline.io.tables import INTEGRATED_SCHEMA, NexusTableWriter
from pipeline.kernels.warmup import prepare_numba

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["IntegrateResult", "choose_partitions", "run_integration"]

log = logging.getLogger(__name__)


@dataclass
class IntegrateResult:
    """What a run produced and how long each stage took."""

    outfile: str | None
    parquet: str | None
    rows: int
    partial_rows: int
    pixels_read: int
    pixels_used: int
    map_tasks: int
    map_tasks_skipped: int
    partitions: int
    seconds: dict[str, float] = field(default_factory=dict)
    workdir_bytes: int = 0


def choose_partitions(h_counts: np.ndarray, max_rows: int, min_partitions: int = 1) -> list[tuple[int, int]]:
    """Cut the H histogram into contiguous ranges ``[lo, hi)`` of at most ``max_rows`` rows each.

    The target size is the smaller of ``max_rows`` and an equal share for ``min_partitions``
    partitions (so every worker has work); ranges are grown greedily up to the target. One H value
    with more rows than the target stays whole (rows are split by H only).
    """
    total = int(h_counts.sum())
    target = max(1, min(max_rows, -(-total // max(min_partitions, 1))))
    ranges, lo, rows = [], 0, 0
    for h, count in enumerate(h_counts):
        if rows and rows + count > target:
            ranges.append((lo, h))
            lo, rows = h, 0
        rows += int(count)
    ranges.append((lo, int(h_counts.size)))
    return ranges


def partition_rows(worker_memory: int, tuning: Tuning) -> int:
    """Partial rows one reduce task may take: a share of the worker's memory, and never more than
    ``reduce.max-partition-rows`` (bigger partitions are not faster; they only raise the peak)."""
    return tuning.rows_in(worker_memory, tuning.max_partition_rows)


def map_run_rows(worker_memory: int, tuning: Tuning) -> int:
    """Partial rows a map task holds before it spills a sorted run (same reasoning as above)."""
    return tuning.rows_in(worker_memory, tuning.max_run_rows)


def _task_slots(client: Client) -> int:
    """Tasks the cluster runs at once: the threads of all its workers."""
    return max(1, sum(client.nthreads().values()))


def _worker_memory(client: Client) -> int:
    """Memory one task may count on (bytes): the smallest memory limit of a worker divided by its
    threads (they share it); the machine's RAM per task slot if the workers have no limit."""
    import psutil

    workers = list(client.scheduler_info(n_workers=-1)["workers"].values())
    shares = [(w.get("memory_limit") or 0) // max(int(w.get("nthreads", 1)), 1) for w in workers]
    positive = [x for x in shares if x > 0]
    return min(positive) if positive else psutil.virtual_memory().total // _task_slots(client)


def _fingerprint(plan: IntegrationPlan, steps: RowSteps | None) -> dict:
    p = plan.params
    files = [f for f in (p.geometry, p.data) if os.path.exists(f)] + [*p.mask, *plan.stack.sources]
    return {
        **({"steps": steps.fingerprint} if steps else {}),
        "inputs": fingerprint_files(files),
        "geometry_digest": plan.geometry.digest,
        "subdivide": list(p.subdivide),
        "chunks": list(plan.stack.storage_chunks),
        "exposure_time": p.exposure_time,
        "tasks": [[t.index, len(t.chunks), t.chunks[0][0].start, t.chunks[-1][0].stop] for t in plan.tasks],
    }


def run_integration(
    params: IntegrateParams, client: Client, progress=None, steps: RowSteps | None = None
) -> IntegrateResult:
    """Run a whole integration on ``client``'s cluster; see the module docstring for the stages.

    ``steps``: what a step built on this machinery (``reintegrate``) does after binning and in the
    reduction instead (see :class:`~pipeline.graph.tasks.RowSteps`); None for integrate itself."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if params.outfile:
        check_output_path(params.outfile, params.overwrite)
    if params.parquet:
        check_output_path(params.parquet, params.overwrite, is_dir=True)
    n_slots = _task_slots(client)
    plan = plan_integration(params, n_slots)
    anchor = Path(params.outfile or params.parquet)
    workdir = params.workdir or anchor.with_name(f".{anchor.name}.work")
    from pipeline.graph.space import check_free_space, explain_disk_full

    memory = _worker_memory(client)
    estimate = check_free_space(plan, workdir, n_slots, memory)
    try:
        work = WorkDir(workdir, _fingerprint(plan, steps), params.resume)
    except DiskFullError as exc:
        raise explain_disk_full(exc, plan, workdir, n_slots, memory, estimate) from None
    seconds["plan"] = time.perf_counter() - t0
    if getattr(client, "in_process", False):  # the kernels run in this process's threads
        t = time.perf_counter()
        prepare_numba()
        seconds["numba"] = time.perf_counter() - t
    try:
        result = _run(
            plan, work, client, progress, seconds, steps, check_space=estimate == "after-first-task"
        )
    except DiskFullError as exc:
        # Temporaries are gone (atomic writers). The work directory is removed when it is on the
        # filesystem that filled up (it is what fills it); else it is kept for --resume.
        keep = params.keep_workdir or not _same_filesystem(work.path, exc.path)
        if Path(exc.path).is_relative_to(work.path):  # name the work directory, not a file inside
            exc.path = str(work.path)
        if not keep:
            work.remove()
        full = explain_disk_full(exc, plan, work.path, n_slots, memory, estimate)
        if keep and not params.keep_workdir:
            full.needs += f"; --resume reuses the finished tasks in {str(work.path)!r}"
        raise full from None
    except PipelineError:
        # A bad input found by a task (e.g. a corrupt chunk) cannot be resumed past: repairing the file
        # changes the inputs' fingerprint. Leave nothing behind, as for errors found while planning.
        if not params.keep_workdir:
            work.remove()
        raise
    except BaseException:
        log.debug("keeping work directory %s for --resume", work.path)
        raise
    if not params.keep_workdir:
        work.remove()
    seconds["total"] = time.perf_counter() - t0
    result.seconds = {k: round(v, 3) for k, v in seconds.items()}
    return result


def _same_filesystem(a, b) -> bool:
    from pipeline.graph.space import _device

    return _device(a) == _device(b)


def _run(
    plan: IntegrationPlan, work: WorkDir, client: Client, progress, seconds, steps, check_space: bool = False
) -> IntegrateResult:
    params = plan.params
    records = work.finished_map_tasks() if params.resume else {}
    if getattr(client, "in_process", False) and steps is None:  # this process runs map and reduce
        hold_runs(work.map_dir, params.tuning.held_run_bytes, params.tuning.held_run_seconds)
    try:
        return _map_and_reduce(plan, work, client, progress, seconds, steps, records, check_space)
    except PipelineError:
        raise  # a bad input (the work directory goes) or a full disk
    except BaseException:  # interrupted: what is finished is kept for --resume
        flush_held_runs(work.map_dir, records)
        raise
    finally:
        release_held_runs(work.map_dir)


def _map_and_reduce(plan, work, client, progress, seconds, steps, records, check_space) -> IntegrateResult:
    params = plan.params
    name = steps.name if steps else "integrate"
    # 1. map
    t = time.perf_counter()
    todo = [task for task in plan.tasks if task.index not in records]
    skipped = len(plan.tasks) - len(todo)
    if params.resume:
        log.info("resuming: %d of %d map tasks already done, %d to run", skipped, len(plan.tasks), len(todo))
    ctx = MapContext(
        plan.stack, plan.masks, plan.geometry, plan.ndiv, steps.h_range if steps else plan.h_range,
        str(work.map_dir), max_run_rows=map_run_rows(_worker_memory(client), params.tuning), steps=steps,
    )  # fmt: skip
    bar = progress(name, len(plan.tasks)) if progress else None
    if bar and skipped:
        bar.advance(skipped, detail=f"{skipped} done before")

    def rate(record):
        return f"{record['pixels_read'] / max(record['seconds_total'], 1e-9) / 1e6:.0f} Mpx/s/task"

    with run_tasks(
        client, run_map_task, todo, ctx=ctx, name=f"map-{work.digest}", ids=[t.index for t in todo],
        bar=bar, detail=rate,
    ) as results:  # fmt: skip
        for record in results:
            records[record["index"]] = record
            if holding_expired(work.map_dir):  # runs held long enough: on disk, for --resume
                flush_held_runs(work.map_dir, records)
            if check_space:  # the free-space check deferred to the first finished task
                from pipeline.graph.space import RowsSoFar, space_needs, warn_if_short

                so_far = RowsSoFar(plan.stack.n_pixels)
                so_far.add(record)
                warn_if_short(space_needs(params, work.path, so_far.estimate()))
                check_space = False
    seconds["map"] = time.perf_counter() - t
    # 2. partitions
    t = time.perf_counter()
    ordered = [records[task.index] for task in plan.tasks]
    for stage in ("read", "mask", "bin", "spill"):  # summed over map tasks (thread seconds)
        seconds[f"map_tasks_{stage}"] = sum(r.get("seconds", {}).get(stage, 0.0) for r in ordered)
    runs = [(work.map_dir / run["file"], run["h_counts"]) for record in ordered for run in record["runs"]]
    counts = np.array([c for _, c in runs], dtype=np.int64)  # rows per H value of each spilled run
    h_counts = counts.sum(axis=0)
    max_rows = partition_rows(_worker_memory(client), params.tuning)
    ranges = choose_partitions(h_counts, max_rows, min_partitions=2 * _task_slots(client))
    offsets = np.concatenate([np.zeros((len(runs), 1), np.int64), np.cumsum(counts, axis=1)], axis=1)
    log.info("%d partial rows -> %d partitions of <= %d rows", int(h_counts.sum()), len(ranges), max_rows)
    seconds["partition"] = time.perf_counter() - t
    # 3. reduce (+ parquet parts)
    t = time.perf_counter()
    work.clear_reduce()
    with contextlib.ExitStack() as outputs:
        parquet_tmp = (
            outputs.enter_context(atomic_path(params.parquet, is_dir=True)) if params.parquet else None
        )
        rctx = ReduceContext(
            plan.ndiv, params.max_spread, str(work.reduce_dir), parquet_tmp and str(parquet_tmp), steps,
            in_memory=steps is None and params.outfile is not None and getattr(client, "in_process", False),
        )  # fmt: skip
        jobs = []
        for i, (lo, hi) in enumerate(ranges):
            sources = [
                (str(path), int(offsets[j, lo]), int(offsets[j, hi])) for j, (path, _) in enumerate(runs)
            ]
            jobs.append((i, sources))
        bar = progress("reduce", len(jobs)) if progress else None
        # 4. export: each part goes into the NeXus file as soon as every part before it is done, while
        # the workers reduce the rest (the parquet directory is renamed into place when this block ends)
        writer = None
        if params.outfile:
            writer = outputs.enter_context(
                NexusTableWriter(
                    params.outfile, steps.schema if steps else INTEGRATED_SCHEMA, None, plan.ndiv
                )
            )
        part_rows: dict[int, int] = {}
        in_memory: dict[int, dict] = {}  # parts returned by in-process tasks, until their turn
        exported = 0
        with run_tasks(
            client, run_reduce_task, [j[0] for j in jobs], [j[1] for j in jobs], ctx=rctx,
            name=f"reduce-{work.digest}", bar=bar,
        ) as results:  # fmt: skip
            for r in results:
                part_rows[r["index"]] = r["rows"]
                if "columns" in r:
                    in_memory[r["index"]] = r.pop("columns")
                seconds["reduce_tasks"] = seconds.get("reduce_tasks", 0.0) + r["seconds"]
                while exported in part_rows:
                    if writer is not None:
                        t_append = time.perf_counter()
                        _append_part(writer, in_memory.pop(exported, None) or work.reduce_file(exported))
                        seconds["export_appends"] = seconds.get("export_appends", 0.0) + (
                            time.perf_counter() - t_append
                        )  # the NeXus writer is one thread: a floor under the reduce on many cores
                    exported += 1
        seconds["reduce"] = time.perf_counter() - t
        t = time.perf_counter()
        total = sum(part_rows.values())
        if writer is not None:
            writer.commit()
    seconds["export"] = time.perf_counter() - t
    return IntegrateResult(
        outfile=params.outfile,
        parquet=params.parquet,
        rows=total,
        partial_rows=int(h_counts.sum()),
        pixels_read=sum(r["pixels_read"] for r in ordered),
        pixels_used=sum(r["pixels_used"] for r in ordered),
        map_tasks=len(plan.tasks),
        map_tasks_skipped=skipped,
        partitions=len(jobs),
        workdir_bytes=work.disk_usage(),
    )


def _append_part(writer: NexusTableWriter, part: Path | dict) -> None:
    """Append one reduced part to the NeXus table: its columns (from an in-process task), or its
    file, deleted afterwards (bounding scratch space)."""
    if isinstance(part, dict):
        writer.append(part)
        return
    table = np.load(part)
    writer.append({name: table[name] for name in writer.schema})
    part.unlink()
