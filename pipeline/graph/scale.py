"""Wire ``scale`` on dask: the corrected rows are range-partitioned by reflection (H), so every pass
over the rows merges inside its partition and returns only model-sized normal equations.

mdx2.scale's refinement (``mdx2/command_line/scale.py``) is a sequence of stages (b, then b+c, c, d,
a, as enabled; optionally first on a subsample, ``--prescale.*``); each stage iterates
``apply -> merge -> fit`` until the chi-square stops falling, then masks outliers.

* **load**: tasks read row ranges and sort their rows by ``H = round(h * ndiv)`` (stable); the driver
  cuts H into ranges of about ``rows_per_partition`` rows; a task per range gathers its rows from every
  run in table order and numbers its reflections locally (every row of a reflection is in one
  partition), masks singletons and reports the coordinate extents that set the model grids.
* **pass** (one per fitted model per iteration): a task brings its rows' model values up to date (the
  models are small and shipped with the task), merges its reflections (``Im`` stays with the
  partition), optionally masks outliers, and returns the normal equations of the model being fitted
  (``kernels/scaling_fit.accumulate``: ``n_params x 3**d`` per batch, whatever the number of rows);
  the driver adds the regularisers and solves with mdx2's LSQR.

The isotropic prescale groups rows by ``floor(s * 1000)``; those groups span partitions, so there a
merge pass returns per-group sums (at most 65 536) and ``Im`` is shipped back with the fit pass.
Partitions are dicts of numpy columns (float32 as in the file) plus the per-row state mdx2 keeps: the
mask and each model's interpolated value. Without a cluster they live in this process (spilled to a
work directory when the input is large) and tasks run on threads; with one they are futures held by
the workers.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import operator
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.io.tables import TableSource, open_table
from pipeline.kernels import scaling_fit as sf
from pipeline.kernels.scaling_models import AbsorptionModel, DetectorModel, OffsetModel, ScalingModel

__all__ = ["Model", "Models", "ScaleResult", "fit_scales", "interp_values"]

log = logging.getLogger(__name__)

COLUMNS = ("h", "k", "l", "s", "intensity", "intensity_error", "ix", "iy", "phi")
FAN_IN = 8  # partial sums combined per reduction task
SPILL_ROWS = 10_000_000  # larger inputs keep their partitions in a work directory between passes


# ------------------------------------------------------------------------------------------ models


@dataclass(frozen=True, eq=False)
class Model:
    """One fitted (or not yet fitted, ``u is None``) model: control-point axes and values."""

    kind: str  # "scaling" (phi) | "absorption" (ix, iy, phi) | "offset" (s, phi) | "detector" (ix, iy)
    axes: tuple[np.ndarray, ...]
    u: np.ndarray | None = None  # shape = axis sizes (Fortran order when flattened)
    version: int = 0

    @property
    def grid(self) -> sf.Grid:
        return sf.Grid(self.axes)

    def coords(self, part: dict) -> tuple[np.ndarray, ...]:
        return tuple(part[c] for c in COORDS[self.kind])

    def to_model(self):
        """The model as :mod:`pipeline.kernels.scaling_models` has it (what scales.nxs holds)."""
        cls = MODEL_CLASSES[self.kind]
        return cls(*self.axes, u=self.u)

    def with_u(self, flat: np.ndarray) -> Model:
        return replace(self, u=flat.reshape(self.grid.shape, order="F"), version=self.version + 1)


COORDS = {
    "scaling": ("phi",),
    "absorption": ("ix", "iy", "phi"),
    "offset": ("s", "phi"),
    "detector": ("ix", "iy"),
}
MODEL_CLASSES = {
    "scaling": ScalingModel,
    "absorption": AbsorptionModel,
    "offset": OffsetModel,
    "detector": DetectorModel,
}
LETTER = {"absorption": "a", "scaling": "b", "offset": "c", "detector": "d"}


def interp_values(model: Model, coords) -> np.ndarray:
    """mdx2's ``model.interp(coords)`` (float32 like the coordinates, zero outside the grid)."""
    return model.to_model().interp(*coords)


@dataclass(frozen=True, eq=False)
class Models:
    """The models of every batch (input file): ``per_batch[b][kind]`` and the shared detector model."""

    per_batch: tuple[dict, ...]
    detector: Model | None = None

    def of(self, batch: int, kind: str) -> Model | None:
        if kind == "detector":
            return self.detector
        return self.per_batch[batch].get(kind)


# -------------------------------------------------------------------------------- partition tasks

ROW_ARRAYS = ("I", "sigma", "phi", "ix", "iy", "s", "ih", "mask", "Im")
RUN_COLUMNS = ("I", "sigma", "phi", "ix", "iy", "s", "hi", "ki", "li")
ISOTROPIC_GROUPS = 65536  # mdx2's isotropic prescale groups: floor(s * 1000) as uint16


def _save(directory: str, name: str, arr: np.ndarray) -> str:
    path = os.path.join(directory, f"{name}-{uuid.uuid4().hex[:12]}.npy")
    np.save(path, np.ascontiguousarray(arr))
    return path


def _hydrate(part: dict) -> dict:
    """A partition with its row arrays in memory (read from the work directory when spilled)."""
    if part.get("dir") is None:
        return part
    full = {k: v for k, v in part.items() if k != "files"}
    for k, path in part["files"].items():
        full[k] = np.load(path)
    full["values"] = {k: None if v is None else (v[0], np.load(v[1])) for k, v in part["values"].items()}
    return full


