"""Summarise an hkl table in three streaming passes over row ranges (memory bounded by the block size).

1. **survey**: counts of zero/missing exposure, NaN/inf values and empty rows; the range of every
   plotted column; a uniform random sample of rows (for neighbourhood statistics and scatter plots);
2. **score**: per-row hot-pixel score against the median of its detector neighbourhood (medians from
   the sample, see :mod:`pipeline.qc.stats`); the highest-scoring rows; the largest value that is not
   a hot-pixel candidate; histograms of the value, phi and rs_volume; rows per voxel;
3. **bulk**: a linear histogram of the values up to that largest non-candidate value (the histogram
   the seed walkthrough makes by hand with ``df[df.intensity < MAX_NON_HOT_INTENSITY]``).

The table's *value* is the count rate ``counts / seconds`` (counts per pixel per second) of an
integrated table, or the ``intensity`` of a corrected one.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import InputError
from pipeline.io.tables import TableSource
from pipeline.kernels.interpolate import interp_points_3d
from pipeline.qc.stats import (
    DetectorCells,
    Histogram,
    RunLengthCounter,
    TopRows,
    VoxelCounter,
    hot_scores,
    neighbourhood_stats,
    voxel_keys,
)

__all__ = ["QCParams", "TableStats", "scan_table", "table_kind"]

log = logging.getLogger(__name__)

INTEGRATED_NEEDS = ("h", "k", "l", "phi", "iy", "ix", "seconds", "counts", "pixels")
CORRECTED_NEEDS = ("h", "k", "l", "phi", "iy", "ix", "intensity", "intensity_error", "rs_volume")


@dataclass(frozen=True)
class QCParams:
    """Knobs of the table scan (defaults suit tables from a few rows to ~10^8 rows)."""

    rows_per_block: int = 1_000_000  # rows read and processed at once
    sample_rows: int = 200_000  # random rows kept for neighbourhood medians and scatter plots
    rows_per_cell: int = 100  # sampled rows per detector neighbourhood (sets the cell grid)
    hot_score: float = 30.0  # min(robust_z, poisson_z) above which a row is a hot-pixel candidate
    max_candidates: int = 1000  # candidates listed (all are counted)
    seed: int = 0

    def __post_init__(self):
        for name in ("rows_per_block", "sample_rows", "rows_per_cell", "max_candidates"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.hot_score > 0:
            raise ValueError(f"hot_score must be > 0, got {self.hot_score!r}")


@dataclass
class TableStats:
    """What the passes found; plain numbers and small arrays, ready for checks, figures and JSON."""

    path: str
    kind: str  # "integrated" | "corrected"
    n_rows: int
    ndiv: tuple[int, int, int]
    value_name: str
    counts: dict[str, int] = field(default_factory=dict)
    ranges: dict[str, list[float]] = field(default_factory=dict)
    zero_seconds_phi: list[float] | None = None  # phi range of rows with seconds == 0
    histograms: dict[str, dict] = field(default_factory=dict)
    redundancy: list[int] = field(default_factory=list)  # redundancy[n] = voxels with n rows
    sample: dict[str, np.ndarray] = field(default_factory=dict)
    candidates: dict[str, np.ndarray] = field(default_factory=dict)
    n_candidates: int = 0
    max_non_hot: float | None = None
    min_hot: float | None = None
    candidates_below_max_non_hot: int = 0
    cells: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def suggested_threshold(self) -> float | None:
        """A value between the largest non-candidate and the smallest candidate (``keep value < t``)."""
        if self.max_non_hot is None:
            return None
        if self.min_hot is None or self.min_hot <= self.max_non_hot:
            return float(np.nextafter(self.max_non_hot, np.inf))
        lo, hi = self.max_non_hot, self.min_hot
        return float(np.sqrt(lo * hi)) if lo > 0 else (lo + hi) / 2

    @property
    def threshold_separates(self) -> bool:
        return self.n_candidates > 0 and self.candidates_below_max_non_hot == 0


def table_kind(columns) -> str:
    """``integrated`` or ``corrected``, from the columns; :class:`InputError` for anything else."""
    columns = set(columns)
    if set(INTEGRATED_NEEDS) <= columns:
        return "integrated"
    if set(CORRECTED_NEEDS) <= columns:
        return "corrected"
    raise InputError(
        f"not an integrated or corrected hkl table: columns {sorted(columns)}; expected "
        f"{list(INTEGRATED_NEEDS)} (integrated) or {list(CORRECTED_NEEDS)} (corrected)"
    )


def _blocks(source: TableSource, rows_per_block: int) -> list[tuple[int, int]]:
    """Row ranges to read: one per parquet part (the unit of parquet I/O), else fixed-size ranges."""
    if source.format == "parquet":
        bounds = np.cumsum([0, *(rows for _, rows in source.parts)])
        ranges = []
        for a, b in itertools.pairwise(bounds):
            ranges += [
                (int(s), int(min(s + rows_per_block, b))) for s in range(int(a), int(b), rows_per_block)
            ]
        return ranges
    return [(s, min(s + rows_per_block, source.n_rows)) for s in range(0, source.n_rows, rows_per_block)]


def _values(kind: str, rows: dict[str, np.ndarray]) -> np.ndarray:
    if kind == "integrated":
        with np.errstate(divide="ignore", invalid="ignore"):
            return rows["counts"] / rows["seconds"].astype(np.float64)
    return rows["intensity"].astype(np.float64)


def _errors(kind: str, rows: dict[str, np.ndarray], cell_median: np.ndarray) -> np.ndarray:
    """Standard error of each value; for count rates the Poisson error at the neighbourhood's median
    rate (a Pearson residual: no zero errors for rows with zero counts)."""
    if kind == "integrated":
        t = rows["seconds"].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(np.maximum(np.maximum(cell_median, 0) * t, 1.0)) / t
    return rows["intensity_error"].astype(np.float64)


class _Range:
    def __init__(self):
        self.lo, self.hi = np.inf, -np.inf

    def add(self, v: np.ndarray) -> None:
        v = v[np.isfinite(v)]
        if v.size:
            self.lo, self.hi = min(self.lo, float(v.min())), max(self.hi, float(v.max()))

    def get(self) -> list[float] | None:
        return [self.lo, self.hi] if self.lo <= self.hi else None


def _read_ahead(source: TableSource, blocks, columns: list[str]):
    """``(start, stop, rows)`` of every block, the next block read by a helper thread while the caller
    works on this one (reading a NeXus table or a parquet part is a third of the scan)."""
    import concurrent.futures

    if len(blocks) < 2:
        for start, stop in blocks:
            yield start, stop, source.read(start, stop, columns)
        return
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qc-read") as pool:
        ahead = pool.submit(source.read, *blocks[0], columns)
        for i, (start, stop) in enumerate(blocks):
            rows = ahead.result()
            if i + 1 < len(blocks):
                ahead = pool.submit(source.read, *blocks[i + 1], columns)
            yield start, stop, rows


def _survey(source, kind, blocks, params, stats, bar, background=None) -> dict[str, np.ndarray]:
    """Pass 1 (see the module docstring); returns the sample."""
    rng = np.random.default_rng(params.seed)
    p = min(1.0, params.sample_rows / max(source.n_rows, 1))
    extra = ["seconds", "counts", "pixels"] if kind == "integrated" else ["intensity", "intensity_error"]
    cols = ["phi", "iy", "ix", *extra] + (["rs_volume"] if kind == "corrected" else [])
    ranges = {name: _Range() for name in ("value", "phi", "iy", "ix", "rs_volume", "pixels")}
    c = dict.fromkeys(
        [
            "value_nan",
            "value_posinf",
            "value_neginf",
            "error_nonfinite",
            "nan_value_finite_error",
            "nonfinite_value_nonfinite_error",
            "zero_seconds",
            "negative_seconds",
            "nan_seconds",
            "zero_pixels",
            "zero_counts",
            "negative_values",
            "zero_rs_volume",
        ],
        0,
    )
    zero_phi = _Range()
    sample: dict[str, list] = {}
    for _, _, rows in _read_ahead(source, blocks, cols):
        v = _values(kind, rows)
        c["value_nan"] += int(np.count_nonzero(np.isnan(v)))
        c["value_posinf"] += int(np.count_nonzero(v == np.inf))
        c["value_neginf"] += int(np.count_nonzero(v == -np.inf))
        c["negative_values"] += int(np.count_nonzero(v < 0))
        if kind == "integrated":
            t = rows["seconds"]
            zero = t == 0
            c["zero_seconds"] += int(np.count_nonzero(zero))
            c["negative_seconds"] += int(np.count_nonzero(t < 0))
            c["nan_seconds"] += int(np.count_nonzero(np.isnan(t)))
            c["zero_pixels"] += int(np.count_nonzero(rows["pixels"] == 0))
            c["zero_counts"] += int(np.count_nonzero(rows["counts"] == 0))
            zero_phi.add(rows["phi"][zero].astype(np.float64))
            ranges["pixels"].add(rows["pixels"].astype(np.float64))
        else:
            e = rows["intensity_error"]
            bad_v, bad_e = ~np.isfinite(v), ~np.isfinite(e)
            c["error_nonfinite"] += int(np.count_nonzero(bad_e))
            c["nan_value_finite_error"] += int(np.count_nonzero(np.isnan(v) & ~bad_e))
            c["nonfinite_value_nonfinite_error"] += int(np.count_nonzero(bad_v & bad_e))
            c["zero_rs_volume"] += int(np.count_nonzero(rows["rs_volume"] == 0))
            ranges["rs_volume"].add(rows["rs_volume"].astype(np.float64))
        if background is not None:
            b = interp_points_3d(
                (background.phi, background.iy, background.ix),
                background.rate,
                rows["phi"],
                rows["iy"],
                rows["ix"],
            )
            c["background_nonfinite"] = c.get("background_nonfinite", 0) + int(
                np.count_nonzero(~np.isfinite(b))
            )
        ranges["value"].add(v)
        for name in ("phi", "iy", "ix"):
            ranges[name].add(rows[name].astype(np.float64))
        keep = rng.random(v.size) < p
        for name, arr in (("value", v), *((n, rows[n]) for n in cols)):
            sample.setdefault(name, []).append(np.asarray(arr)[keep])
        if bar:
            bar.advance()
    stats.counts.update(c)
    stats.counts["value_nonfinite"] = c["value_nan"] + c["value_posinf"] + c["value_neginf"]
    stats.ranges = {k: r.get() for k, r in ranges.items() if r.get() is not None}
    stats.zero_seconds_phi = zero_phi.get()
    return {k: np.concatenate(v) for k, v in sample.items()}


def _asinh_edges(lo: float, hi: float, width: float, n: int) -> np.ndarray:
    t = np.linspace(np.arcsinh(lo / width), np.arcsinh(hi / width), n + 1)
    edges = width * np.sinh(t)
    edges[0], edges[-1] = lo, hi
    return np.unique(edges)


def _linear_edges(rng: list[float] | None, n: int) -> np.ndarray:
    lo, hi = rng if rng else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, n + 1)


def value_scale(sample_values: np.ndarray) -> float:
    """Linear width of the asinh axis of value plots: the typical magnitude of the values."""
    v = np.abs(sample_values[np.isfinite(sample_values)])
    positive = v[v > 0]
    return float(np.median(positive)) if positive.size else 1.0


@dataclass
class _Neighbourhoods:
    """Detector cells and each cell's median and robust sigma of the value (from the sample)."""

    cells: DetectorCells
    median: np.ndarray
    sigma: np.ndarray

    def score(self, kind: str, rows: dict[str, np.ndarray]):
        """Values, cells and hot-pixel scores of one block of rows."""
        v = _values(kind, rows)
        cell = self.cells.index(rows["iy"], rows["ix"])
        errors = _errors(kind, rows, self.median[cell])
        return v, cell, hot_scores(v, errors, cell, self.median, self.sigma)


