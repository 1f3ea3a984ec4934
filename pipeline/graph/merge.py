"""Wire ``merge`` on dask: map row ranges -> range-partition by voxel key -> merge partitions -> export.

1. map: one task per row range of each input table reads its rows, computes each row's voxel key
   (mdx2's rounding of ``h * ndiv``), scale and offset (the batch's scaling models) and, for the random
   half-splits, the row's jitter (numpy's legacy stream seeked to the row); it spills the rows sorted
   by key (stable: table order within a voxel) and returns rows per H value;
2. partition: contiguous ranges of H with about the same number of rows (every row of a voxel lands
   in one partition; no process holds the whole table);
3. merge: one task per partition gathers its rows from every spilled run, in table order within each
   voxel, and runs mdx2's merge, outlier rejection and Friedel split (:mod:`pipeline.kernels.merge`);
4. random splits only: mdx2's ``wrs`` keeps a running sum over the whole sorted table, so a second
   pass runs the partitions one after the other in voxel order, each starting from the running sum
   the previous one ended with (a scalar), and merges the two halves;
5. export: the parts, in key order, are appended to the NeXus table (mdx2's merged layout).

``--resume``: the work directory (``.<outfile>.work`` or ``workdir``) is bound to a fingerprint of
the inputs and options; every map task, partition and split task writes a small record after its
files (atomically), and the partition plan and a random seed are kept there. A run that was killed
(or failed on something other than bad input) keeps the directory; ``resume=True`` then reruns only
what has no record and writes the same merged table. A work directory of other inputs or options is
refused.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import MergeParams
from pipeline.errors import InputError, PipelineError
from pipeline.graph.run_tasks import run_tasks
from pipeline.graph.workdir import WorkDir, fingerprint_files
from pipeline.io.atomic import check_output_path, save_npy_atomic, write_json_atomic
from pipeline.io.tables import NexusTableWriter, TableSource, open_table
from pipeline.kernels import merge as km

__all__ = ["MERGED_SCHEMA", "MergeResult", "merged_schema", "run_merge"]

log = logging.getLogger(__name__)

MERGED_SCHEMA: dict[str, np.dtype] = {
    "h": np.dtype("float64"),
    "k": np.dtype("float64"),
    "l": np.dtype("float64"),
    "intensity": np.dtype("float32"),
    "intensity_error": np.dtype("float32"),
    "count": np.dtype("int32"),
}
REQUIRED_COLUMNS = ("h", "k", "l", "intensity", "intensity_error")
MODEL_COLUMNS = ("phi", "s", "ix", "iy")
RANDOM_SPLITS = ("randomHalf", "weightedRandomHalf")


def merged_schema(split: str | None) -> dict[str, np.dtype]:
    """The merged table's columns: mdx2's three, plus three per half when splitting."""
    schema = dict(MERGED_SCHEMA)
    if split is not None:
        for j in (0, 1):
            schema[f"group_{j}_intensity"] = np.dtype("float32")
            schema[f"group_{j}_intensity_error"] = np.dtype("float32")
            schema[f"group_{j}_count"] = np.dtype("int32")
    return schema


@dataclass
class MergeResult:
    outfile: str
    rows: int
    observations: int
    outliers: int
    partitions: int
    map_tasks: int
    seed: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    map_tasks_skipped: int = 0  # done before (resume)
    partitions_skipped: int = 0


@dataclass(frozen=True)
class MapJob:
    """One map task: rows ``start:stop`` of table ``batch``."""

    index: int
    batch: int
    source: TableSource
    start: int
    stop: int
    models: object  # kernels.merge.BatchModels or None
    jitter_state: object  # numpy RandomState state at the first row, or None
    minus_ops: object  # per-op "has inversion" (Friedel split) or None
    map_dir: str


def _run_fields(jitter: bool, friedel: bool) -> list[tuple[str, str]]:
    out = [("key", "i8"), ("I", "f4"), ("sigma", "f4"), ("scale", "f4"), ("offset", "f4")]
    if friedel:
        out.append(("minus", "?"))
    if jitter:
        out.append(("jitter", "f8"))
    return out


def run_map_task(job: MapJob) -> dict:
    """Read rows, key them, scale them; spill them sorted by key; return rows per H."""
    columns = list(REQUIRED_COLUMNS)
    if job.models is not None:
        columns += [c for c in MODEL_COLUMNS if c not in columns]
    if job.minus_ops is not None:
        columns.append("op")
    rows = job.source.read(job.start, job.stop, columns)
    try:
        keys, H = km.voxel_keys(rows["h"], rows["k"], rows["l"], job.source.ndiv)
    except ValueError as exc:
        raise InputError(f"{job.source.path!r}, rows {job.start}:{job.stop}: {exc}") from exc
    intensity = np.asarray(rows["intensity"])
    scale, offset = km.batch_scale_offset(job.models, rows, intensity.dtype)
    fields = _run_fields(job.jitter_state is not None, job.minus_ops is not None)
    out = np.empty(len(keys), dtype=fields)
    out["key"], out["I"], out["sigma"] = keys, intensity, rows["intensity_error"]
    out["scale"], out["offset"] = scale, offset
    if job.minus_ops is not None:
        op = np.asarray(rows["op"])
        if op.size and (op.min() < 0 or op.max() >= len(job.minus_ops)):
            raise InputError(
                f"{job.source.path!r}: column 'op' holds {int(op.min())}..{int(op.max())}, but the geometry "
                f"has {len(job.minus_ops)} Laue operators; is the table corrected with this geometry?"
            )
        out["minus"] = np.asarray(job.minus_ops)[op]
    if job.jitter_state is not None:
        out["jitter"] = km.RandomStream.jitter(job.jitter_state, len(keys))
    order = np.argsort(keys, kind="stable")
    out = out[order]
    H = H[order]
    path = Path(job.map_dir) / f"run-{job.index:05d}.npy"
    save_npy_atomic(path, out)
    h_lo = int(H[0]) if H.size else 0
    counts = np.bincount(H - h_lo) if H.size else np.zeros(0, np.int64)
    record = {
        "index": job.index,
        "file": path.name,
        "rows": len(out),
        "h_lo": h_lo,
        "h_counts": counts.tolist(),
    }
    write_json_atomic(_record_file(job.map_dir, "run", job.index), record)  # last: marks the task done
    return record


def _record_file(directory, what: str, index: int) -> Path:
    return Path(directory) / f"{what}-{index:05d}.json"


def _records(directory: Path, what: str, files=lambda record: ()) -> dict[int, dict]:
    """Records ``<what>-NNNNN.json`` in ``directory`` whose files (``files(record)``) all exist."""
    done = {}
    for path in sorted(Path(directory).glob(f"{what}-*.json")):
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        if all((Path(directory) / f).exists() for f in files(record)):
            done[int(record["index"])] = record
    return done


@dataclass(frozen=True)
class PartitionJob:
    index: int
    sources: tuple  # (run file, start row, stop row) in table order
    outlier: float | None
    split: str | None
    reduce_dir: str


def _gather(sources) -> np.ndarray:
    pieces = [np.load(f, mmap_mode="r")[a:b] for f, a, b in sources if b > a]
    if not pieces:
        return np.zeros(0, dtype=np.load(sources[0][0], mmap_mode="r").dtype) if sources else None
    rows = np.concatenate(pieces)
    # runs are in table order and each is sorted by key: a stable sort keeps table order in a voxel
    return rows[np.argsort(rows["key"], kind="stable")]


def run_partition_task(job: PartitionJob, ndiv) -> dict:
    """Merge one partition; write its finished part (or, for random splits, its state for pass 2)."""
    rows = _gather(job.sources)
    part = km.merge_partition(
        rows["key"], rows["I"], rows["sigma"], rows["scale"], rows["offset"], job.outlier
    )
    columns = dict(part.columns)
    h, k, l = km.keys_to_hkl(part.keys, ndiv)
    columns.update(h=h, k=k, l=l)
    if job.split == "Friedel":
        minus = rows["minus"]
        columns.update(km.group_merge(part, ~minus, 0))
        columns.update(km.group_merge(part, minus, 1))
    record = {
        "index": job.index,
        "rows": len(part.keys),
        "observations": len(rows),
        "outliers": part.outliers,
    }
    if job.split in RANDOM_SPLITS:
        # wrs's order of the rows and the weights in that order (the running sum's input), for pass 2
        order = km.split_order(part.ih, rows["jitter"])
        save_npy_atomic(
            _split_file(job.reduce_dir, "weights", job.index), km.split_weights(part, job.split)[order]
        )
        state = np.empty(
            len(rows),
            dtype=[("ih", "i8"), ("order", "i8"), ("mask", "?"), ("I_s", "f4"), ("sigma_s", "f4")],
        )
        state["ih"], state["order"], state["mask"] = part.ih, order, part.mask
        state["I_s"], state["sigma_s"] = part.I_s, part.sigma_s
        save_npy_atomic(_split_file(job.reduce_dir, "state", job.index), state)
    _save_part(Path(job.reduce_dir) / f"part-{job.index:05d}.npy", columns)
    write_json_atomic(_record_file(job.reduce_dir, "part", job.index), record)  # last: marks it done
    return record


def _split_file(reduce_dir: str, what: str, index: int) -> Path:
    return Path(reduce_dir) / f"{what}-{index:05d}.npy"


def run_carry_task(reduce_dir: str, index: int, carry):
    """The global running sum of ``wrs`` after partition ``index``, from ``carry`` before it (None: 0)."""
    sorted_w = np.load(_split_file(reduce_dir, "weights", index))
    if carry is None:
        carry = sorted_w.dtype.type(0)
    return km.running_sum(sorted_w, carry)


def run_split_task(reduce_dir: str, index: int, flip_state, carry) -> dict:
    """Pass 2 of a random split: ``wrs`` on one partition from the running sum ``carry``; add the halves."""
    state = np.load(_split_file(reduce_dir, "state", index))
    sorted_w = np.load(_split_file(reduce_dir, "weights", index))
    part_file = Path(reduce_dir) / f"part-{index:05d}.npy"
    done = np.load(part_file)
    n_vox = len(done)
    part = km.PartitionMerge(
        keys=np.zeros(n_vox, np.int64), ih=state["ih"], mask=state["mask"], I_s=state["I_s"],
        sigma_s=state["sigma_s"], columns={}, outliers=0,
    )  # fmt: skip
    if carry is None:
        carry = sorted_w.dtype.type(0)
    flips = km.RandomStream.flips(flip_state, n_vox)
    in_group_1 = km.split_from_order(part.ih, state["order"], sorted_w, flips, carry)
    columns = {name: done[name] for name in done.dtype.names}
    columns.update(km.group_merge(part, in_group_1, 0))
    columns.update(km.group_merge(part, ~in_group_1, 1))
    _save_part(part_file, columns)  # a rerun on this part overwrites the halves with the same values
    # state and weights stay (the running sums of a resumed run read every partition's weights)
    record = {"index": index}
    write_json_atomic(_record_file(reduce_dir, "split", index), record)
    return record


def _save_part(path: Path, columns: dict[str, np.ndarray]) -> None:
    names = [n for n in ("h", "k", "l") if n in columns] + [n for n in columns if n not in ("h", "k", "l")]
    table = np.empty(len(columns["h"]), dtype=[(n, np.asarray(columns[n]).dtype) for n in names])
    for n in names:
        table[n] = columns[n]
    save_npy_atomic(path, table)


# ---------------------------------------------------------------------------------------------------


def open_inputs(params: MergeParams) -> list[TableSource]:
    """Open and cross-check the input tables (corrected columns, one subdivision, some rows)."""
    sources = [open_table(p) for p in params.tables]
    need = list(REQUIRED_COLUMNS)
    if params.split == "Friedel":
        need.append("op")
    for s in sources:
        missing = [c for c in need if c not in s.columns]
        if missing:
            raise InputError(
                f"{s.path!r} lacks the columns {missing}; merge needs a corrected table (diffuse correct)"
            )
    ndiv0 = tuple(int(x) for x in sources[0].ndiv)
    for s in sources[1:]:
        if tuple(int(x) for x in s.ndiv) != ndiv0:
            raise InputError(
                f"tables of different subdivisions cannot be merged: {sources[0].path!r} has ndiv {ndiv0}, "
                f"{s.path!r} has {tuple(int(x) for x in s.ndiv)}"
            )
    if sum(s.n_rows for s in sources) == 0:
        raise InputError(f"nothing to merge: {', '.join(repr(s.path) for s in sources)} hold no rows")
    return sources


def _batch_models(params: MergeParams, sources: list[TableSource]) -> list:
    if not params.scales:
        return [None] * len(sources)
    models = []
    from pipeline.io.scales import read_scales

    for table, path in zip(sources, params.scales, strict=True):
        scales = read_scales(path)
        m = _kept_models(scales, params)
        if m is not None:
            missing = [c for c in MODEL_COLUMNS if c not in table.columns]
            if missing:
                raise InputError(
                    f"{table.path!r} lacks the columns {missing} that the scales of {path!r} need"
                )
            _check_cover(table, scales, path)
        models.append(m)
    return models


def _column_ranges(source: TableSource, names: list[str], rows: int = 4_000_000) -> dict[str, tuple]:
    """(min, max) of columns ``names`` of a table, read in slices of ``rows``."""
    lo = dict.fromkeys(names, np.inf)
    hi = dict.fromkeys(names, -np.inf)
    for start in range(0, source.n_rows, rows):
        part = source.read(start, min(start + rows, source.n_rows), names)
        for name in names:
            v = np.asarray(part[name], dtype=np.float64)
            if v.size:
                lo[name], hi[name] = min(lo[name], np.nanmin(v)), max(hi[name], np.nanmax(v))
    return {name: (lo[name], hi[name]) for name in names}


def _check_cover(table: TableSource, scales, path: str) -> None:
    """Refuse scales fitted to another dataset (:func:`pipeline.io.scales.check_scales_cover`): their
    control points must span at least half of the table's phi, ix and iy ranges."""
    from pipeline.io.scales import check_scales_cover

    ranges = _column_ranges(table, ["phi", "iy", "ix"])
    if not np.isfinite(ranges["phi"][0]):
        return  # no rows
    shape = (int(ranges["iy"][1]) + 1, int(ranges["ix"][1]) + 1)
    check_scales_cover(scales, path, np.array(ranges["phi"]), shape)