def _dehydrate(full: dict, before: dict | None, spilled: dict | None) -> dict:
    """Write the row arrays a task changed to the work directory; the partition keeps only paths, so
    a partition costs memory only while a task works on it."""
    if full.get("dir") is None:
        return full
    d = full["dir"]
    files = dict(spilled["files"]) if spilled else {}
    slim = {k: v for k, v in full.items() if k not in ROW_ARRAYS and k != "values"}
    for k in ROW_ARRAYS:
        same = before is not None and k in before and before[k] is full.get(k)
        if k in full and not same:
            old = files.get(k)
            files[k] = _save(d, f"p{full['index']:05d}-{k}", full[k])
            if old:
                os.unlink(old)
        elif k not in full and k in files:
            os.unlink(files.pop(k))
    values = dict(spilled["values"]) if spilled else {}
    for kind, v in full.get("values", {}).items():
        prev = before["values"].get(kind) if before is not None else None
        if prev is not None and v is not None and prev[1] is v[1]:
            continue
        old = values.get(kind)
        values[kind] = None if v is None else (v[0], _save(d, f"p{full['index']:05d}-{kind}", v[1]))
        if old is not None:
            os.unlink(old[1])
    slim["files"] = files
    slim["values"] = values
    return slim


def _spilling(func):
    """Run a partition task on the hydrated partition; spill what it changed. A task returning
    ``(partition, {"t": {...}})`` gets the time spent reading and writing spilled arrays in ``t["io"]``."""

    def wrapped(part, *args, **kwargs):
        t = time.perf_counter()
        full = _hydrate(part)
        io = time.perf_counter() - t
        out = func(full, *args, **kwargs)
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], dict) and "segs" in out[0]:
            t = time.perf_counter()
            slim = _dehydrate(out[0], full, part if part.get("dir") else None)
            io += time.perf_counter() - t
            if isinstance(out[1], dict) and "t" in out[1]:
                out[1]["t"]["io"] = out[1]["t"].get("io", 0.0) + io
            return slim, out[1]
        return out

    wrapped.__name__ = func.__name__
    wrapped.__qualname__ = func.__qualname__
    return wrapped


def _read_run(
    source: TableSource, start: int, stop: int, batch: int, ndiv, subsample: int, group: str, rundir
):
    """Read rows ``start:stop`` of one table (every ``subsample``-th row of the table, as mdx2's
    ``tab[::subsample]``); with ``group == "hkl"`` sort them by ``round(h * ndiv)`` (stable: table order
    within an H value) so that contiguous H ranges can be cut from every run. Returns the run: its
    columns (or their files in ``rundir``) and the rows per H value."""
    rows = source.read(start, stop, COLUMNS)
    I, sigma = np.asarray(rows["intensity"]), np.asarray(rows["intensity_error"])
    inf = np.flatnonzero(np.isinf(sigma) | np.isinf(I))
    if inf.size:
        raise InputError(
            f"{source.path!r}: intensity or intensity_error is infinite in {inf.size} rows (first at row "
            f"{start + inf[0]}); the integrated table had rows with seconds == 0. Integrate again with "
            "--exposure-time S (or drop those frames) and correct again."
        )
    sl = slice((-start) % subsample, None, subsample) if subsample > 1 else slice(None)
    cols = {"I": I[sl], "sigma": sigma[sl]}
    for c in ("phi", "ix", "iy", "s"):
        cols[c] = np.asarray(rows[c])[sl]
    run = {"batch": batch, "rows": int(cols["I"].size), "h_lo": 0, "h_counts": np.zeros(0, np.int64)}
    if group == "hkl":
        for c, n in zip("hkl", ndiv, strict=True):
            cols[c + "i"] = np.round(np.asarray(rows[c])[sl] * n).astype(np.int32)
        hi = cols["hi"]
        small = hi.size and -(2**15) <= hi.min() and hi.max() < 2**15
        order = np.argsort(hi.astype(np.int16) if small else hi, kind="stable")  # int16: radix sort
        cols = {c: v[order] for c, v in cols.items()}
        if order.size:
            run["h_lo"] = int(cols["hi"][0])
            run["h_counts"] = np.bincount(cols["hi"] - run["h_lo"])
    del rows
    if rundir is None:
        run["cols"] = cols
    else:
        run["files"] = {c: _save(rundir, f"run-{batch}-{start}-{c}", v) for c, v in cols.items()}
    return run


def _run_column(run: dict, c: str, a: int, b: int) -> np.ndarray:
    if "cols" in run:
        return run["cols"][c][a:b]
    return np.load(run["files"][c], mmap_mode="r")[a:b]


