"""Predict what an integration will need before running it (``diffuse estimate``).

1. Partial rows: bin a sample of storage chunks spread evenly along every axis of the chunk grid
   (a Latin hypercube) with the real kernel; extrapolate partial rows per pixel read to
   the whole stack (a ratio estimator).
2. Output rows: a voxel cut by a face between two chunks gives two partial rows that the reduction
   may merge. For each axis, bin a few pairs of adjacent chunks together and count the merges per
   face; scale by the number of faces along that axis; subtract from the partial rows.
3. Memory, scratch disk and output size follow from the row counts and the memory model of the
   map and reduce tasks (bytes per row of each stage, measured; see ``MEMORY``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.config import IntegrateParams
from pipeline.graph.integrate import map_run_rows, partition_rows
from pipeline.graph.plan import MapTask, plan_integration
from pipeline.graph.tasks import MapContext, bin_task_chunks
from pipeline.io.images import storage_chunk_slices
from pipeline.kernels.binning import PARTIAL_DTYPE
from pipeline.kernels.partials import reduce_partials

__all__ = ["MEMORY", "Estimate", "estimate_integration"]

#: The memory model (bytes), calibrated on medium at subdivide 1-10 (benchmarks/sweep_subdivide.py).
MEMORY = {
    "process_base": 400e6,  # one process with numpy, numba, h5py, dask, distributed loaded (RSS)
    "worker_base": 330e6,  # a separate worker process (cluster of processes)
    "nanny": 75e6,  # each worker process's nanny
    "page_row": 64 * 6 * 8 / 8,  # voxel pages per partial row of a chunk (a page of 64 per ~8 rows)
    "run_row": PARTIAL_DTYPE.itemsize * 2.5 + 8,  # rows held until a run is spilled, with the sort
    "reduce_row": 200,  # working memory per partial row while a partition is reduced
    "nexus_row": 44,  # bytes per output row in the NeXus file (7 float32, 2 int32, 1 float64)
    "parquet_row": 8,  # bytes per output row in parquet (zstd; sorted keys compress well)
}


@dataclass
class Estimate:
    """Predicted figures of one integration (bytes and rows)."""

    partial_rows: int
    output_rows: int
    peak_memory_per_worker: int
    peak_memory_total: int
    scratch_bytes: int
    output_nexus_bytes: int
    output_parquet_bytes: int
    map_tasks: int
    partitions: int
    sampled_chunks: int
    sampled_pixels: int
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def _chunk_grid(shape, chunks) -> list[list[slice]]:
    return [storage_chunk_slices(shape, chunks, axis) for axis in range(3)]


def _spread_sample(sizes: list[int], n: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """``n`` distinct chunk indices, a Latin hypercube: along every axis the samples fall into ``n``
    equal strata, each used once (so an axis with <= n chunks has every index sampled), in an order
    drawn with a fixed seed. A stride through the chunk list can alias with the grid instead (e.g.
    always pick the first column of chunks)."""
    total = math.prod(sizes)
    n = min(n, total)
    rng = np.random.default_rng(seed)
    picks: list[tuple[int, int, int]] = []
    while len(picks) < n:
        strata = [rng.permutation(n) for _ in sizes]
        for s in range(n):
            i = tuple(int((strata[a][s] + 0.5) * size / n) for a, size in enumerate(sizes))
            if i not in picks and len(picks) < n:
                picks.append(i)
    return picks


class _Binned(dict):
    """Partial rows of chunks binned so far, by chunk index (each chunk is read once)."""

    def __init__(self, grid, ctx: MapContext):
        super().__init__()
        self.grid, self.ctx = grid, ctx

    def slices(self, i):
        return tuple(self.grid[a][i[a]] for a in range(3))

    def __missing__(self, i):
        ((rows, _),) = bin_task_chunks(MapTask(0, (self.slices(i),)), self.ctx)
        self[i] = rows
        return rows


def estimate_integration(
    params: IntegrateParams,
    n_workers: int,
    worker_memory: int,
    n_samples: int = 12,
    pairs_per_axis: int = 2,
    threads: bool = False,
    plan=None,
) -> Estimate:
    """Estimate partial and output rows, memory, scratch and output size (see the module docstring).

    ``n_workers`` tasks run at once, as threads of one process (``threads``) or as worker processes;
    ``worker_memory`` is the memory one task may use (a process's limit / its threads). ``plan``: the
    run's plan, if it is made already (else it is made here)."""
    t0 = time.perf_counter()
    plan = plan or plan_integration(params, n_workers)
    grid = _chunk_grid(plan.stack.shape, plan.stack.storage_chunks)
    binned = _Binned(grid, MapContext(plan.stack, plan.masks, plan.geometry, plan.ndiv, plan.h_range, "", 0))
    # 1. partial rows from a sample of chunks spread evenly along every axis
    picks = _spread_sample([len(g) for g in grid], n_samples)
    sampled_rows = sum(binned[i].size for i in picks)
    sampled_pixels = sum(MapTask(0, (binned.slices(i),)).n_pixels for i in picks)
    max_chunk_rows = max(binned[i].size for i in picks)
    partial = sampled_rows / max(sampled_pixels, 1) * plan.stack.n_pixels
    # 2. merges across chunk faces, per axis
    merged = 0.0
    for axis in range(3):
        n_along = len(grid[axis])
        if n_along < 2:
            continue
        faces = (n_along - 1) * math.prod(len(g) for a, g in enumerate(grid) if a != axis)
        starts = [i for i in picks if i[axis] + 1 < n_along][:pairs_per_axis]
        per_face = []
        for i in starts:
            j = tuple(v + (a == axis) for a, v in enumerate(i))
            both = np.concatenate([binned[i], binned[j]])
            per_face.append(both.size - reduce_partials(both, params.max_spread).size)
        if per_face:
            merged += float(np.mean(per_face)) * faces
    output = max(partial - merged, 0.0)
    # 3. memory, disk
    run_rows = map_run_rows(worker_memory, plan.params.tuning)
    part_rows = partition_rows(worker_memory, plan.params.tuning)
    partitions = max(2 * n_workers, math.ceil(partial / part_rows))
    rows_per_partition = partial / partitions
    chunk_px = math.prod(plan.stack.storage_chunks)
    band_px = plan.stack.storage_chunks[0] * plan.stack.storage_chunks[1] * plan.stack.shape[2]
    map_ws = (
        chunk_px * 4 * 2  # the chunk's data, decoded and as read
        + (band_px + 64 * 2**20 if plan.masks else 0)  # the mask band and the decoded-chunk cache
        + max_chunk_rows * MEMORY["page_row"]
        + min(run_rows, partial / max(len(plan.tasks), 1)) * MEMORY["run_row"]
    )
    reduce_ws = rows_per_partition * MEMORY["reduce_row"]
    task_ws = max(map_ws, reduce_ws)
    if threads:  # one process; its map tasks may hold their sorted runs (graph.tasks.hold_runs)
        held = min(plan.params.tuning.held_run_bytes, partial * PARTIAL_DTYPE.itemsize)
        per_worker = (MEMORY["process_base"] + held) / n_workers + task_ws
        total = MEMORY["process_base"] + held + n_workers * task_ws
    else:
        per_worker = MEMORY["worker_base"] + task_ws
        total = MEMORY["process_base"] + n_workers * (per_worker + MEMORY["nanny"])
    return Estimate(
        partial_rows=int(partial),
        output_rows=int(output),
        peak_memory_per_worker=int(per_worker),
        peak_memory_total=int(total),
        # the spilled runs, plus the reduced parts not yet exported (each is deleted once exported)
        scratch_bytes=int(
            partial * PARTIAL_DTYPE.itemsize + 2 * n_workers * output / partitions * MEMORY["nexus_row"]
        ),
        output_nexus_bytes=int(-(-output // 2**16) * 2**16 * MEMORY["nexus_row"]),  # whole HDF5 chunks
        output_parquet_bytes=int(output * MEMORY["parquet_row"]),
        map_tasks=len(plan.tasks),
        partitions=int(partitions),
        sampled_chunks=len(binned),
        sampled_pixels=int(sampled_pixels),
        seconds=round(time.perf_counter() - t0, 2),
    )