def _kept_models(scales, params: MergeParams):
    """The models of one scales file that the flags keep (None if none is kept)."""
    m = km.BatchModels(
        scaling=scales.scaling if params.scaling else None,
        absorption=scales.absorption if params.absorption else None,
        detector=scales.detector if params.detector else None,
        offset=scales.offset if params.offset else None,
    )
    return None if m.empty else m


def _row_ranges(source: TableSource, rows_per_task: int) -> list[tuple[int, int]]:
    """Row ranges of the map tasks: one per parquet part (the unit of I/O), else ``rows_per_task`` rows."""
    if source.format == "parquet":
        bounds = np.cumsum([0, *(rows for _, rows in source.parts)])
        return [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]
    return [(a, min(a + rows_per_task, source.n_rows)) for a in range(0, source.n_rows, rows_per_task)]


def _choose_partitions(h_counts: np.ndarray, max_rows: int, min_partitions: int) -> list[tuple[int, int]]:
    from pipeline.graph.integrate import choose_partitions

    return choose_partitions(h_counts, max_rows, min_partitions)


class _Executor:
    """Tasks on a dask client (``run_tasks``) or on threads of this process."""

    def __init__(self, client, threads: int | None):
        self.client, self.threads = client, threads

    @contextlib.contextmanager
    def map(self, func, *iterables, name: str, bar=None, **kwargs):
        if self.client is not None:
            with run_tasks(self.client, func, *iterables, name=name, bar=bar, **kwargs) as results:
                yield results
            return
        pool = ThreadPoolExecutor(max_workers=self.threads or 2)

        def one(args):
            result = func(*args, **kwargs)
            if bar is not None:
                bar.advance()
            return result

        try:
            yield pool.map(one, zip(*iterables, strict=True))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def call(self, func, *args):
        if self.client is None:
            return func(*args)
        return self.client.submit(
            func, *args, pure=False, key=f"merge-split-{uuid.uuid4().hex[:12]}"
        ).result()


