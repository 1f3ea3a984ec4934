"""Wire ``correct`` on dask: row ranges of the integrated table -> corrected rows -> outputs.

Correction is row-wise and keeps the number and order of rows (as mdx2 does), so the output's size
is known before any work starts. Each task reads a range of rows (or one parquet part), corrects it
with :func:`~pipeline.kernels.corrections.correct_rows` and writes it. Two executors:

* in-process threads (a thread pool; the default when no cluster is asked for): the work is numba
  (numpy on tables below ``FUSED_MIN_ROWS``: the same bits) that releases the GIL, so threads use
  every core without starting worker processes; each task corrects its rows one storage chunk at a
  time, reading them from the input mapped in memory where it can (``TableSource.read_pieces``),
  writes them straight into the preallocated NeXus table (``pwrite`` where HDF5 placed each column)
  and its own parquet part;
* a dask cluster (``--cluster``, e.g. SLURM): workers write parts to a work directory and the
  client streams them, in order, into the NeXus file.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import CorrectParams
from pipeline.errors import InputError
from pipeline.graph.run_tasks import run_tasks
from pipeline.graph.workdir import WorkDir, fingerprint_files
from pipeline.io.atomic import atomic_path, check_output_path, save_npy_atomic
from pipeline.io.geometry import read_background, read_corrections, read_crystal, read_symmetry
from pipeline.io.tables import CORRECTED_SCHEMA, NexusTableWriter, TableSource, open_table, write_parquet_part
from pipeline.kernels.corrections import CorrectionModel, correct_rows
from pipeline.symmetry.expressions import parse_miller_expression

__all__ = ["CorrectResult", "build_model", "run_correction"]

log = logging.getLogger(__name__)

INTEGRATED_COLUMNS = ("h", "k", "l", "phi", "iy", "ix", "seconds", "counts", "pixels", "n")


@dataclass
class CorrectResult:
    outfile: str | None
    parquet: str | None
    rows: int
    nonfinite: int
    partitions: int
    seconds: dict[str, float] = field(default_factory=dict)


def build_model(params: CorrectParams) -> CorrectionModel:
    """Read and check everything from geometry.nxs (and the background) that the correction needs."""
    crystal = read_crystal(params.geometry)
    ops = asu = None
    if not params.p1:
        symmetry = read_symmetry(params.geometry)
        ops = symmetry.laue_group_operators
        asu = parse_miller_expression(symmetry.reciprocal_space_asu)
    return CorrectionModel(
        ub_matrix=crystal.ub_matrix,
        ops=ops,
        asu=asu,
        corrections=read_corrections(params.geometry),
        background=read_background(params.background) if params.background else None,
        attenuation=params.attenuation,
        efficiency=params.efficiency,
        polarization=params.polarization,
        lorentz=params.lorentz,
    )


def _row_ranges(source: TableSource, rows_per_task: int, slots: int = 1) -> list[tuple[int, int]]:
    """Row ranges of at most ``rows_per_task`` rows, as many as a multiple of ``slots`` (threads that
    run them), in equal sizes, so no thread waits alone for the last task."""
    if source.format == "parquet":  # one task per part file: reading a part is the unit of I/O
        bounds = np.cumsum([0, *(rows for _, rows in source.parts)])
        return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    n = -(-source.n_rows // max(rows_per_task, 1))
    n = -(-n // max(slots, 1)) * max(slots, 1)
    edges = np.linspace(0, source.n_rows, n + 1).round().astype(int).tolist()
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a] or [(0, 0)]


def _corrected_piece(
    start: int, rows: dict[str, np.ndarray], source: TableSource, model: CorrectionModel, fused: bool
) -> dict[str, np.ndarray]:
    """The corrected columns of ``rows``, rows ``start:`` of the table."""
    zero = np.flatnonzero(~(rows["seconds"] > 0))
    if zero.size:
        raise InputError(
            f"{source.path!r}: 'seconds' is {rows['seconds'][zero[0]]:g} in {zero.size} rows (first at row "
            f"{start + zero[0]}); count rates would be infinite. Integrate again with --exposure-time S."
        )
    try:
        return correct_rows(rows, source.ndiv, model, fused=fused)
    except ValueError as exc:  # indices no ASU search can take, or symmetry mapping none into the ASU
        stop = start + len(rows["h"])
        raise InputError(f"{source.path!r}, rows {start}:{stop}: {exc}") from exc


def _corrected_pieces(start: int, stop: int, source: TableSource, model: CorrectionModel, fused: bool):
    """(first row, corrected columns) of rows ``start:stop``, piece by piece (as the table is stored:
    see :meth:`~pipeline.io.tables.TableSource.read_pieces`)."""
    for offset, rows in source.read_pieces(start, stop, INTEGRATED_COLUMNS):
        yield start + offset, _corrected_piece(start + offset, rows, source, model, fused)


def _corrected(
    start: int, stop: int, source: TableSource, model: CorrectionModel, fused: bool = True
) -> dict[str, np.ndarray]:
    pieces = [out for _, out in _corrected_pieces(start, stop, source, model, fused)]
    if len(pieces) == 1:
        return pieces[0]
    return {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]}


def _record(index: int, out: dict[str, np.ndarray]) -> dict:
    nonfinite = int(np.count_nonzero(~np.isfinite(out["intensity"])))
    return {"index": index, "rows": len(out["h"]), "nonfinite": nonfinite}


def run_correct_task(
    index: int, start: int, stop: int, source: TableSource, model: CorrectionModel, part_dir: str,
    parquet_dir: str | None, fused: bool = True,
) -> dict:  # fmt: skip
    """(Cluster executor) correct rows ``start:stop``; write ``part-<index>.npy`` (and a parquet part)."""
    out = _corrected(start, stop, source, model, fused)
    table = np.empty(len(out["h"]), dtype=[(k, v) for k, v in CORRECTED_SCHEMA.items()])
    for name in CORRECTED_SCHEMA:
        table[name] = out[name]
    save_npy_atomic(Path(part_dir) / f"part-{index:05d}.npy", table)
    if parquet_dir is not None:
        write_parquet_part(parquet_dir, index, out, CORRECTED_SCHEMA, source.ndiv, "corrected")
    return _record(index, out)


def _correct_in_place(index, start, stop, source, model, writer, parquet_dir, bar, fused) -> dict:
    """(Threads executor) correct rows ``start:stop`` and write them at the same rows of the output,
    piece by piece (each piece's rows read from the input file mapped in memory, where it can be)."""
    record = {"index": index, "rows": 0, "nonfinite": 0}
    parts = []
    for at, out in _corrected_pieces(start, stop, source, model, fused):
        if writer is not None:
            writer.write(at, out)
        if parquet_dir is not None:
            parts.append(out)
        piece = _record(index, out)
        record["rows"] += piece["rows"]
        record["nonfinite"] += piece["nonfinite"]
    if parquet_dir is not None:
        out = parts[0] if len(parts) == 1 else {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}
        write_parquet_part(parquet_dir, index, out, CORRECTED_SCHEMA, source.ndiv, "corrected")
    if bar is not None:
        bar.advance()
    return record


def run_correction(
    params: CorrectParams, client=None, progress=None, threads: int | None = None
) -> CorrectResult:
    """Correct a whole table: on ``client``'s cluster, or in this process with ``threads`` threads."""
    t0 = time.perf_counter()
    if params.outfile:
        check_output_path(params.outfile, params.overwrite)
    if params.parquet:
        check_output_path(params.parquet, params.overwrite, is_dir=True)
    source = open_table(params.integrated)
    missing = [c for c in INTEGRATED_COLUMNS if c not in source.columns]
    if missing:
        raise InputError(
            f"{params.integrated!r} lacks the integrated columns {missing}; is it an integrated table?"
        )
    model = build_model(params)
    slots = (threads or os.cpu_count() or 1) if client is None else 1
    ranges = _row_ranges(source, params.tuning.correct_rows_per_task, slots)
    seconds = {"plan": time.perf_counter() - t0}
    bar = progress("correct", len(ranges)) if progress else None
    from pipeline.graph.space import correct_needs, explained, warn_if_short

    anchor = Path(params.outfile or params.parquet)
    needs = correct_needs(params, source.n_rows, anchor.with_name(f".{anchor.name}.work") if client else None)
    warn_if_short(needs)
    with explained(needs), contextlib.ExitStack() as outputs:
        parquet_tmp = (
            outputs.enter_context(atomic_path(params.parquet, is_dir=True)) if params.parquet else None
        )
        parquet_dir = parquet_tmp and str(parquet_tmp)
        t = time.perf_counter()
        if client is None:
            fused = source.n_rows >= FUSED_MIN_ROWS
            records = _run_threads(params, source, model, ranges, parquet_dir, bar, threads, outputs, fused)
            seconds["correct"] = time.perf_counter() - t
        else:
            records = _run_cluster(params, source, model, ranges, parquet_dir, bar, client, seconds)
    n_rows = sum(r["rows"] for r in records)
    nonfinite = sum(r["nonfinite"] for r in records)
    if nonfinite:
        log.warning(
            "%d of %d corrected intensities are NaN or inf (e.g. NaN in the background)", nonfinite, n_rows
        )
    seconds["total"] = time.perf_counter() - t0
    return CorrectResult(
        params.outfile,
        params.parquet,
        n_rows,
        nonfinite,
        len(ranges),
        {k: round(v, 3) for k, v in seconds.items()},
    )


FUSED_MIN_ROWS = 1 << 20  # smaller tables in numpy: numba's start-up (~0.3 s, where the kernels are not
# compiled ahead of time) would cost more than it saves


def _run_threads(params, source, model, ranges, parquet_dir, bar, threads, outputs, fused) -> list[dict]:
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    writer = None
    if params.outfile:
        writer = outputs.enter_context(
            NexusTableWriter(params.outfile, CORRECTED_SCHEMA, source.n_rows, source.ndiv, direct=True)
        )
    pool = ThreadPoolExecutor(threads or os.cpu_count() or 1, thread_name_prefix="correct")
    try:
        futures = [
            pool.submit(_correct_in_place, i, a, b, source, model, writer, parquet_dir, bar, fused)
            for i, (a, b) in enumerate(ranges)
        ]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            raise failed[0].exception()
        records = [f.result() for f in futures]
    finally:  # on an error (or SIGTERM) the ranges not started are dropped, the running ones end
        pool.shutdown(wait=True, cancel_futures=True)
    if writer is not None:
        writer.commit()
    return records


def _run_cluster(params, source, model, ranges, parquet_dir, bar, client, seconds) -> list[dict]:

    anchor = Path(params.outfile or params.parquet)
    fingerprint = {"inputs": fingerprint_files([params.geometry, params.integrated]), "run": uuid.uuid4().hex}
    work = WorkDir(anchor.with_name(f".{anchor.name}.work"), fingerprint, resume=False)
    try:
        t = time.perf_counter()
        model_future = client.scatter(model, broadcast=True)
        records = {}
        with run_tasks(
            client, run_correct_task, range(len(ranges)), [a for a, _ in ranges], [b for _, b in ranges],
            source=source, model=model_future, part_dir=str(work.reduce_dir), parquet_dir=parquet_dir,
            fused=source.n_rows >= FUSED_MIN_ROWS, name="correct", bar=bar,
        ) as results:  # fmt: skip
            for r in results:
                records[r["index"]] = r
        seconds["correct"] = time.perf_counter() - t
        t = time.perf_counter()
        sizes = [records[i]["rows"] for i in range(len(ranges))]
        if params.outfile:
            with NexusTableWriter(params.outfile, CORRECTED_SCHEMA, sum(sizes), source.ndiv) as writer:
                start = 0
                for i, size in enumerate(sizes):
                    part = np.load(work.reduce_file(i))
                    writer.write(start, {name: part[name] for name in CORRECTED_SCHEMA})
                    start += size
                writer.commit()
        seconds["export"] = time.perf_counter() - t
    finally:
        work.remove()
    return [records[i] for i in range(len(ranges))]
