"""Wire ``map`` on dask: blocks of whole H planes of the output grid -> values -> the map file.

The merged table is small next to the map (one row per ASU voxel that has data); it is read once,
column by column in row ranges, into a :class:`~pipeline.kernels.maps.TableIndex` (12 bytes a row
for a float32 signal). The grid is cut into blocks of whole H planes of about
``params.cells_per_task`` points; a block's memory (about 40 bytes a point) bounds a task's, never
the whole map. Two executors, as for ``correct``:

* in-process threads (default locally): each task maps its block and writes it into the output
  (h5py serialises the writes); the index is shared, not copied;
* a dask cluster: the index is scattered once to every worker; tasks write their block to the work
  directory and the client copies each into the output as it arrives, then deletes it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import MapParams
from pipeline.errors import InputError
from pipeline.graph.run_tasks import run_tasks
from pipeline.graph.workdir import WorkDir, fingerprint_files
from pipeline.io.atomic import check_output_path, save_npy_atomic
from pipeline.io.geometry import read_symmetry
from pipeline.io.grids import MapWriter
from pipeline.io.tables import open_table
from pipeline.kernels.keys import KEY_LIMIT
from pipeline.kernels.maps import (
    GridAxes,
    Orbits,
    TableIndex,
    count_repeated,
    grid_axes,
    map_block,
    map_block_orbits,
    map_dtype,
    orbits_of_rows,
)
from pipeline.symmetry.expressions import parse_miller_expression

__all__ = ["MapResult", "load_table", "plan_blocks", "run_map"]

log = logging.getLogger(__name__)

_READ_ROWS = 2_000_000  # table rows read at once while the index is built


@dataclass
class MapResult:
    outfile: str
    png: str | None
    shape: tuple[int, int, int]
    filled: int  # grid points with a value (not NaN)
    table_rows: int
    tasks: int
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MapModel:
    """What every task needs besides the table: the grid and the symmetry."""

    axes: GridAxes
    ops: np.ndarray
    asu: object
    symmetry: bool
    use_numba: bool | None = None  # None: by the table's size (kernels.maps.scatter_orbits)


def _task_input(hkl: np.ndarray, values: np.ndarray, model: MapModel) -> TableIndex | Orbits:
    """What the tasks look values up in: the rows sent to their orbits (fast path), or the index."""
    orb = orbits_of_rows(hkl, values, model.ops, model.asu, model.symmetry)
    if orb is None:
        log.info("the ASU does not select one member of every orbit: each grid point is mapped to the ASU")
        return TableIndex(hkl[0], hkl[1], hkl[2], values)
    return orb


def load_table(merged: str, signal: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """The merged table's integer indices ``round(x * ndiv)`` as (3, n) int32, its ``signal`` column
    and ndiv; read in row ranges (16 bytes a row for a float32 signal, plus one range)."""
    source = open_table(merged)
    missing = [c for c in ("h", "k", "l") if c not in source.columns]
    if missing:
        raise InputError(f"{merged!r} lacks the columns {missing}; is it a merged hkl table?")
    if signal not in source.columns or signal in ("h", "k", "l", "ndiv"):
        choices = [c for c in source.columns if c not in ("h", "k", "l", "ndiv")]
        raise InputError(f"{merged!r} has no column {signal!r} to map; its columns are {choices}")
    n = source.n_rows
    hkl = np.empty((3, n), dtype=np.int32)
    values = None
    for start in range(0, max(n, 1), _READ_ROWS):
        stop = min(start + _READ_ROWS, n)
        rows = source.read(start, stop, ["h", "k", "l", signal])
        for i, (col, nd) in enumerate(zip("hkl", source.ndiv, strict=True)):
            ints = np.round(np.asarray(rows[col], dtype=np.float64) * nd)  # float64, as mdx2 (x * np.int64)
            if ints.size and np.abs(ints).max() > KEY_LIMIT:
                raise InputError(f"{merged!r}: column {col!r} x ndiv reaches beyond +-{KEY_LIMIT}")
            hkl[i, start:stop] = ints
        column = np.asarray(rows[signal])
        if values is None:
            values = np.empty(n, dtype=column.dtype)
        values[start:stop] = column
    repeated = count_repeated(hkl)
    if repeated:
        raise InputError(
            f"{merged!r} has {repeated} repeated (h, k, l) rows; map expects a merged table (one row "
            "per voxel, as mdx2.merge writes), not an integrated or corrected one"
        )
    return hkl, values, tuple(int(x) for x in source.ndiv)


def plan_blocks(shape: tuple[int, int, int], cells_per_task: int) -> list[tuple[int, int]]:
    """Ranges of H planes of about ``cells_per_task`` points each (at least one plane)."""
    planes = max(1, cells_per_task // max(1, shape[1] * shape[2]))
    return [(h0, min(h0 + planes, shape[0])) for h0 in range(0, shape[0], planes)]


def _block(h0: int, h1: int, index: TableIndex | Orbits, model: MapModel) -> np.ndarray:
    if isinstance(index, Orbits):
        return map_block_orbits(model.axes, h0, h1, index, model.use_numba)
    try:
        return map_block(model.axes, h0, h1, index, model.ops, model.asu, model.symmetry)
    except ValueError as exc:  # no operator maps a point into the ASU: inconsistent symmetry
        raise InputError(f"map, H planes {h0}:{h1}: {exc}") from exc


def _record(i: int, h0: int, block: np.ndarray) -> dict:
    return {"index": i, "h0": h0, "planes": block.shape[0], "filled": int(np.count_nonzero(~np.isnan(block)))}


def run_map_task(
    i: int, h0: int, h1: int, index: TableIndex | Orbits, model: MapModel, part_dir: str
) -> dict:
    """(Cluster executor) map H planes ``h0:h1``; write ``part-<i>.npy`` into ``part_dir``."""
    block = _block(h0, h1, index, model)
    save_npy_atomic(Path(part_dir) / f"part-{i:05d}.npy", block)
    return _record(i, h0, block)


def run_map(params: MapParams, client=None, progress=None, threads: int | None = None) -> MapResult:
    """Make the map of ``params``: on ``client``'s cluster, or in this process with ``threads`` threads."""
    t0 = time.perf_counter()
    check_output_path(params.outfile, params.overwrite)
    if params.png_path:
        check_output_path(params.png_path, params.overwrite)
    symmetry = read_symmetry(params.geometry)  # read even without symmetry, as mdx2.map does
    hkl, values, ndiv = load_table(params.merged, params.signal)
    try:
        axes = grid_axes(params.limits, ndiv)
    except ValueError as exc:
        raise InputError(
            f"--limits {' '.join(f'{x:g}' for x in params.limits)} with ndiv {ndiv}: {exc}"
        ) from exc
    model = MapModel(
        axes,
        symmetry.laue_group_operators,
        parse_miller_expression(symmetry.reciprocal_space_asu),
        params.symmetry,
    )
    blocks = plan_blocks(axes.shape, params.cells_per_task)
    if min(axes.shape) == 1:  # a slice: numpy, thinnest axis first, beats numba's start-up
        model = dataclasses.replace(model, use_numba=False)
    lookup = _task_input(hkl, values, model)
    table_rows, dtype = hkl.shape[1], map_dtype(values.dtype)
    del hkl, values  # the tasks' input is ``lookup``
    log.info(
        "map %s of %r: grid %s (%d points) in %d blocks; table %d rows (%s)",
        params.signal, params.merged, "x".join(map(str, axes.shape)), int(np.prod(axes.shape)), len(blocks),
        table_rows, "rows sent to their orbits" if isinstance(lookup, Orbits) else "pointwise lookup",
    )  # fmt: skip
    seconds = {"plan": time.perf_counter() - t0}
    bar = progress("map", len(blocks)) if progress else None
    t = time.perf_counter()
    planes = blocks[0][1] - blocks[0][0]
    with MapWriter(
        params.outfile, params.signal, tuple(axes.axis(i) for i in range(3)), dtype, planes
    ) as writer:
        if client is None:
            records = _run_threads(blocks, lookup, model, writer, bar, threads)
        else:
            records = _run_cluster(params, blocks, lookup, model, writer, bar, client)
        seconds["map"] = time.perf_counter() - t
        complete = writer.finish()
        png = None
        if params.png_path:  # drawn before the map is published: a failed PNG leaves neither
            from pipeline.qc.map_slice import plot_map_slice

            t = time.perf_counter()
            png = str(plot_map_slice(complete, params.png_path, params.signal))
            seconds["png"] = time.perf_counter() - t
        writer.commit()
    seconds["total"] = time.perf_counter() - t0
    return MapResult(
        params.outfile,
        png,
        axes.shape,
        sum(r["filled"] for r in records),
        table_rows,
        len(blocks),
        {k: round(v, 3) for k, v in seconds.items()},
    )