def scan_table(
    source: TableSource, params: QCParams | None = None, progress=None, background=None
) -> TableStats:
    """Run the three passes over ``source`` (see the module docstring); returns a :class:`TableStats`.

    With ``background`` (a :class:`~pipeline.model.BackgroundGrid`), also count the rows at
    which the interpolated background is NaN or inf (where correct gives NaN intensities).
    """
    params = params or QCParams()
    kind = table_kind(source.columns)
    stats = TableStats(
        path=source.path,
        kind=kind,
        n_rows=source.n_rows,
        ndiv=tuple(int(x) for x in source.ndiv),
        value_name="rate" if kind == "integrated" else "intensity",
    )
    blocks = _blocks(source, params.rows_per_block)

    def bar(name):
        return progress(name, len(blocks)) if progress else None

    # 1. survey
    t = time.perf_counter()
    stats.sample = _survey(source, kind, blocks, params, stats, bar("qc survey"), background)
    stats.seconds["survey"] = time.perf_counter() - t
    hood = _neighbourhoods(stats, params)
    hists = _histograms(stats)
    # 2. score
    t = time.perf_counter()
    _score_pass(source, blocks, params, stats, hood, hists, bar("qc score"))
    stats.seconds["score"] = time.perf_counter() - t
    # 3. bulk
    t = time.perf_counter()
    _bulk_pass(source, blocks, params, stats, hood, hists, bar("qc bulk"))
    stats.seconds["bulk"] = time.perf_counter() - t
    stats.histograms = {name: h.to_dict() for name, h in hists.items()}
    stats.histograms["value"]["linear_width"] = value_scale(stats.sample["value"])
    return stats


