"""What runs inside a worker: the map task (read + bin + spill) and the reduce task (one partition).

Tasks receive small descriptors and paths, open files themselves, and return small records; pixel
arrays and partial rows never travel between processes (they go through the work directory).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.errors import InputError
from pipeline.graph.plan import GeometryRef, miller_grid_digest
from pipeline.io.atomic import save_npy_atomic, write_json_atomic
from pipeline.io.chunks import thread_buffer
from pipeline.io.geometry import read_miller_grid
from pipeline.io.images import ImageStack, MaskStack
from pipeline.kernels.binning import PARTIAL_DTYPE, bin_chunk
from pipeline.kernels.interpolate import prepare_miller_block
from pipeline.kernels.keys import KEY_BITS, KEY_OFFSET
from pipeline.kernels.partials import reduce_to_columns, reduce_to_table
from pipeline.kernels.sorting import concat_rows, stable_key_order

__all__ = [
    "MapContext",
    "ReduceContext",
    "RowSteps",
    "remember_miller_grid",
    "run_map_task",
    "run_reduce_task",
]


# Sorted runs held in memory instead of written to the work directory, by path. Only where the
# caller's process runs the map tasks and the reduce tasks (an in-process cluster of threads): writing
# a run to a file and reading it back is most of a map task's spill time. The caller allows it per
# work directory with hold_runs(): up to a number of bytes, for the first seconds of the map stage;
# a task with a held run writes no record (nothing of it is on disk for --resume). After those seconds,
# or when the run stops early, flush_held_runs() writes the runs and records, so that at most those
# seconds of map work are lost to a process killed outright.
_HELD: dict[str, np.ndarray] = {}
_HOLDING: dict[str, tuple[float, int]] = {}  # map directory -> (until, bytes allowed)
_HELD_LOCK = threading.Lock()


def _prefix(map_dir: str | os.PathLike) -> str:
    return str(Path(map_dir)) + os.sep


def hold_runs(map_dir: str | os.PathLike, max_bytes: int, seconds: float) -> None:
    """Let this process's map tasks for ``map_dir`` hold up to ``max_bytes`` of runs for ``seconds``."""
    with _HELD_LOCK:
        _HOLDING[_prefix(map_dir)] = (time.monotonic() + seconds, int(max_bytes))


def holding_expired(map_dir: str | os.PathLike) -> bool:
    """True once the time for holding runs of ``map_dir`` is over and some are still held."""
    prefix = _prefix(map_dir)
    until, _ = _HOLDING.get(prefix, (0.0, 0))
    return time.monotonic() >= until and any(k.startswith(prefix) for k in _HELD)


def _hold_run(path: Path, rows: np.ndarray) -> bool:
    """Hold ``rows`` as the run file ``path`` if its work directory allows it (time and bytes left)."""
    prefix = _prefix(path.parent)
    with _HELD_LOCK:
        until, max_bytes = _HOLDING.get(prefix, (0.0, 0))
        held = sum(a.nbytes for k, a in _HELD.items() if k.startswith(prefix))
        if time.monotonic() >= until or held + rows.nbytes > max_bytes:
            return False
        _HELD[str(path)] = rows
        return True


def flush_held_runs(map_dir: str | os.PathLike, records: dict[int, dict]) -> None:
    """Stop holding runs for ``map_dir``; write those held as files, then the records of the finished
    tasks (in ``records``) that had held runs, as the tasks would have."""
    prefix = _prefix(map_dir)
    with _HELD_LOCK:
        _HOLDING.pop(prefix, None)
        held = [(k, a) for k, a in _HELD.items() if k.startswith(prefix)]
    for path, rows in held:
        save_npy_atomic(path, rows)
        with _HELD_LOCK:
            _HELD.pop(path, None)
    for record in records.values():
        runs = record.get("runs", [])
        if any(run.pop("held", False) for run in runs):
            write_json_atomic(Path(map_dir) / f"task-{record['index']:05d}.json", record)