def _worker_rows(client, params: MergeParams) -> tuple[int, int]:
    if client is None:
        return params.tuning.max_partition_rows, 2
    from pipeline.graph.integrate import _task_slots, _worker_memory, partition_rows

    return partition_rows(_worker_memory(client), params.tuning), _task_slots(client)


def _fingerprint(params: MergeParams, ranges, ndiv) -> dict:
    """What a merge's work directory is bound to: the inputs (path, size, mtime), the options that
    change the result and the map tasks' row ranges."""
    files = [*params.tables, *params.scales, *([params.geometry] if params.geometry else [])]
    return {
        "inputs": fingerprint_files(files),
        "options": {
            "outlier": params.outlier, "split": params.split, "seed": params.seed,
            "scaling": params.scaling, "offset": params.offset, "absorption": params.absorption,
            "detector": params.detector,
        },
        "ndiv": list(ndiv),
        "ranges": [list(r) for r in ranges],
        "layout": "merge-1",
    }  # fmt: skip


def _random_seed(params: MergeParams, work: WorkDir) -> int:
    """``params.seed``, else the seed an interrupted run of this work directory drew, else a new one
    (kept in the work directory for ``--resume``)."""
    if params.seed is not None:
        return params.seed
    kept = work.path / "seed.json"
    if params.resume and kept.exists():
        seed = int(json.loads(kept.read_text())["seed"])
        log.info("resuming with the random seed %d of the interrupted run", seed)
        return seed
    seed = int(np.random.SeedSequence().entropy % 2**32)
    write_json_atomic(kept, {"seed": seed})
    return seed


