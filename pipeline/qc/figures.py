"""The QC figures, drawn with matplotlib's object API on the Agg canvas (no pyplot state, no display).

Every function takes the scan results and a path, writes one PNG and returns its title. The value
axis (count rate or intensity) uses an asinh scale: linear around zero (negative intensities after
background subtraction stay visible), logarithmic in the tails (hot pixels do not squash the bulk).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from pipeline.io.atomic import save_figure_atomic
from pipeline.qc.tablescan import TableStats

__all__ = [
    "plot_detector_scatter",
    "plot_phi_histogram",
    "plot_redundancy",
    "plot_size_histogram",
    "plot_value_histogram",
    "value_label",
]

_HOT = "#d62728"
_MAX_POINTS = 50_000  # points per scatter plot (hot-pixel candidates are always drawn in addition)


def value_label(stats: TableStats) -> str:
    if stats.kind == "integrated":
        return "count rate (counts / pixel / s)"
    return "intensity (corrected)"


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    save_figure_atomic(fig, path, dpi=100)


def _asinh_axis(ax, which: str, width: float, lo: float, hi: float) -> None:
    """asinh scale with ticks at 0 and at powers of ten well outside the linear part (|t| >= 3 width),
    so tick labels near zero do not overlap."""
    (ax.set_xscale if which == "x" else ax.set_yscale)("asinh", linear_width=width)
    axis = ax.xaxis if which == "x" else ax.yaxis
    ticks = [0.0]
    for sign, end in ((1, hi), (-1, lo)):
        if sign * end <= 0:
            continue
        first = int(np.ceil(np.log10(3 * width)))
        ticks += [sign * 10.0**k for k in range(first, int(np.floor(np.log10(sign * end))) + 1)]
    axis.set_major_locator(FixedLocator(sorted(ticks)))
    axis.set_minor_locator(NullLocator())


def _bars(ax, hist: dict, **kwargs) -> None:
    edges = np.asarray(hist["edges"])
    ax.stairs(np.asarray(hist["counts"]), edges, fill=True, **kwargs)


def _nothing(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_value_histogram(stats: TableStats, path: Path) -> str:
    """All values (asinh axis, log counts) and, beside, the bulk below the largest non-hot value."""
    label = value_label(stats)
    title = f"Histogram of the {label}"
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    full, bulk = fig.subplots(1, 2)
    hist = stats.histograms["value"]
    nonfinite = stats.counts["value_nonfinite"]
    if sum(hist["counts"]) == 0:
        _nothing(full, f"no finite values: {nonfinite:,} of {stats.n_rows:,} rows are inf or NaN")
        _nothing(bulk, "nothing to show")
    else:
        _bars(full, hist, color="#1f77b4")
        _asinh_axis(full, "x", hist["linear_width"], hist["edges"][0], hist["edges"][-1])
        full.set_xlim(hist["edges"][0], hist["edges"][-1])
        full.set_yscale("log")
        full.set_xlabel(f"{label} (asinh scale)")
        full.set_ylabel("rows")
        full.set_title(f"all {stats.n_rows - nonfinite:,} finite rows")
        t = stats.suggested_threshold
        if stats.n_candidates and t is not None:
            full.axvline(t, color=_HOT, ls="--", label=f"suggested threshold {t:.4g}")
            full.legend(loc="upper right")
        if nonfinite:
            full.text(0.02, 0.95, f"{nonfinite:,} inf/NaN not shown", transform=full.transAxes, va="top")
        _bars(bulk, stats.histograms["bulk"], color="#2ca02c")
        bulk.set_xlabel(label)
        bulk.set_ylabel("rows")
        if stats.n_candidates:
            bulk.set_title(
                f"{label.split(' (')[0]} <= {stats.max_non_hot:.4g} (the {stats.n_candidates:,} hot-pixel "
                "candidates removed)"
            )
        else:
            bulk.set_title("linear scale (no hot-pixel candidates)")
    fig.suptitle(title)
    _save(fig, path)
    return title


def plot_phi_histogram(stats: TableStats, path: Path) -> str:
    hist = stats.histograms["phi"]
    width = np.diff(hist["edges"]).mean() if len(hist["edges"]) > 1 else 0
    title = "Observations per rotation angle phi"
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    _bars(ax, hist, color="#9467bd")
    ax.set_xlabel("phi (degrees; mean frame angle of each observation)")
    ax.set_ylabel(f"rows per {width:.3g} deg")
    ax.set_title(title)
    _save(fig, path)
    return title


def plot_size_histogram(stats: TableStats, path: Path) -> str:
    """rs_volume (corrected) with the fully recorded voxel volume marked, or pixels per row (integrated)."""
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    if stats.kind == "corrected":
        hist = stats.histograms["rs_volume"]
        full = 1.0 / float(np.prod(stats.ndiv))
        title = "Reciprocal-space volume of each observation (rs_volume)"
        _bars(ax, hist, color="#8c564b")
        nd = stats.ndiv
        ax.axvline(
            full, color=_HOT, ls="--", label=f"fully recorded voxel 1/({nd[0]}*{nd[1]}*{nd[2]}) = {full:.4g}"
        )
        ax.legend(loc="upper right")
        ax.set_xlabel("rs_volume (reciprocal unit cells)")
    else:
        hist = stats.histograms["pixels"]
        title = "Pixels per observation (row)"
        _bars(ax, hist, color="#8c564b")
        ax.set_xlabel("pixels")
    ax.set_yscale("log")
    ax.set_ylabel("rows")
    ax.set_title(title)
    _save(fig, path)
    return title


def plot_redundancy(stats: TableStats, path: Path) -> str:
    red = np.asarray(stats.redundancy, dtype=np.int64)
    per = "(h, k, l) voxel" if stats.kind == "integrated" else "asymmetric-unit voxel"
    title = f"Redundancy: observations per {per}"
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    n = np.arange(red.size)
    voxels = int(red[1:].sum())
    if voxels == 0:
        _nothing(ax, "no voxels")
    else:
        cap = 60
        if red.size - 1 > cap:  # fold the long tail into one bar
            red = np.concatenate([red[: cap + 1], [red[cap + 1 :].sum()]])
            n = np.arange(red.size)
        ax.bar(n[1:], red[1:], width=0.8, color="#17becf")
        mean = float((np.arange(len(stats.redundancy)) * np.asarray(stats.redundancy)).sum() / voxels)
        ax.set_xlabel("observations (rows) per voxel" + (f"; last bar: > {cap}" if len(n) > cap + 1 else ""))
        ax.set_ylabel("voxels")
        ax.text(
            0.98, 0.95, f"{voxels:,} voxels, mean {mean:.2f}", transform=ax.transAxes, ha="right", va="top"
        )
    ax.set_title(title)
    _save(fig, path)
    return title


def _thin(sample: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """At most ``n`` rows of the sample (a fixed random subset: plots stay fast and reproducible)."""
    size = len(sample["value"])
    if size <= n:
        return sample
    keep = np.sort(np.random.default_rng(1).choice(size, n, replace=False))
    return {k: v[keep] for k, v in sample.items()}


def _value_limits(v: np.ndarray, cand: dict) -> tuple[float, float]:
    """y limits that hold the sample and the candidates, without an empty negative half for rates."""
    vals = np.concatenate([v, cand["value"]]) if cand else v
    lo, hi = float(vals.min()), float(vals.max())
    bottom = 1.5 * lo if lo < 0 else 0.0  # asinh axes: x1.5 is the same small margin at any magnitude
    top = 1.5 * hi if hi > 0 else 0.1 * (hi - lo) + 1.0
    return bottom, top


def plot_detector_scatter(stats: TableStats, path: Path, image_hot: list[dict] | None = None) -> str:
    """Value against ix and iy (a random sample of rows plus every hot-pixel candidate), and the
    detector plane coloured by value with the candidates circled."""
    label = value_label(stats)
    title = f"{label[0].upper()}{label[1:]} against detector position"
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    ax_x, ax_y, ax_map = fig.subplots(1, 3)
    s = _thin(stats.sample, _MAX_POINTS)
    v = s["value"]
    ok = np.isfinite(v)
    cand = stats.candidates
    width = stats.histograms["value"].get("linear_width", 1.0)
    if not ok.any():
        for ax in (ax_x, ax_y, ax_map):
            _nothing(ax, f"all sampled {stats.value_name} values are inf/NaN")
        fig.suptitle(title)
        _save(fig, path)
        return title
    t = stats.suggested_threshold if stats.n_candidates else None
    for ax, coord in ((ax_x, "ix"), (ax_y, "iy")):
        ax.scatter(
            s[coord][ok], v[ok], s=2, alpha=0.4, color="#1f77b4", rasterized=True, label="rows (sample)"
        )
        if cand:
            ax.scatter(cand[coord], cand["value"], s=30, color=_HOT, label="hot-pixel candidates")
        if t is not None:
            ax.axhline(t, color=_HOT, ls="--", lw=1, label=f"suggested threshold {t:.4g}")
        limits = _value_limits(v[ok], cand)
        _asinh_axis(ax, "y", width, *limits)
        ax.set_ylim(*limits)
        ax.set_xlabel(
            f"{coord} (detector {'column' if coord == 'ix' else 'row'}, mean over the row's pixels)"
        )
        ax.set_ylabel(label)
        ax.legend(loc="best", fontsize=8, framealpha=0.9)
    ax_x.set_title(f"{ok.sum():,} random rows of {stats.n_rows:,}")
    order = np.argsort(v[ok])  # brightest on top
    c = np.arcsinh(v[ok][order] / width)
    bulk = c[c <= np.arcsinh(stats.max_non_hot / width)] if stats.max_non_hot is not None else c
    lo, hi = np.percentile(bulk if bulk.size else c, [1, 99.5])  # colours for the bulk; hot rows saturate
    sc = ax_map.scatter(
        s["ix"][ok][order],
        s["iy"][ok][order],
        c=c,
        s=3,
        cmap="viridis",
        rasterized=True,
        vmin=lo,
        vmax=max(hi, lo + 1e-9),
    )
    cbar = fig.colorbar(sc, ax=ax_map)
    cbar.set_label(f"asinh({stats.value_name} / {width:.3g})")
    if cand:
        ax_map.scatter(cand["ix"], cand["iy"], s=120, facecolors="none", edgecolors=_HOT, lw=1.5)
        labelled: list[tuple[float, float]] = []
        span = max(np.ptp(s["ix"][ok]), np.ptp(s["iy"][ok]), 1.0)
        for x, y in zip(cand["ix"], cand["iy"], strict=True):
            if len(labelled) >= 12 or any(np.hypot(x - a, y - b) < 0.04 * span for a, b in labelled):
                continue  # one label per spot
            labelled.append((x, y))
            ax_map.annotate(
                f"({x:.0f}, {y:.0f})",
                (x, y),
                xytext=(4, 4),
                textcoords="offset points",
                color=_HOT,
                fontsize=8,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.8, "lw": 0},
            )
    if image_hot:
        ax_map.scatter(
            [p["ix"] for p in image_hot],
            [p["iy"] for p in image_hot],
            marker="x",
            s=60,
            color="black",
            label="hot pixels in the images",
        )
        ax_map.legend(loc="lower right", fontsize=8)
    ax_map.set_xlabel("ix")
    ax_map.set_ylabel("iy")
    ax_map.invert_yaxis()
    ax_map.set_aspect("equal", adjustable="box")
    ax_map.set_title("detector: candidates circled (ix, iy)")
    fig.suptitle(
        title + (f": {stats.n_candidates:,} hot-pixel candidates in red" if stats.n_candidates else "")
    )
    _save(fig, path)
    return title