def release_held_runs(map_dir: str | os.PathLike) -> None:
    """Drop the runs held for ``map_dir`` (and stop holding)."""
    prefix = _prefix(map_dir)
    with _HELD_LOCK:
        _HOLDING.pop(prefix, None)
        for key in [k for k in _HELD if k.startswith(prefix)]:
            del _HELD[key]


@dataclass(frozen=True, eq=False)
class MapContext:
    stack: ImageStack
    masks: MaskStack | None
    geometry: GeometryRef
    ndiv: tuple[int, int, int]
    h_range: tuple[int, int]
    map_dir: str
    max_run_rows: int = 2_000_000
    steps: RowSteps | None = None  # a step built on integrate's machinery (None: integrate)


@dataclass(frozen=True, eq=False)
class ReduceContext:
    ndiv: tuple[int, int, int]
    max_spread: float
    reduce_dir: str
    parquet_dir: str | None
    steps: RowSteps | None = None
    in_memory: bool = False  # tasks run in the caller's process: return the table, write no part file


class RowSteps(Protocol):
    """What a step built on integrate's map -> partition -> reduce does differently (``reintegrate``):
    map tasks spill ``after_binning(rows)`` of each storage chunk's partial rows (rows of ``dtype``
    with a voxel ``key``, in the order the reduction must take them) instead of the partial rows;
    reduce tasks turn a partition's rows (in task, run and chunk order) into the output columns of
    ``schema`` with ``reduce``; parquet parts are of kind ``kind``. ``h_range`` replaces the plan's
    range of H (keys are the step's own), ``fingerprint`` joins the work directory's (``--resume``).

    Optional: ``runs_by_h = True`` spills runs sorted by H only (stable), ``max_run_rows`` caps the
    rows of a run below the memory budget's (a run ends at the chunk that reaches it), and a method
    ``reduce_pieces(pieces)`` takes the partition's slices of the runs (memory-mapped, in task, run
    and chunk order) in place of ``reduce(rows)`` on their concatenation."""

    name: str
    dtype: np.dtype
    schema: dict[str, np.dtype]
    kind: str
    h_range: tuple[int, int]
    fingerprint: dict

    def after_binning(self, rows: np.ndarray) -> np.ndarray: ...

    def reduce(self, rows: np.ndarray) -> dict[str, np.ndarray]: ...


# Miller grids by GeometryRef (path and content digest), at most _KEEP_GRIDS, oldest dropped first
_GRIDS: dict[GeometryRef, tuple] = {}
_GRIDS_LOCK = threading.Lock()
_KEEP_GRIDS = 4


def _keep_grid(ref: GeometryRef, grid) -> tuple:
    if len(_GRIDS) >= _KEEP_GRIDS:
        _GRIDS.pop(next(iter(_GRIDS)))
    _GRIDS[ref] = ((grid.phi, grid.iy, grid.ix), grid.hkl)
    return _GRIDS[ref]


def remember_miller_grid(ref: GeometryRef, grid) -> None:
    """Keep the grid the planner read (``ref`` is its digest) for the map tasks of this process: the
    threads of a local run then do not read the geometry again, both at once, as the map starts."""
    with _GRIDS_LOCK:
        _keep_grid(ref, grid)


def _miller_grid(ref: GeometryRef):
    """The Miller grid of ``ref``, read once per worker and run (keyed by path and content digest;
    a thread that needs it while another reads it waits for that read)."""
    with _GRIDS_LOCK:
        if ref in _GRIDS:
            return _GRIDS[ref]
        grid = read_miller_grid(ref.path)
        if miller_grid_digest(grid) != ref.digest:
            raise InputError(
                f"{ref.path!r}: the Miller grid changed after the run was planned (the file was replaced "
                "during the run); run again"
            )
        return _keep_grid(ref, grid)


