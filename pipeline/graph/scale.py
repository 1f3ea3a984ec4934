"""Wire ``scale`` on dask: partitions of the corrected rows stay on the workers; every pass over the rows
returns model-sized (or merged-table-sized) partial sums that are combined by a tree reduction.

mdx2.scale's refinement (``mdx2/command_line/scale.py``) is a sequence of stages (b, then b+c, c, d,
a, as enabled); each stage iterates ``apply -> merge -> fit`` until the chi-square stops falling, then
masks outliers. Here one iteration is two passes over the partitions:

* **merge pass**: a task brings its rows' model values up to date (the models are small and shipped
  with the task), applies the outlier mask left pending by the previous stage, computes mdx2's float32
  ``scale`` and ``offset`` and returns ``bincount`` partial sums (count, sum of w, sum of w I) per merged
  reflection; the sums give ``Im``.
* **fit pass**: a task forms its rows' contributions to the normal equations of the model being fitted
  (``kernels/scaling_fit.accumulate``: ``n_params x 3**d`` per batch, whatever the number of rows);
  the driver adds the regularisers and solves with mdx2's LSQR.

The partitions are dicts of numpy columns (float32 as in the file) plus the per-row state mdx2 keeps:
the mask and each model's interpolated value. Without a cluster they live in this process and the
tasks run on dask's threaded scheduler; with one they are futures held by the workers.
"""

from __future__ import annotations

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


ROW_ARRAYS = ("I", "sigma", "phi", "ix", "iy", "s", "hkl", "ih", "mask")


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
    """Run a partition task on the hydrated partition; spill what it changed."""

    def wrapped(part, *args, **kwargs):
        full = _hydrate(part)
        out = func(full, *args, **kwargs)
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], dict) and "batch" in out[0]:
            return _dehydrate(out[0], full, part if part.get("dir") else None), out[1]
        return out

    wrapped.__name__ = func.__name__
    wrapped.__qualname__ = func.__qualname__
    return wrapped


def _load(source: TableSource, start: int, stop: int, batch: int, ndiv, index: int = 0, workdir=None):
    part, stats = _read(source, start, stop, batch, ndiv)
    part["index"] = index
    part["dir"] = workdir
    part["values"] = {}
    return _dehydrate(part, None, None), stats


def _read(source: TableSource, start: int, stop: int, batch: int, ndiv) -> tuple[dict, dict]:
    rows = source.read(start, stop, COLUMNS)
    part = {c: np.asarray(rows[c]) for c in COLUMNS if c not in ("h", "k", "l")}
    part["I"] = part.pop("intensity")
    part["sigma"] = part.pop("intensity_error")
    hkl = np.stack([np.round(rows[c] * n).astype(np.int64) for c, n in zip("hkl", ndiv, strict=True)])
    part["hkl"] = hkl
    part["batch"] = batch
    part["start"] = start
    part["path"] = source.path
    inf = np.flatnonzero(np.isinf(part["sigma"]) | np.isinf(part["I"]))
    if inf.size:
        raise InputError(
            f"{source.path!r}: intensity or intensity_error is infinite in {inf.size} rows (first at row "
            f"{start + inf[0]}); the integrated table had rows with seconds == 0. Integrate again with "
            "--exposure-time S (or drop those frames) and correct again."
        )
    stats = {
        "rows": stop - start,
        "min": hkl.min(axis=1) if hkl.size else np.zeros(3, np.int64),
        "max": hkl.max(axis=1) if hkl.size else np.zeros(3, np.int64),
    }
    return part, stats