def _assemble(pieces, index: int, workdir, group: str):
    """One partition: the rows ``a:b`` of each run in ``pieces`` (runs in table order, batches in
    order), i.e. every row of a range of H values; its reflections are numbered locally. With
    ``group == "hkl"`` a reflection's rows are all here, so singletons are masked at once; with
    ``"s"`` (isotropic prescale) groups span partitions and the counts are returned instead."""
    cols = {}
    names = RUN_COLUMNS if group == "hkl" else RUN_COLUMNS[:6]
    for c in names:
        parts = [_run_column(run, c, a, b) for run, a, b in pieces]
        cols[c] = np.concatenate(parts) if len(parts) != 1 else np.array(parts[0])
    segs = []
    lo = 0
    for run, a, b in pieces:
        if segs and segs[-1][0] == run["batch"]:
            segs[-1] = (run["batch"], segs[-1][1], lo + b - a)
        else:
            segs.append((run["batch"], lo, lo + b - a))
        lo += b - a
    part = {c: cols[c] for c in RUN_COLUMNS[:6]}
    if group == "hkl":
        hkl = [cols[c].astype(np.int64) for c in ("hi", "ki", "li")]
        del cols
        for j in range(3):
            hkl[j] -= hkl[j].min() if hkl[j].size else 0
        size = tuple(int(v.max()) + 1 if v.size else 1 for v in hkl)
        keys = np.ravel_multi_index(tuple(hkl), size)
        del hkl
        order = np.argsort(keys)  # any numbering of the reflections will do: not a stable sort
        sk = keys[order]
        step = np.empty(sk.size, np.int64)
        if sk.size:
            step[0] = 0
            np.not_equal(sk[1:], sk[:-1], out=step[1:])
        gid = np.cumsum(step)
        ih = np.empty(keys.size, np.int64)
        ih[order] = gid
        n_groups = int(gid[-1]) + 1 if gid.size else 0
        del keys, order, sk, step, gid
    else:
        ih = np.floor(part["s"] * 1000).astype(np.uint16).astype(np.int64)  # mdx2's isotropic grouping
        n_groups = ISOTROPIC_GROUPS
    sigma, I = part["sigma"], part["I"]
    part.update(
        ih=ih,
        mask=np.isnan(I) | np.isnan(sigma) | (sigma == 0) | np.isinf(sigma),
        n_groups=n_groups,
        segs=segs,
        index=index,
        dir=workdir,
        values={},
    )
    counts = np.bincount(ih, weights=~part["mask"], minlength=n_groups)
    if group == "hkl":
        part, stats = _singletons(part, counts)
        return _dehydrate(part, None, None), stats
    return _dehydrate(part, None, None), counts


def _singletons(part: dict, counts: np.ndarray) -> tuple[dict, list]:
    """Mask rows whose reflection has one unmasked observation; per-batch masked min/max of coordinates."""
    part = dict(part)
    mask = part["mask"]
    single = (counts <= 1)[part["ih"]] & ~mask
    part["mask"] = mask | single
    keep = ~part["mask"]
    out = []
    for batch, lo, hi in part["segs"]:
        k = keep[lo:hi]
        stats = {"n": int(k.sum()), "singletons": int(single[lo:hi].sum()), "batch": batch, "rows": hi - lo}
        for c in ("phi", "ix", "iy", "s"):
            v = part[c][lo:hi][k]
            stats[c] = (v.min(), v.max()) if v.size else None
        out.append(stats)
    return part, out


_singletons_task = _spilling(_singletons)


def _refresh(part: dict, models: Models) -> dict:
    """Recompute the model values whose model changed since this partition last saw it (each batch's
    rows with its batch's model)."""
    values = dict(part["values"])
    changed = False
    for kind in LETTER:
        ms = [models.of(b, kind) for b, _, _ in part["segs"]]
        if any(m is None or m.u is None for m in ms):
            key = None
        else:
            key = tuple((id(m.axes), m.version) for m in ms)
        old = values.get(kind)
        if (old is None and key is None) or (old is not None and old[0] == key):
            continue
        changed = True
        if key is None:
            values[kind] = None
        elif len(ms) == 1:
            values[kind] = (key, interp_values(ms[0], ms[0].coords(part)))
        else:
            segs = [
                interp_values(m, tuple(c[lo:hi] for c in m.coords(part)))
                for m, (_, lo, hi) in zip(ms, part["segs"], strict=True)
            ]
            values[kind] = (key, np.concatenate(segs))
    if not changed:
        return part
    part = dict(part)
    part["values"] = values
    return part


def _value(part: dict, kind: str):
    v = part["values"].get(kind)
    return None if v is None else v[1]


def _prod(*factors):
    """mdx2's ``a * b * d`` with absent factors (python 1.0) left out: float32 arithmetic, left to right."""
    out = None
    for f in factors:
        if f is not None:
            out = f if out is None else out * f
    return out


def _scale_offset(part: dict) -> tuple[np.ndarray, np.ndarray]:
    """mdx2's ``apply()``: float32 ``scale = a*b*d`` and ``offset = c/b`` (stored into float32 arrays)."""
    a, b, c, d = (_value(part, k) for k in ("absorption", "scaling", "offset", "detector"))
    n = part["I"].size
    prod = _prod(a, b, d)
    scale = np.ones(n, np.float32) if prod is None else np.asarray(prod, dtype=np.float32)
    if c is None:
        offset = np.zeros(n, np.float32)
    else:
        with np.errstate(all="ignore"):
            offset = np.asarray(c if b is None else c / b, dtype=np.float32)
    return scale, offset


def _merge_sums(part: dict, n_groups: int):
    """mdx2's ``ScaledData.merge`` sums (count, sum of w, sum of w I) of the partition's unmasked rows."""
    scale, offset = _scale_offset(part)
    return sf.merge_sums(part["I"], part["sigma"], scale, offset, part["mask"], part["ih"], n_groups)


def _merged(sums) -> np.ndarray:
    """``Im = sum(w I) / sum(w)``; NaN where mdx2's masked division masks it (no rows, a non-finite
    quotient, or ``|sum w| <= |sum w I| * tiny``)."""
    counts, wm, Iw = sums
    with np.errstate(all="ignore"):
        Im = Iw / wm
        bad = (counts == 0) | ~np.isfinite(Im) | (np.abs(Iw) * np.finfo(float).tiny >= np.abs(wm))
    Im[bad] = np.nan
    return Im