def run_merge(params: MergeParams, client=None, progress=None, threads: int | None = None) -> MergeResult:
    """Merge the tables of ``params`` on ``client``'s cluster (or threads of this process).

    The work directory is removed at the end, and on bad input; on any other error or interruption it
    is kept, and ``params.resume`` reuses what it holds (see the module docstring)."""
    t0 = time.perf_counter()
    check_output_path(params.outfile, params.overwrite)
    sources = open_inputs(params)
    models = _batch_models(params, sources)
    minus_ops = None
    if params.split == "Friedel":
        from pipeline.io.geometry import read_symmetry

        minus_ops = km.inversion_ops(read_symmetry(params.geometry).laue_group_operators)
    ndiv = tuple(int(x) for x in sources[0].ndiv)
    ranges = [
        (b, a, c)
        for b, s in enumerate(sources)
        for a, c in _row_ranges(s, params.tuning.correct_rows_per_task)
    ]
    anchor = Path(params.outfile)
    workdir = params.workdir or anchor.with_name(f".{anchor.name}.work")
    work = WorkDir(workdir, _fingerprint(params, ranges, ndiv), resume=params.resume)
    try:
        result = _run(params, client, progress, threads, work, sources, models, minus_ops, ndiv, ranges, t0)
    except PipelineError:
        if not params.keep_workdir:  # bad input: resuming cannot get past it
            work.remove()
        raise
    except BaseException:
        log.info("keeping the work directory %s: --resume continues from it", work.path)
        raise
    if not params.keep_workdir:
        work.remove()
    result.seconds["total"] = round(time.perf_counter() - t0, 3)
    return result