def _neighbourhoods(stats: TableStats, params: QCParams) -> _Neighbourhoods:
    sample = stats.sample
    n_cells = int(np.clip(sample["value"].size // params.rows_per_cell, 1, 4096))
    cells = DetectorCells(stats.ranges.get("iy", [0, 1]), stats.ranges.get("ix", [0, 1]), n_cells)
    median, sigma = neighbourhood_stats(sample["value"], cells.index(sample["iy"], sample["ix"]), cells.size)
    stats.cells = {**cells.to_dict(), "median": median.tolist(), "sigma": sigma.tolist()}
    return _Neighbourhoods(cells, median, sigma)


def _value_range(stats: TableStats) -> tuple[float, float]:
    vr = stats.ranges.get("value", [0.0, 1.0])
    return (vr[0], vr[1]) if vr[1] > vr[0] else (vr[0] - 0.5, vr[1] + 0.5)


def _histograms(stats: TableStats) -> dict[str, Histogram]:
    """Empty histograms with edges from the survey's ranges (the bulk one comes in pass 3)."""
    lo, hi = _value_range(stats)
    hists = {
        "value": Histogram(_asinh_edges(lo, hi, value_scale(stats.sample["value"]), 120)),
        "phi": Histogram(_linear_edges(stats.ranges.get("phi"), 90)),
    }
    if stats.kind == "corrected":
        full = 1.0 / float(np.prod(stats.ndiv))
        rs = stats.ranges.get("rs_volume", [0.0, full])
        hists["rs_volume"] = Histogram(np.linspace(0.0, max(rs[1], full) * 1.05, 101))
    else:
        px = stats.ranges.get("pixels", [1.0, 1.0])
        hists["pixels"] = Histogram(_linear_edges([0.0, max(px[1], 1.0)], 100))
    return hists


def _value_columns(kind: str) -> list[str]:
    return ["seconds", "counts"] if kind == "integrated" else ["intensity", "intensity_error"]


def _score_pass(source, blocks, params: QCParams, stats: TableStats, hood: _Neighbourhoods, hists, bar):
    """Pass 2: candidates, the largest non-candidate value, histograms, rows per voxel."""
    kind = stats.kind
    top = TopRows(params.max_candidates)
    # integrate writes rows sorted by voxel: count runs in constant memory (else distinct voxels)
    voxels = RunLengthCounter() if kind == "integrated" else VoxelCounter()
    max_non_hot, min_hot, n_hot = -np.inf, np.inf, 0
    size_column = "pixels" if kind == "integrated" else "rs_volume"
    columns = ["h", "k", "l", "phi", "iy", "ix", *_value_columns(kind), size_column]
    for _, _, rows in _read_ahead(source, blocks, columns):
        v, cell, score = hood.score(kind, rows)
        hot = score > params.hot_score
        if hot.any():
            n_hot += int(np.count_nonzero(hot))
            min_hot = min(min_hot, float(v[hot].min()))
            columns = {c: rows[c][hot] for c in ("h", "k", "l", "phi", "iy", "ix")}
            top.add(score[hot], {**columns, "value": v[hot], "neighbourhood": hood.median[cell[hot]]})
        normal = v[~hot & np.isfinite(v)]
        if normal.size:
            max_non_hot = max(max_non_hot, float(normal.max()))
        hists["value"].add(v)
        hists["phi"].add(rows["phi"])
        hists[size_column].add(rows[size_column])
        voxels.add(voxel_keys(rows["h"], rows["k"], rows["l"], stats.ndiv))
        if bar:
            bar.advance()
    stats.n_candidates = n_hot
    stats.candidates = top.sorted()
    stats.max_non_hot = None if max_non_hot == -np.inf else max_non_hot
    stats.min_hot = None if min_hot == np.inf else min_hot
    if isinstance(voxels, RunLengthCounter) and not voxels.sorted:
        log.debug("%s is not sorted by voxel: counting distinct voxels in another pass", source.path)
        voxels = VoxelCounter()
        for _, _, rows in _read_ahead(source, blocks, ["h", "k", "l"]):
            voxels.add(voxel_keys(rows["h"], rows["k"], rows["l"], stats.ndiv))
    stats.redundancy = [int(x) for x in voxels.redundancy()]


def _bulk_pass(source, blocks, params: QCParams, stats: TableStats, hood: _Neighbourhoods, hists, bar):
    """Pass 3: linear histogram up to the largest non-candidate; candidates below that value."""
    lo, hi = _value_range(stats)
    upper = stats.max_non_hot if stats.max_non_hot is not None else hi
    bulk = Histogram(_linear_edges([lo, max(upper, lo)], 60))
    below = 0
    for _, _, rows in _read_ahead(source, blocks, ["iy", "ix", *_value_columns(stats.kind)]):
        v, _, score = hood.score(stats.kind, rows)
        bulk.add(v[v <= upper])
        below += int(np.count_nonzero((score > params.hot_score) & (v <= upper)))
        if bar:
            bar.advance()
    stats.candidates_below_max_non_hot = below if stats.n_candidates else 0
    hists["bulk"] = bulk