def _predict(factor, Im_r, offset):
    """mdx2's ``scale * (Imerge[ih] + offset)`` with a masked ``Imerge``: numpy.ma leaves the first
    operand's data, ``scale``, where ``Imerge`` is masked (NaN here), and the fit uses it."""
    p = factor * (Im_r + offset)
    bad = np.isnan(Im_r)
    if bad.any():
        p = np.where(bad, factor, p)
    return p


def _mask_outliers(part: dict, Im: np.ndarray, nsigma: float) -> tuple[dict, int]:
    scale, offset = _scale_offset(part)
    with np.errstate(all="ignore"):
        resid = (scale * (Im[part["ih"]] + offset) - part["I"]) / part["sigma"]
    out = (resid > nsigma) & ~part["mask"]
    part = dict(part)
    part["mask"] = part["mask"] | out
    return part, int(out.sum())


@_spilling
def merge_sums_task(part: dict, models: Models, n_groups: int):
    """Global grouping (isotropic prescale): the partition's merge sums over every group."""
    part = _refresh(part, models)
    return part, {"sums": _merge_sums(part, n_groups), "t": {}}


@_spilling
def pass_task(part: dict, models: Models, kind: str | None, merge: bool, Im, nsigma):
    """One pass over a partition's rows: bring model values up to date (mdx2's ``apply``); with
    ``merge``, merge its reflections (all their rows are here) and keep ``Im``; with ``nsigma``, mask
    outliers against ``Im``; with ``kind``, return that model's normal equations (``calc_problem``).
    ``Im`` is given for global grouping (isotropic prescale), else the partition's own is used."""
    t = {}
    c0 = time.perf_counter()
    part = _refresh(part, models)
    c1 = time.perf_counter()
    t["apply"] = c1 - c0
    if merge:
        part = dict(part)
        part["Im"] = _merged(_merge_sums(part, part["n_groups"]))
        c0, c1 = c1, time.perf_counter()
        t["merge"] = c1 - c0
    Im = part["Im"] if Im is None else Im
    removed = 0
    if nsigma is not None:
        part, removed = _mask_outliers(part, Im, nsigma)
        c0, c1 = c1, time.perf_counter()
        t["outliers"] = c1 - c0
    nes = {}
    if kind is not None:
        nes = _normal_equations(part, models, kind, Im)
        c0, c1 = c1, time.perf_counter()
        t["normal_equations"] = c1 - c0
    return part, {"ne": nes, "removed": removed, "t": t}


def _normal_equations(part: dict, models: Models, kind: str, Im: np.ndarray) -> dict:
    """The partition's contribution to the normal equations of ``kind`` (mdx2's ``calc_problem``), per
    batch (``"all"`` for the detector model, shared by the batches)."""
    a, b, c, d = (_value(part, k) for k in ("absorption", "scaling", "offset", "detector"))
    keep = ~part["mask"]
    I0 = part["I"][keep]
    s0 = part["sigma"][keep]
    Im_r = Im[part["ih"][keep]]

    def sel(v):
        return None if v is None else v[keep]

    a, b, c, d = sel(a), sel(b), sel(c), sel(d)
    with np.errstate(all="ignore"):
        if kind == "scaling":
            sc = _prod(a, d)
            sc64 = np.float64(1.0) if sc is None else sc.astype(np.float64)  # mdx2: a float64 array
            off64 = 0.0 if c is None else c.astype(np.float64)
            I = I0 / sc64 - off64
            sigma = s0 / sc64
            q = _predict(1.0, Im_r, 0.0) / sigma
            y = I / sigma
        elif kind == "offset":
            b64 = 1.0 if b is None else b.astype(np.float64)
            Ipred = _predict(b64, Im_r, 0.0)
            sc = _prod(a, d)
            sc64 = np.float64(1.0) if sc is None else sc.astype(np.float64)  # mdx2: a float64 array
            I = I0 / sc64
            sigma = s0 / sc64
            q = 1 / sigma
            y = (I - Ipred) / sigma
        elif kind == "absorption":
            sc = _prod(b, d)
            sc64 = np.float64(1.0) if sc is None else sc.astype(np.float64)  # mdx2: a float64 array
            off = None if c is None else (c if b is None else c / b)
            off64 = 0.0 if off is None else off.astype(np.float64)
            Ipred = _predict(sc64, Im_r, off64)
            I = I0.astype(np.float64)
            sigma = s0.astype(np.float64)
            q = Ipred / sigma
            y = I / sigma
        else:  # detector: mdx2 passes the batches' a, b, c concatenated as float64 arrays
            a64, b64, c64 = (None if v is None else v.astype(np.float64) for v in (a, b, c))
            sc = _prod(a64, b64)
            sc64 = 1.0 if sc is None else sc
            off64 = 0.0 if c64 is None else (c64 if b64 is None else c64 / b64)
            Ipred = _predict(sc64, Im_r, off64)
            I = I0.astype(np.float64)
            sigma = s0.astype(np.float64)
            q = Ipred / sigma
            y = I / sigma
    q = np.broadcast_to(q, I0.shape)
    if kind == "detector":
        coords = tuple(part[k][keep] for k in COORDS[kind])
        return {"all": sf.accumulate(models.detector.grid, coords, q, y)}
    out = {}
    edges = np.concatenate(([0], np.cumsum(keep)))  # kept rows before each row
    for batch, lo, hi in part["segs"]:
        klo, khi = int(edges[lo]), int(edges[hi])
        sub = keep[lo:hi]
        coords = tuple(part[k][lo:hi][sub] for k in COORDS[kind])
        ne = sf.accumulate(models.of(batch, kind).grid, coords, q[klo:khi], y[klo:khi])
        out[batch] = ne if batch not in out else out[batch] + ne
    return out