def _run_threads(blocks, index, model, writer, bar, threads) -> list[dict]:
    import dask
    import dask.threaded

    def task(i, h0, h1):
        block = _block(h0, h1, index, model)
        writer.write(h0, block)
        if bar is not None:
            bar.advance()
        return _record(i, h0, block)

    tasks = [dask.delayed(task, pure=False)(i, h0, h1) for i, (h0, h1) in enumerate(blocks)]
    return list(dask.compute(*tasks, scheduler=dask.threaded.get, num_workers=threads))


def _run_cluster(params, blocks, index, model, writer, bar, client) -> list[dict]:
    anchor = Path(params.outfile)
    fingerprint = {"inputs": fingerprint_files([params.geometry, params.merged]), "run": uuid.uuid4().hex}
    work = WorkDir(anchor.with_name(f".{anchor.name}.work"), fingerprint, resume=False)
    try:
        index_future = client.scatter(index, broadcast=True)
        records = []
        with run_tasks(
            client, run_map_task, range(len(blocks)), [a for a, _ in blocks], [b for _, b in blocks],
            index=index_future, model=model, part_dir=str(work.reduce_dir), name="map", bar=bar,
        ) as results:  # fmt: skip
            for r in results:
                part = work.reduce_file(r["index"])
                writer.write(r["h0"], np.load(part))
                part.unlink()
                records.append(r)
    finally:
        work.remove()
    return records