def _read(reader, slices, path: str, what: str) -> np.ndarray:
    try:
        return reader(slices)
    except OSError as exc:  # a truncated or corrupt chunk
        rng = ", ".join(f"{s.start}:{s.stop}" for s in slices)
        raise InputError(f"{path!r}: cannot read {what} [{rng}] (truncated or corrupt file?): {exc}") from exc


def _bands(chunks):
    """Group a task's storage chunks (C order) into bands sharing the phi and y slices."""
    bands: list[list] = []
    for sl in chunks:
        if bands and bands[-1][0][0] == sl[0] and bands[-1][0][1] == sl[1]:
            bands[-1].append(sl)
        else:
            bands.append([sl])
    return bands


def bin_task_chunks(task, ctx: MapContext, clock: dict | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """Yield the partial rows (unsorted) and pixels used of each storage chunk of ``task``, in order.

    The mask is read once per band of chunks (same frames and rows): mask files are chunked
    differently from the data, and reading per data chunk would decompress shared chunks again.
    ``clock``: seconds spent reading data (``read``), masks (``mask``) and binning (``bin``) are added
    to it (the time budget of a run).
    """
    clock = {} if clock is None else clock
    for stage in ("read", "mask", "bin"):
        clock.setdefault(stage, 0.0)
    tic = time.perf_counter
    axes, hkl = _miller_grid(ctx.geometry)
    stack = ctx.stack
    hint = 0
    # image chunks are decoded into this thread's buffer, one after another (a 4-byte storage chunk)
    buffer = thread_buffer("images", 4 * int(np.prod(stack.storage_chunks)))
    with contextlib.ExitStack() as files:
        images = files.enter_context(stack.open())
        masks = files.enter_context(ctx.masks.open()) if ctx.masks else None
        for band in _bands(task.chunks):
            x0, x1 = band[0][2].start, band[-1][2].stop
            band_mask = None
            if masks is not None:
                where = (band[0][0], band[0][1], slice(x0, x1))
                t = tic()
                band_mask = _read(masks.read, where, ",".join(ctx.masks.paths), "mask")
                clock["mask"] += tic() - t
            for sl in band:
                t = tic()
                data = _read(functools.partial(images.read, out=buffer), sl, stack.path, "image data")
                clock["read"] += tic() - t
                t = tic()
                mask = None if band_mask is None else band_mask[:, :, sl[2].start - x0 : sl[2].stop - x0]
                phi, iy, ix = stack.phi[sl[0]], stack.iy[sl[1]], stack.ix[sl[2]]
                block = prepare_miller_block(axes, hkl, phi, iy, ix)
                rows = bin_chunk(data, mask, block, phi, iy, ix, stack.exposure_times[sl[0]], ctx.ndiv, hint)
                hint = max(hint, int(rows.size * 1.25))  # chunks of a task are alike: size the next table
                clock["bin"] += tic() - t
                yield rows, int(rows["pixels"].sum())


def _take_rows(rows: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``rows[order]`` for a contiguous structured array, as whole records (numpy's fancy indexing
    of structured arrays copies field by field, several times slower)."""
    size = rows.dtype.itemsize
    if not rows.flags.c_contiguous or rows.dtype.hasobject or rows.size == 0:
        return rows[order]
    word = np.int64 if size % 8 == 0 else np.uint8
    raw = rows.view(word).reshape(rows.size, size // np.dtype(word).itemsize)
    return np.take(raw, order, axis=0).view(rows.dtype).reshape(order.size)


def _spill_run(
    pieces: list[np.ndarray],
    path: Path,
    h_range: tuple[int, int],
    dtype=PARTIAL_DTYPE,
    by_h: bool = False,
) -> dict:
    """Sort the rows of consecutive chunks by voxel key (stable: chunk order is kept within a voxel)
    and save them (or hold them: :func:`hold_runs`); return the run's record with its
    rows per H value. ``by_h``: sort by H only (stable; a radix sort), for steps whose reduction needs
    no more order than that."""
    rows = concat_rows(pieces, dtype)
    lo, hi = h_range
    if by_h:
        H = (rows["key"] >> (2 * KEY_BITS)) - KEY_OFFSET
        if rows.size and (H.min() < lo or H.max() > hi):
            raise RuntimeError(f"H outside the planned range {h_range}: {H.min()}..{H.max()}")
        rel = H - lo
        order = np.argsort(rel.astype(np.uint16) if hi - lo < 2**16 else rel, kind="stable")
        rows = _take_rows(rows, order)
        H = H[order]
    else:
        rows = _take_rows(rows, stable_key_order(rows["key"]))
        H = (rows["key"] >> (2 * KEY_BITS)) - KEY_OFFSET
        if rows.size and (H[0] < lo or H[-1] > hi):
            raise RuntimeError(f"H outside the planned range {h_range}: {H[0]}..{H[-1]}")
    held = _hold_run(path, rows)
    if not held:
        save_npy_atomic(path, rows)
    return {
        "file": path.name,
        "rows": int(rows.size),
        "h_counts": np.bincount(H - lo, minlength=hi - lo + 1).tolist(),
        **({"held": True} if held else {}),
    }


def run_map_task(task, ctx: MapContext) -> dict:
    """Bin ``task``'s chunks and spill the partial rows, sorted by voxel key, to the work directory.

    Rows are spilled in runs of at most ``ctx.max_run_rows`` rows (a run ends at a chunk boundary),
    so a task's memory does not grow with its size or the subdivision. Returns the task's record:
    per run its rows per H value (so reducers find their key range in the file without reading it),
    pixels used and timings. The record file is written last: it marks the task done for ``--resume``.
    """
    t0 = time.perf_counter()
    map_dir = Path(ctx.map_dir)
    runs, pieces, pending, used = [], [], 0, 0
    dtype = ctx.steps.dtype if ctx.steps else PARTIAL_DTYPE
    by_h = bool(getattr(ctx.steps, "runs_by_h", False))
    max_run_rows = min(ctx.max_run_rows, getattr(ctx.steps, "max_run_rows", ctx.max_run_rows))
    clock = {"read": 0.0, "mask": 0.0, "bin": 0.0, "spill": 0.0}

    def spill():
        t = time.perf_counter()
        path = map_dir / f"task-{task.index:05d}-run{len(runs):03d}.npy"
        runs.append(_spill_run(pieces, path, ctx.h_range, dtype, by_h))
        clock["spill"] += time.perf_counter() - t

    for rows, pixels in bin_task_chunks(task, ctx, clock):
        if ctx.steps:
            t = time.perf_counter()
            rows = ctx.steps.after_binning(rows)
            clock["bin"] += time.perf_counter() - t
        pieces.append(rows)
        pending += rows.size
        used += pixels
        if pending >= max_run_rows:
            spill()
            pieces, pending = [], 0
    if pieces or not runs:
        spill()
    record = {
        "index": task.index,
        "rows": sum(r["rows"] for r in runs),
        "pixels_read": int(task.n_pixels),
        "pixels_used": used,
        "runs": runs,
        "seconds_total": round(time.perf_counter() - t0, 4),
        "seconds": {k: round(v, 4) for k, v in clock.items()},
    }
    if not any(run.get("held") for run in runs):  # the record marks the task done for --resume
        write_json_atomic(map_dir / f"task-{task.index:05d}.json", record)
    return record


def _read_rows(path: str, start: int, out: np.ndarray) -> None:
    """Rows ``start:start + out.size`` of the .npy file ``path`` read straight into ``out`` (one read
    call: no memory map, whose page faults cost more than the copy), or of the run held as ``path``."""
    held = _HELD.get(path)
    if held is not None:
        out[:] = held[start : start + out.size]
        return
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(f)
        if dtype != out.dtype or fortran or len(shape) != 1 or start + out.size > shape[0]:
            raise RuntimeError(f"{path}: rows {start}:{start + out.size} of {dtype} {shape} cannot be read")
        f.seek(start * out.dtype.itemsize, os.SEEK_CUR)
        view = memoryview(out).cast("B")
        got = f.readinto(view)
        if got != view.nbytes:
            raise RuntimeError(f"{path}: ends {view.nbytes - got} bytes early (truncated work file)")


def run_reduce_task(index: int, sources: list[tuple[str, int, int]], ctx: ReduceContext) -> dict:
    """Reduce one partition: rows ``[start, stop)`` of each map file -> finished, sorted table rows.

    Writes ``reduce/part-<index>.npy`` (mdx2's integrated columns) and, if asked, a parquet part.
    """
    from pipeline.io.tables import INTEGRATED_SCHEMA, write_parquet_part

    t0 = time.perf_counter()
    if ctx.steps is not None and hasattr(ctx.steps, "reduce_pieces"):
        # the step reads the slices of the spilled runs itself (memory-mapped, in order)
        pieces = [np.load(path, mmap_mode="r")[start:stop] for path, start, stop in sources]
        return _save_steps(index, ctx.steps.reduce_pieces(pieces), ctx, t0)
    dtype = ctx.steps.dtype if ctx.steps else PARTIAL_DTYPE
    rows = np.empty(sum(stop - start for _, start, stop in sources), dtype=dtype)
    filled = 0
    for path, start, stop in sources:  # in task and run order: keeps chunk order within a voxel
        if stop > start:
            _read_rows(path, start, rows[filled : filled + stop - start])
            filled += stop - start
    if ctx.steps:
        return _reduce_steps(index, rows, ctx, t0)
    if ctx.in_memory:  # the caller appends the columns itself (no part file written and read back)
        columns = reduce_to_columns(rows, ctx.max_spread, ctx.ndiv, INTEGRATED_SCHEMA)
        del rows
        if ctx.parquet_dir is not None:
            write_parquet_part(ctx.parquet_dir, index, columns, INTEGRATED_SCHEMA, ctx.ndiv, "integrated")
        size = len(columns["h"])
        return {
            "index": index,
            "rows": size,
            "columns": columns,
            "seconds": round(time.perf_counter() - t0, 4),
        }
    table = reduce_to_table(rows, ctx.max_spread, ctx.ndiv, np.dtype(list(INTEGRATED_SCHEMA.items())))
    del rows
    save_npy_atomic(Path(ctx.reduce_dir) / f"part-{index:05d}.npy", table)
    if ctx.parquet_dir is not None:
        columns = {name: np.ascontiguousarray(table[name]) for name in INTEGRATED_SCHEMA}
        write_parquet_part(ctx.parquet_dir, index, columns, INTEGRATED_SCHEMA, ctx.ndiv, "integrated")
    return {"index": index, "rows": int(table.size), "seconds": round(time.perf_counter() - t0, 4)}


def _reduce_steps(index: int, rows: np.ndarray, ctx: ReduceContext, t0: float) -> dict:
    """The reduce task of a step built on integrate (``ctx.steps``): its columns, saved as integrate's."""
    columns = ctx.steps.reduce(rows)
    del rows
    return _save_steps(index, columns, ctx, t0)


def _save_steps(index: int, columns: dict[str, np.ndarray], ctx: ReduceContext, t0: float) -> dict:
    from pipeline.io.tables import write_parquet_part

    schema = ctx.steps.schema
    size = len(columns[next(iter(schema))])
    table = np.empty(size, dtype=[(k, v) for k, v in schema.items()])
    for name in schema:
        table[name] = columns[name]
    save_npy_atomic(Path(ctx.reduce_dir) / f"part-{index:05d}.npy", table)
    if ctx.parquet_dir is not None:
        write_parquet_part(ctx.parquet_dir, index, columns, schema, ctx.ndiv, ctx.steps.kind)
    return {"index": index, "rows": int(size), "seconds": round(time.perf_counter() - t0, 4)}