# ----------------------------------------------------------------------------------- executors


def _add(*items):
    return sum(items[1:], items[0])


def _add_dicts(*items):
    out = {}
    for d in items:
        for k, v in d.items():
            out[k] = v if k not in out else out[k] + v
    return out


def _concat(*lists):
    return list(itertools.chain.from_iterable(lists))


def _combine_pass(*items):
    t = {}
    for it in items:
        for k, v in it["t"].items():
            t[k] = t.get(k, 0.0) + v
    return {
        "ne": _add_dicts(*(it["ne"] for it in items)),
        "removed": sum(it["removed"] for it in items),
        "t": t,
    }


def _combine_sums(*items):
    sums = tuple(np.sum([it["sums"][j] for it in items], axis=0) for j in range(3))
    return {"sums": sums, "t": {}}


class _Tree:
    """A tree reduction fed in partition order: groups of ``fan_in`` are combined as soon as they are
    complete, so at most ``fan_in`` partial sums per level are alive (not one per partition). In this
    process ``fan_in`` is 2: a merge pass's partial sums are merged-table sized (770 MB at 32 M
    reflections), so only the running sum and the one arriving are held."""

    def __init__(self, combine, fan_in: int = 2):
        self.combine = combine
        self.fan_in = fan_in
        self.levels: list[list] = []

    def add(self, item, level=0):
        while len(self.levels) <= level:
            self.levels.append([])
        self.levels[level].append(item)
        if len(self.levels[level]) == self.fan_in:
            items, self.levels[level] = self.levels[level], []
            self.add(self.combine(*items), level + 1)

    def result(self):
        carry = None
        for items in self.levels:
            items = items + ([carry] if carry is not None else [])
            if items:
                carry = items[0] if len(items) == 1 else self.combine(*items)
        return carry