def _run(
    params, client, progress, threads, work, sources, models, minus_ops, ndiv, ranges, t0
) -> MergeResult:
    n_total = sum(s.n_rows for s in sources)
    seed = None
    jitter_states = [None] * len(ranges)
    if params.split in RANDOM_SPLITS:
        seed = _random_seed(params, work)
        log.info("random half-split with seed %d (repeat it with --seed %d)", seed, seed)
        offsets = np.cumsum([0] + [c - a for _, a, c in ranges])[:-1]
        jitter_states, _ = km.RandomStream(seed).jitter_states(offsets)
    seconds = {"plan": time.perf_counter() - t0}
    ex = _Executor(client, threads)
    plan_file = work.path / "partitions.json"
    plan = json.loads(plan_file.read_text()) if params.resume and plan_file.exists() else None
    precs = _records(work.reduce_dir, "part", lambda r: [f"part-{r['index']:05d}.npy"]) if plan else {}
    # 1. map (not needed when a resumed run finds every partition merged)
    t = time.perf_counter()
    jobs = [
        MapJob(i, b, sources[b], a, c, models[b], jitter_states[i], minus_ops, str(work.map_dir))
        for i, (b, a, c) in enumerate(ranges)
    ]
    all_merged = plan is not None and all(i in precs for i in range(len(plan["ranges"])))
    records = {}
    if params.resume and not all_merged:
        records = _records(work.map_dir, "run", lambda r: [r["file"]])
        log.info("resuming: %d of %d map tasks done before", len(records), len(jobs))
    map_skipped = len(jobs) if all_merged else len(records)
    todo = [] if all_merged else [j for j in jobs if j.index not in records]
    bar = progress("merge: read", len(jobs)) if progress else None
    if bar and map_skipped:
        bar.advance(map_skipped, detail=f"{map_skipped} done before")
    with ex.map(run_map_task, todo, name=f"merge-map-{work.digest}", bar=bar) as results:
        for r in results:
            records[r["index"]] = r
    seconds["map"] = time.perf_counter() - t
    # 2. partitions by H (kept in the work directory: a resumed run cuts the same partitions)
    if plan is None:
        runs = [records[i] for i in range(len(jobs))]
        nonempty = [r for r in runs if r["rows"]]
        h_min = min(r["h_lo"] for r in nonempty)
        h_max = max(r["h_lo"] + len(r["h_counts"]) for r in nonempty)
        counts = _h_counts(runs, h_min, h_max)
        max_rows, slots = _worker_rows(client, params)
        hranges = _choose_partitions(counts.sum(axis=0), max_rows, min_partitions=2 * slots)
        plan = {"h_min": h_min, "h_max": h_max, "ranges": [list(r) for r in hranges], "max_rows": max_rows}
        write_json_atomic(plan_file, plan)
    pjobs_all = []
    if not all_merged:
        runs = [records[i] for i in range(len(jobs))]
        counts = _h_counts(runs, plan["h_min"], plan["h_max"])
        offsets = np.concatenate([np.zeros((len(runs), 1), np.int64), np.cumsum(counts, axis=1)], axis=1)
    n_parts = len(plan["ranges"])
    for i, (lo, hi) in enumerate(plan["ranges"]):
        sources_i = ()
        if not all_merged:
            sources_i = tuple(
                (str(work.map_dir / r["file"]), int(offsets[j, lo]), int(offsets[j, hi]))
                for j, r in enumerate(runs)
            )
        pjobs_all.append(PartitionJob(i, sources_i, params.outlier, params.split, str(work.reduce_dir)))
    pjobs = [j for j in pjobs_all if j.index not in precs]
    log.info("%d rows -> %d partitions of <= %d rows", n_total, n_parts, plan["max_rows"])
    if precs:
        log.info("resuming: %d of %d partitions merged before", len(precs), n_parts)
    # 3. merge partitions
    t = time.perf_counter()
    bar = progress("merge", n_parts) if progress else None
    if bar and precs:
        bar.advance(len(precs), detail=f"{len(precs)} done before")
    parts_skipped = len(precs)
    with ex.map(run_partition_task, pjobs, name=f"merge-part-{work.digest}", bar=bar, ndiv=ndiv) as results:
        for r in results:
            precs[r["index"]] = r
    for f in work.map_dir.glob("run-*.npy"):  # every partition is merged: the runs are not needed
        f.unlink()
    seconds["merge"] = time.perf_counter() - t
    # 4. random split: the running sums at the partitions' starts, one after the other in voxel
    # order (a cumsum of each partition's sorted weights), then every partition's halves at once
    if params.split in RANDOM_SPLITS:
        t = time.perf_counter()
        vox = [precs[i]["rows"] for i in range(n_parts)]
        j0s = np.cumsum([0, *vox])[:-1]
        flip_states = km.RandomStream(seed).flip_states(n_total, j0s)
        carries = [None]
        for i in range(n_parts - 1):
            carries.append(ex.call(run_carry_task, str(work.reduce_dir), i, carries[-1]))
        seconds["split_sums"] = time.perf_counter() - t
        split_done = _records(work.reduce_dir, "split") if params.resume else {}
        todo = [i for i in range(n_parts) if i not in split_done]
        bar = progress("merge: split", n_parts) if progress else None
        if bar and split_done:
            bar.advance(len(split_done), detail=f"{len(split_done)} done before")
        with ex.map(
            run_split_task, [str(work.reduce_dir)] * len(todo), todo, [flip_states[i] for i in todo],
            [carries[i] for i in todo], name=f"merge-split-{work.digest}", bar=bar,
        ) as results:  # fmt: skip
            for _ in results:
                pass
        seconds["split"] = time.perf_counter() - t
    # 5. export
    t = time.perf_counter()
    schema = merged_schema(params.split)
    with NexusTableWriter(params.outfile, schema, None, ndiv, compress=True) as writer:
        for i in range(n_parts):
            part = np.load(work.reduce_file(i))
            writer.append({name: part[name] for name in schema})
        writer.commit()
    seconds["export"] = time.perf_counter() - t
    return MergeResult(
        outfile=params.outfile,
        rows=sum(r["rows"] for r in precs.values()),
        observations=n_total,
        outliers=sum(r["outliers"] for r in precs.values()),
        partitions=n_parts,
        map_tasks=len(jobs),
        seed=seed,
        seconds={k: round(v, 3) for k, v in seconds.items()},
        map_tasks_skipped=map_skipped,
        partitions_skipped=parts_skipped,
    )


def _h_counts(runs: list[dict], h_min: int, h_max: int) -> np.ndarray:
    """Rows per H value (columns from ``h_min``) of each map task's run."""
    counts = np.zeros((len(runs), h_max - h_min), dtype=np.int64)
    for j, r in enumerate(runs):
        if r["rows"]:
            lo = r["h_lo"] - h_min
            counts[j, lo : lo + len(r["h_counts"])] = r["h_counts"]
    return counts


__all__ += [
    "MapJob",
    "PartitionJob",
    "open_inputs",
    "run_carry_task",
    "run_map_task",
    "run_partition_task",
    "run_split_task",
]