def _keys(part: dict, origin, size) -> np.ndarray:
    h = part["hkl"] - np.asarray(origin)[:, None]
    return np.ravel_multi_index(tuple(h), tuple(size))


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting (numpy 2's hash-based unique is ~20x slower on millions of int64 keys)."""
    x = np.sort(x, kind="stable")
    return x[np.concatenate(([True], x[1:] != x[:-1]))] if x.size else x


@_spilling
def _unique_keys(part: dict, origin, size) -> np.ndarray:
    return _sorted_unique(_keys(part, origin, size))


@_spilling
def _index(part: dict, origin, size, keys: np.ndarray) -> tuple[dict, np.ndarray]:
    """Group index of each row (its merged reflection), mdx2's initial mask; unmasked counts per group."""
    part = dict(part)
    k = _keys(part, origin, size)
    order = np.argsort(k, kind="stable")  # sorted queries: searchsorted walks the keys once
    ih = np.empty(k.size, dtype=np.int64)
    ih[order] = np.searchsorted(keys, k[order])
    part["ih"] = ih
    del part["hkl"]
    sigma, I = part["sigma"], part["I"]
    part["mask"] = np.isnan(I) | np.isnan(sigma) | (sigma == 0) | np.isinf(sigma)
    return part, np.bincount(part["ih"], weights=~part["mask"], minlength=keys.size)


@_spilling
def _singletons(part: dict, counts: np.ndarray) -> tuple[dict, dict]:
    """Mask rows whose reflection has one unmasked observation; per-batch masked min/max of coordinates."""
    part = dict(part)
    mask = part["mask"]
    single = (counts <= 1)[part["ih"]] & ~mask
    part["mask"] = mask | single
    keep = ~part["mask"]
    stats = {"n": int(keep.sum()), "singletons": int(single.sum()), "batch": part["batch"]}
    for c in ("phi", "ix", "iy", "s"):
        v = part[c][keep]
        stats[c] = (v.min(), v.max()) if v.size else None
    return part, [stats]


def _refresh(part: dict, models: Models) -> dict:
    """Recompute the model values whose model changed since this partition last saw it."""
    values = dict(part["values"])
    changed = False
    for kind in LETTER:
        m = models.of(part["batch"], kind)
        key = None if m is None or m.u is None else (id(m.axes), m.version)
        old = values.get(kind)
        if (old is None and key is None) or (old is not None and old[0] == key):
            continue
        changed = True
        values[kind] = None if key is None else (key, interp_values(m, m.coords(part)))
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


def _mask_outliers(part: dict, Im: np.ndarray, nsigma: float) -> tuple[dict, int]:
    scale, offset = _scale_offset(part)
    with np.errstate(all="ignore"):
        resid = (scale * (Im[part["ih"]] + offset) - part["I"]) / part["sigma"]
    out = (resid > nsigma) & ~part["mask"]
    part = dict(part)
    part["mask"] = part["mask"] | out
    return part, int(out.sum())


@_spilling
def merge_task(part: dict, models: Models, outlier=None, n_groups: int = 0):
    """Refresh model values, apply a pending outlier mask, and return mdx2's merge sums for the rows."""
    part = _refresh(part, models)
    removed = 0
    if outlier is not None:
        part, removed = _mask_outliers(part, *outlier)
    scale, offset = _scale_offset(part)
    keep = ~part["mask"]
    with np.errstate(all="ignore"):
        I = part["I"][keep] / scale[keep] - offset[keep]
        sigma = part["sigma"][keep] / scale[keep]
        w = 1 / sigma**2
        Iw = I * w
    ind = part["ih"][keep]
    sums = (
        np.bincount(ind, minlength=n_groups),
        np.bincount(ind, weights=w, minlength=n_groups),
        np.bincount(ind, weights=Iw, minlength=n_groups),
    )
    return part, (sums, removed)


@_spilling
def fit_task(part: dict, models: Models, kind: str, Im: np.ndarray):
    """One partition's contribution to the normal equations of ``kind`` (mdx2's ``calc_problem``)."""
    part = _refresh(part, models)
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
            sc64 = 1.0 if sc is None else sc.astype(np.float64)
            off64 = 0.0 if c is None else c.astype(np.float64)
            I = I0 / sc64 - off64
            sigma = s0 / sc64
            q = Im_r / sigma
            y = I / sigma
        elif kind == "offset":
            b64 = 1.0 if b is None else b.astype(np.float64)
            Ipred = b64 * (Im_r + 0.0)
            sc = _prod(a, d)
            sc64 = 1.0 if sc is None else sc.astype(np.float64)
            I = I0 / sc64
            sigma = s0 / sc64
            q = 1 / sigma
            y = (I - Ipred) / sigma
        elif kind == "absorption":
            sc = _prod(b, d)
            sc64 = 1.0 if sc is None else sc.astype(np.float64)
            off = None if c is None else (c if b is None else c / b)
            off64 = 0.0 if off is None else off.astype(np.float64)
            Ipred = sc64 * (Im_r + off64)
            I = I0.astype(np.float64)
            sigma = s0.astype(np.float64)
            q = Ipred / sigma
            y = I / sigma
        else:  # detector: mdx2 passes the batches' a, b, c concatenated as float64 arrays
            a64, b64, c64 = (None if v is None else v.astype(np.float64) for v in (a, b, c))
            sc = _prod(a64, b64)
            sc64 = 1.0 if sc is None else sc
            off64 = 0.0 if c64 is None else (c64 if b64 is None else c64 / b64)
            Ipred = sc64 * (Im_r + off64)
            I = I0.astype(np.float64)
            sigma = s0.astype(np.float64)
            q = Ipred / sigma
            y = I / sigma
    model = models.of(part["batch"], kind)
    coords = tuple(part[k][keep] for k in COORDS[kind])
    ne = sf.accumulate(model.grid, coords, np.broadcast_to(q, I0.shape), y)
    key = "all" if kind == "detector" else part["batch"]
    return part, {key: ne}


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


def _union(*arrays):
    return _sorted_unique(np.concatenate(arrays))


def _combine_merge(*items):
    sums = tuple(np.sum([s[j] for s, _ in items], axis=0) for j in range(3))
    return sums, sum(r for _, r in items)


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


def _second(func):
    def wrapped(*args, **kwargs):
        return func(*args, **kwargs)[1]

    wrapped.__name__ = func.__name__
    return wrapped


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


def _load_all(ex, client, paths, rows_per_part, workdir_for):
    """Open the tables, load partitions (one batch per file), check them."""
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
    jobs = []
    for b, s in enumerate(sources):
        edges = [*range(0, s.n_rows, rows_per_part), s.n_rows]
        jobs += [(s, lo, hi, b) for lo, hi in itertools.pairwise(edges) if hi > lo]
    workdir = workdir_for(sum(s.n_rows for s in sources))
    jobs = [(*j, ndiv, i, workdir) for i, j in enumerate(jobs)]
    if client is None:
        out = ex.run(lambda j: _load(*j), jobs)
        parts = [o[0] for o in out]
        stats = [o[1] for o in out]
    else:
        outs = [client.submit(_load, *j, pure=False) for j in jobs]
        parts = [client.submit(operator.getitem, o, 0, pure=False) for o in outs]
        stats = client.gather([client.submit(operator.getitem, o, 1, pure=False) for o in outs])
    return sources, parts, stats


def fit_scales(paths, params, client=None, threads=None, progress=None) -> ScaleResult:
    """Fit mdx2.scale's models to the corrected tables ``paths`` (one batch per table)."""
    t0 = time.perf_counter()
    ex = _Local(threads) if client is None else _Cluster(client)
    spill = []

    def workdir_for(n_rows):
        if n_rows <= SPILL_ROWS:
            return None
        anchor = Path(params.outfile[0])
        d = anchor.with_name(f".{anchor.name}.work-{uuid.uuid4().hex[:8]}")
        d.mkdir()
        spill.append(d)
        log.info("%d rows: partitions spilled to %s between passes", n_rows, d)
        return str(d)

    try:
        return _fit(paths, params, ex, client, progress, t0, workdir_for)
    finally:
        for d in spill:
            shutil.rmtree(d, ignore_errors=True)


def _fit(paths, params, ex, client, progress, t0, workdir_for) -> ScaleResult:
    sources, parts, stats = _load_all(ex, client, paths, params.rows_per_partition, workdir_for)
    nb = len(sources)
    origin = np.min([s["min"] for s in stats], axis=0)
    size = np.max([s["max"] for s in stats], axis=0) - origin + 1
    keys = ex.map_reduce(_unique_keys, parts, _union, origin, size)
    n_groups = keys.size
    keys_f = ex.scatter(keys)
    parts, counts = ex.update(_index, parts, _add, origin, size, keys_f)
    parts, pstats = ex.update(_singletons, parts, _concat, counts)
    del keys_f
    log.info(
        "loaded %d rows from %d file(s); %d merged reflections; %d singletons masked",
        sum(s["rows"] for s in stats),
        nb,
        n_groups,
        sum(s["singletons"] for s in pstats),
    )
    seconds = {"load": time.perf_counter() - t0}

    def extent(col, batch=None):
        vals = [s[col] for s in pstats if s[col] is not None and (batch is None or s["batch"] == batch)]
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
    models = Models(tuple(per_batch), detector)

    history = []
    pending = None  # (Im, nsigma) of the outlier mask the next merge pass applies first
    masked = {}

    def merge():
        nonlocal parts, pending
        parts, (sums, removed) = ex.update(
            merge_task, parts, _combine_merge, models, pending, n_groups=n_groups
        )
        if pending is not None:
            log.info("removed %d outliers (>%g sigma)", removed, pending[1])
            masked[f"outliers>{pending[1]:g}#{len(masked)}"] = removed
        pending = None
        counts, wm, Iw = sums
        with np.errstate(all="ignore"):
            Im = np.where(counts > 0, Iw / wm, np.nan)
        return Im

    def fit(kind, Im, alphas):
        nonlocal parts, models
        Im_f = ex.scatter(Im)
        parts, nes = ex.update(fit_task, parts, _add_dicts, models, kind, Im_f)
        x2s = []
        if kind == "detector":
            u, x2 = _solve(models.detector, nes["all"], alphas, params)
            models = replace(models, detector=models.detector.with_u(u))
            return x2
        per_batch = list(models.per_batch)
        for b in range(nb):
            m = per_batch[b][kind]
            u, x2 = _solve(m, nes[b], alphas, params)
            per_batch[b] = {**per_batch[b], kind: m.with_u(u)}
            x2s.append(x2)
        models = replace(models, per_batch=tuple(per_batch))
        return float(np.mean(x2s))

    stages = []
    sp, op_, dp, ap = params.scaling, params.offset, params.detector, params.absorption
    if sp.enable:
        stages.append(("b", [("scaling", (sp.alpha,))], sp.niter, sp.x2tol, sp.outlier))
    if sp.enable and op_.enable:
        oa = (op_.alpha_x, op_.alpha_y, op_.alpha_min)
        stages.append(("bc", [("offset", oa), ("scaling", (sp.alpha,))], op_.niter, op_.x2tol, op_.outlier))
    if op_.enable:
        stages.append(
            ("c", [("offset", (op_.alpha_x, op_.alpha_y, op_.alpha_min))], op_.niter, op_.x2tol, op_.outlier)
        )
    if dp.enable:
        stages.append(("d", [("detector", (dp.alpha,))], dp.niter, dp.x2tol, dp.outlier))
    if ap.enable:
        stages.append(("a", [("absorption", (ap.alpha_xy, ap.alpha_z))], ap.niter, ap.x2tol, ap.outlier))
    bar = progress("scale", sum(s[2] for s in stages)) if progress else None
    for si, (name, fits, niter, x2tol, nsigma) in enumerate(stages):
        t = time.perf_counter()
        old = 1e6
        done = 0
        for j in range(niter):
            Im = merge()
            x2 = None
            for kind, alphas in fits:
                x2 = fit(kind, Im, alphas)
            history.append({"stage": name, "iteration": j + 1, "x2": x2})
            log.info("stage %s iteration %d/%d: x2 %.6f", name, j + 1, niter, x2)
            done += 1
            if bar is not None:
                bar.advance(detail=f"{name} x2={x2:.4f}")
            if old - x2 < x2tol:
                break
            old = x2
        for _ in range(niter - done if bar is not None else 0):
            bar.advance()
        if si < len(stages) - 1:  # the last stage's outlier mask changes no model: skipped
            pending = (merge(), nsigma)
        seconds[f"stage_{name}"] = time.perf_counter() - t
    rows = sum(s["rows"] for s in stats)
    seconds["total"] = time.perf_counter() - t0
    return ScaleResult(models, rows, masked, history, {k: round(v, 3) for k, v in seconds.items()})


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