class _Local:
    """Partitions in this process; tasks on a pool of threads (numpy and numba release the GIL);
    partial sums are reduced in partition order as they arrive."""

    def __init__(self, threads: int | None):
        self.threads = threads or os.cpu_count() or 1

    def _stream(self, func, parts, args, kwargs):
        """Yield ``(index, result)`` in partition order, keeping at most ``threads + 1`` tasks in flight."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.threads) as pool:
            pending = {}
            it = iter(enumerate(parts))
            for i, p in itertools.islice(it, self.threads + 1):
                pending[i] = pool.submit(func, p, *args, **kwargs)
            nxt = 0
            while pending:
                result = pending.pop(nxt).result()
                for i, p in itertools.islice(it, 1):
                    pending[i] = pool.submit(func, p, *args, **kwargs)
                yield nxt, result
                nxt += 1

    def run(self, func, parts, *args, **kwargs):
        return [r for _, r in self._stream(func, parts, args, kwargs)]

    def update(self, func, parts, combine, *args, **kwargs):
        tree = _Tree(combine)
        new = []
        for _, (part, partial) in self._stream(func, parts, args, kwargs):
            new.append(part)
            tree.add(partial)
        return new, tree.result()

    def map_reduce(self, func, parts, combine, *args, **kwargs):
        tree = _Tree(combine)
        for _, partial in self._stream(func, parts, args, kwargs):
            tree.add(partial)
        return tree.result()

    def scatter(self, value):
        return value


class _Cluster:
    """Partitions as futures on the workers; partial sums combined by a tree of reduction tasks."""

    def __init__(self, client):
        self.client = client

    def _tree(self, futures, combine, name):
        token = uuid.uuid4().hex[:12]
        level = 0
        while len(futures) > 1:
            futures = [
                self.client.submit(
                    combine, *futures[i : i + FAN_IN], pure=False, key=f"{name}-sum-{level}-{i}-{token}"
                )
                for i in range(0, len(futures), FAN_IN)
            ]
            level += 1
        return futures[0].result()

    def update(self, func, parts, combine, *args, **kwargs):
        outs = self.client.map(func, parts, *[[a] * len(parts) for a in args], pure=False, **kwargs)
        new = [self.client.submit(operator.getitem, o, 0, pure=False) for o in outs]
        partials = [self.client.submit(operator.getitem, o, 1, pure=False) for o in outs]
        result = self._tree(partials, combine, func.__name__)
        del outs
        return new, result

    def map_reduce(self, func, parts, combine, *args, **kwargs):
        outs = self.client.map(func, parts, *[[a] * len(parts) for a in args], pure=False, **kwargs)
        return self._tree(outs, combine, func.__name__)

    def scatter(self, value):
        return self.client.scatter(value, broadcast=True)


# --------------------------------------------------------------------------------------- driver


@dataclass
class ScaleResult:
    models: Models
    rows: int
    masked: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    outfiles: list = field(default_factory=list)
    report: object = None


@dataclass
class _Data:
    """Loaded rows: partitions (in memory, spilled, or futures), how they group, per-segment stats."""

    parts: list
    local: bool  # every reflection's rows lie in one partition (hkl grouping): merge sums stay there
    n_groups: int  # global grouping only
    stats: list
    rows: int


def _open(paths):
    """Open the tables and check them."""
    sources = [open_table(p) for p in paths]
    ndiv = sources[0].ndiv
    for s in sources:
        missing = [c for c in COLUMNS if c not in s.columns]
        if missing:
            raise InputError(f"{s.path!r} lacks the corrected columns {missing}; is it a corrected table?")
        if tuple(s.ndiv) != tuple(ndiv):
            raise InputError(
                f"{s.path!r} has ndiv {tuple(s.ndiv)}, but {sources[0].path!r} has {tuple(ndiv)}"
            )
        if s.n_rows == 0:
            raise InputError(f"{s.path!r} has no rows: nothing to scale")
    return sources


def _h_ranges(runs, rows_per_part: int) -> list[tuple[int, int]]:
    """Contiguous ranges of H (``round(h * ndiv)``) holding about ``rows_per_part`` rows each."""
    used = [r for r in runs if r["rows"]]
    lo = min(r["h_lo"] for r in used)
    hi = max(r["h_lo"] + r["h_counts"].size for r in used)
    total = np.zeros(hi - lo, np.int64)
    for r in used:
        total[r["h_lo"] - lo : r["h_lo"] - lo + r["h_counts"].size] += r["h_counts"]
    cum = np.cumsum(total)
    n = int(cum[-1])
    nparts = max(1, -(-n // rows_per_part))
    cuts = np.searchsorted(cum, np.arange(1, nparts) * (n / nparts)) + 1
    edges = np.unique(np.concatenate(([0], cuts, [total.size])))
    return [
        (lo + int(a), lo + int(b))
        for a, b in itertools.pairwise(edges)
        if cum[b - 1] > (cum[a - 1] if a else 0)
    ]


def _pieces(runs, h0: int, h1: int):
    out = []
    for r in runs:
        if not r["rows"]:
            continue
        cum = r.setdefault("cum", np.concatenate(([0], np.cumsum(r["h_counts"]))))
        m = r["h_counts"].size
        a = int(cum[min(max(h0 - r["h_lo"], 0), m)])
        b = int(cum[min(max(h1 - r["h_lo"], 0), m)])
        if b > a:
            out.append((r, a, b))
    return out


def _submit_all(ex, client, func, jobs, split: bool):
    """Run ``func(*job)`` for every job: results (or, with ``split``, partitions and gathered stats)."""
    if client is None:
        out = ex.run(lambda j: func(*j), jobs)
        return ([o[0] for o in out], [o[1] for o in out]) if split else out
    futs = [client.submit(func, *j, pure=False) for j in jobs]
    if not split:
        return client.gather(futs)
    parts = [client.submit(operator.getitem, f, 0, pure=False) for f in futs]
    stats = client.gather([client.submit(operator.getitem, f, 1, pure=False) for f in futs])
    return parts, stats


def _load_data(ex, client, sources, rows_per_part, workdir, rundir, subsample=1, group="hkl") -> _Data:
    """Read the tables into partitions: for hkl grouping, each partition holds all rows of a range of
    H values (every row of its reflections), in table order; for isotropic grouping, row ranges."""
    ndiv = sources[0].ndiv
    jobs = []
    chunk = rows_per_part * subsample
    for b, s in enumerate(sources):
        edges = [*range(0, s.n_rows, chunk), s.n_rows]
        jobs += [
            (s, lo, hi, b, ndiv, subsample, group, rundir) for lo, hi in itertools.pairwise(edges) if hi > lo
        ]
    runs = _submit_all(ex, client, _read_run, jobs, split=False)
    rows = sum(r["rows"] for r in runs)
    if rows == 0:
        raise InputError(f"{sources[0].path!r}: no rows to scale")
    try:
        if group == "hkl":
            ranges = _h_ranges(runs, rows_per_part)
            jobs = [(_pieces(runs, h0, h1), i, workdir, group) for i, (h0, h1) in enumerate(ranges)]
            parts, stats = _submit_all(ex, client, _assemble, jobs, split=True)
            return _Data(parts, True, 0, list(itertools.chain.from_iterable(stats)), rows)
        jobs = [([(r, 0, r["rows"])], i, workdir, group) for i, r in enumerate(runs) if r["rows"]]
        parts, counts = _submit_all(ex, client, _assemble, jobs, split=True)
        total = np.sum(counts, axis=0)
        parts, stats = ex.update(_singletons_task, parts, _concat, ex.scatter(total))
        return _Data(parts, False, ISOTROPIC_GROUPS, stats, rows)
    finally:
        for r in runs:
            for path in r.get("files", {}).values():
                with contextlib.suppress(OSError):
                    os.unlink(path)


def fit_scales(paths, params, client=None, threads=None, progress=None) -> ScaleResult:
    """Fit mdx2.scale's models to the corrected tables ``paths`` (one batch per table)."""
    t0 = time.perf_counter()
    ex = _Local(threads) if client is None else _Cluster(client)
    if client is None:  # numba's first dispatch (~0.5 s, even from its cache) overlaps the reading
        import threading

        from pipeline.kernels.warmup import scale_kernels

        kw = {"dtypes": (np.float32,), "dims": (1,)}  # what every run needs first (the scale model)
        threading.Thread(target=scale_kernels, kwargs=kw, daemon=True, name="scale-warmup").start()
    sources = _open(paths)
    n_rows = sum(s.n_rows for s in sources)
    spill = n_rows > SPILL_ROWS
    workdir = None
    if spill or client is not None:
        anchor = Path(params.outfile[0])
        workdir = anchor.with_name(f".{anchor.name}.work-{uuid.uuid4().hex[:8]}")
        workdir.mkdir()
        if spill:
            log.info("%d rows: partitions spilled to %s between passes", n_rows, workdir)
    try:
        return _fit(sources, params, ex, client, progress, t0, workdir and str(workdir), spill)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def _stages(params, pre=None) -> list:
    """mdx2.scale's refinement stages (letter, fits, niter, x2tol, outlier); ``pre``: the prescale
    options, which select among the enabled models as ``run_scale``'s prescaling phase does."""
    sp, op_, dp, ap = params.scaling, params.offset, params.detector, params.absorption

    def want(flag):
        return pre is None or flag

    oa = (op_.alpha_x, op_.alpha_y, op_.alpha_min)
    stages = []
    if sp.enable and want(pre and pre.scaling):
        stages.append(("b", [("scaling", (sp.alpha,))], sp.niter, sp.x2tol, sp.outlier))
    if sp.enable and op_.enable and want(pre and pre.offset and pre.scaling):
        stages.append(("bc", [("offset", oa), ("scaling", (sp.alpha,))], op_.niter, op_.x2tol, op_.outlier))
    if op_.enable and want(pre and pre.offset):
        stages.append(("c", [("offset", oa)], op_.niter, op_.x2tol, op_.outlier))
    if dp.enable and want(pre and pre.detector):
        stages.append(("d", [("detector", (dp.alpha,))], dp.niter, dp.x2tol, dp.outlier))
    if ap.enable and want(pre and pre.absorption):
        stages.append(("a", [("absorption", (ap.alpha_xy, ap.alpha_z))], ap.niter, ap.x2tol, ap.outlier))
    return stages


def _grids(params, data: _Data, paths, nb: int) -> Models:
    """Every model's control points from the masked extents of the rows (mdx2's ``add_*_model``)."""

    def extent(col, batch=None):
        vals = [s[col] for s in data.stats if s[col] is not None and (batch is None or s["batch"] == batch)]
        if not vals:
            raise InputError(
                f"{paths[batch or 0]!r}: every row is masked (NaN or zero intensity_error, singletons)"
            )
        return min(v[0] for v in vals), max(v[1] for v in vals)

    per_batch = []
    for b in range(nb):
        m = {}
        if params.scaling.enable:
            lo, hi = extent("phi", b)
            m["scaling"] = Model("scaling", (sf.calc_points(lo, hi, dx=params.scaling.dphi),))
        if params.offset.enable:
            phi = sf.calc_points(*extent("phi", b), dx=params.offset.dphi)
            s = sf.calc_points(*extent("s", b), nx=params.offset.ns, integer_limits=False)
            m["offset"] = Model("offset", (s, phi))
        if params.absorption.enable:
            phi = sf.calc_points(*extent("phi", b), dx=params.absorption.dphi)
            ix = sf.calc_points(*extent("ix", b), nx=params.absorption.nx)
            iy = sf.calc_points(*extent("iy", b), nx=params.absorption.ny)
            m["absorption"] = Model("absorption", (ix, iy, phi))
        per_batch.append(m)
    detector = None
    if params.detector.enable:
        ix = sf.calc_points(*extent("ix"), nx=params.detector.nx)
        iy = sf.calc_points(*extent("iy"), nx=params.detector.ny)
        detector = Model("detector", (ix, iy))
    return Models(tuple(per_batch), detector)


def _fit(sources, params, ex, client, progress, t0, workdir, spill) -> ScaleResult:
    paths = [s.path for s in sources]
    nb = len(sources)
    rundir = workdir if (spill or client is not None) else None
    partdir = workdir if spill else None
    rpp = params.rows_per_partition
    data = _load_data(ex, client, sources, rpp, partdir, rundir)
    log.info(
        "loaded %d rows from %d file(s) into %d partitions; %d singletons masked",
        data.rows,
        nb,
        len(data.parts),
        sum(s["singletons"] for s in data.stats),
    )
    seconds = {"load": time.perf_counter() - t0}
    models = _grids(params, data, paths, nb)
    history, masked = [], {}
    pre = params.prescale
    pre_stages = _stages(params, pre) if pre.enable else []
    total_iter = sum(s[2] for s in pre_stages) + sum(s[2] for s in _stages(params))
    bar = progress("scale", total_iter) if progress else None
    if pre_stages:
        t = time.perf_counter()
        sub = pre.subsample if pre.subsample > 1 else 1
        pdata = _load_data(
            ex, client, sources, rpp, partdir, rundir, subsample=sub, group="s" if pre.isotropic else "hkl"
        )
        log.info(
            "prescale: %d rows (every %d-th), %s grouping",
            pdata.rows,
            sub,
            "isotropic" if pre.isotropic else "hkl",
        )
        seconds["prescale_load"] = time.perf_counter() - t
        models = _refine(ex, pdata, models, pre_stages, params, bar, seconds, history, masked, "pre_")
        del pdata
    models = _refine(ex, data, models, _stages(params), params, bar, seconds, history, masked, "")
    seconds["total"] = time.perf_counter() - t0
    return ScaleResult(models, data.rows, masked, history, {k: round(v, 3) for k, v in seconds.items()})


def _refine(ex, data: _Data, models: Models, stages, params, bar, seconds, history, masked, prefix) -> Models:
    """mdx2.scale's ``refine_*_model`` stages on ``data``, each followed by ``mask_outliers`` (but the
    last, whose mask changes no model). Returns the fitted models."""
    nb = len(models.per_batch)

    def tick(key, t):
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t

    def run_pass(kind=None, merge=False, Im=None, nsigma=None, what="fit_pass"):
        t = time.perf_counter()
        data.parts, res = ex.update(pass_task, data.parts, _combine_pass, models, kind, merge, Im, nsigma)
        tick(f"{prefix}{what}", t)
        for k, v in res["t"].items():
            seconds[f"{prefix}task_{k}"] = seconds.get(f"{prefix}task_{k}", 0.0) + v
        return res

    def global_Im():
        if data.local:
            return None
        t = time.perf_counter()
        data.parts, res = ex.update(merge_sums_task, data.parts, _combine_sums, models, data.n_groups)
        tick(f"{prefix}merge_pass", t)
        return ex.scatter(_merged(res["sums"]))

    def solve(kind, nes, alphas):
        nonlocal models
        t = time.perf_counter()
        if kind == "detector":
            u, x2 = _solve(models.detector, nes["all"], alphas, params)
            models = replace(models, detector=models.detector.with_u(u))
        else:
            per_batch = list(models.per_batch)
            x2s = []
            for b in range(nb):
                m = per_batch[b][kind]
                u, x2 = _solve(m, nes[b], alphas, params)
                per_batch[b] = {**per_batch[b], kind: m.with_u(u)}
                x2s.append(x2)
            models = replace(models, per_batch=tuple(per_batch))
            x2 = float(np.mean(x2s))
        tick(f"{prefix}solve", t)
        return x2

    for si, (name, fits, niter, x2tol, nsigma) in enumerate(stages):
        t = time.perf_counter()
        old = 1e6
        done = 0
        for j in range(niter):
            Im = global_Im()
            x2 = None
            for i, (kind, alphas) in enumerate(fits):
                res = run_pass(kind, merge=data.local and i == 0, Im=Im)
                x2 = solve(kind, res["ne"], alphas)
            history.append({"stage": prefix + name, "iteration": j + 1, "x2": x2})
            log.info("%sstage %s iteration %d/%d: x2 %.6f", prefix, name, j + 1, niter, x2)
            done += 1
            if bar is not None:
                bar.advance(detail=f"{prefix}{name} x2={x2:.4f}")
            if old - x2 < x2tol:
                break
            old = x2
        for _ in range(niter - done if bar is not None else 0):
            bar.advance()
        if si < len(stages) - 1:  # the last stage's outlier mask changes no model: skipped
            Im = global_Im()
            res = run_pass(None, merge=data.local, Im=Im, nsigma=nsigma, what="outlier_pass")
            log.info("%sremoved %d outliers (>%g sigma)", prefix, res["removed"], nsigma)
            masked[f"{prefix}outliers>{nsigma:g}#{len(masked)}"] = res["removed"]
        seconds[f"{prefix}stage_{name}"] = time.perf_counter() - t
    return models


def _solve(model: Model, ne: sf.NormalEquations, alphas, params) -> tuple[np.ndarray, float]:
    """mdx2's ``fit`` of one model from its summed normal equations."""
    grid = model.grid
    AA = sf.stencil_to_sparse(grid, ne.S)
    tr = AA.trace()
    extra = 0.0
    if model.kind == "scaling":
        BB = sf.regulariser(grid.shape, "d2")
        regs = [(alphas[0] * tr / BB.trace(), BB)]
    elif model.kind == "detector":
        BB = sf.regulariser(grid.shape, "lap")
        regs = [(alphas[0] * tr / BB.trace(), BB)]
    elif model.kind == "absorption":
        BBxy = sf.regulariser(grid.shape, "lapxy")
        BBz = sf.regulariser(grid.shape, "d2z")
        regs = [(alphas[0] * tr / BBxy.trace(), BBxy), (alphas[1] * tr / BBz.trace(), BBz)]
    else:
        BBx = sf.regulariser(grid.shape, "d2x")
        BBy = sf.regulariser(grid.shape, "d2y")
        regs = [(alphas[0] * tr / BBx.trace(), BBx), (alphas[1] * tr / BBy.trace(), BBy)]
        extra = alphas[2] * np.max(AA.diagonal()) / 1.0
    t = time.perf_counter()
    u, istop, itn = sf.solve(AA, ne.Ay, regs, extra_diag=extra)
    log.debug(
        "%s model: %d parameters, lsqr stop %d after %d iterations, %.2f s",
        model.kind,
        grid.size,
        istop,
        itn,
        time.perf_counter() - t,
    )
    x2 = sf.chi2(AA, ne.Ay, ne.yy, u, ne.n)
    if model.kind == "offset" and params.offset.min is not None:
        min_c = params.offset.min
        u[u < min_c] = min_c
        u += min_c - np.min(u)
    return u, x2


def write_outputs(params, result: ScaleResult) -> list[str]:
    """One ``scales.nxs`` per input table, in mdx2's layout (the shared detector model in each)."""
    from pipeline.io.scales import Scales, write_scales

    out = []
    for b, path in enumerate(params.outfile):
        m = result.models.per_batch[b]

        def get(kind, m=m):
            model = result.models.detector if kind == "detector" else m.get(kind)
            return None if model is None or model.u is None else model.to_model()

        write_scales(path, Scales(get("scaling"), get("absorption"), get("detector"), get("offset")))
        out.append(path)
    return out
