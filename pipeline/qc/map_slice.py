"""A PNG of one 2-D slice of a map, with its axes in reciprocal lattice units.

A map with one axis of a single point (``--limits`` with lmin = lmax, say) is that slice. In a 3-D
map the slice is the L plane nearest l = 0 (the middle plane when 0 lies outside the limits),
read alone from the file. NaN (no data) is drawn grey; the colour scale spans the 1st to the 99th
percentile of the values shown, so a few strong voxels (Bragg residue) do not wash out the rest.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.io.atomic import save_figure_atomic
from pipeline.io.nexus import decode_str, open_nexus, require

__all__ = ["choose_slice", "plot_map_slice"]


def choose_slice(shape: tuple[int, int, int], axes: dict[str, np.ndarray]) -> tuple[int, int]:
    """(axis fixed, index along it) of the slice to draw: a single-point axis if there is one (the
    last such), else the L plane nearest l = 0."""
    names = ("h", "k", "l")
    single = [i for i, n in enumerate(shape) if n == 1]
    if single:
        return single[-1], 0
    lvals = axes[names[2]]
    if lvals[0] <= 0 <= lvals[-1]:
        return 2, int(np.argmin(np.abs(lvals)))
    return 2, shape[2] // 2


def plot_map_slice(map_path: str | os.PathLike, png: str | os.PathLike, name: str) -> Path:
    """Draw a slice of the map ``/entry/<name>`` of ``map_path`` into ``png``; returns its path."""
    names = ("h", "k", "l")
    with open_nexus(map_path, "map file") as f:
        group = require(f, f"/entry/{name}", "map")
        signal = group[decode_str(group.attrs.get("signal", "signal"))]
        axes = {a: group[a][()] for a in names}
        fixed, at = choose_slice(signal.shape, axes)
        sel = [slice(None)] * 3
        sel[fixed] = at
        plane = np.asarray(signal[tuple(sel)], dtype=np.float64)
    free = [i for i in range(3) if i != fixed]
    x_name, y_name = names[free[0]], names[free[1]]
    x, y = axes[x_name], axes[y_name]
    finite = plane[np.isfinite(plane)]
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5

    fig = Figure(figsize=(7, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    dx = (x[1] - x[0]) if x.size > 1 else 1.0
    dy = (y[1] - y[0]) if y.size > 1 else 1.0
    extent = (x[0] - dx / 2, x[-1] + dx / 2, y[0] - dy / 2, y[-1] + dy / 2)
    cmap = _cmap()
    image = ax.imshow(
        plane.T, origin="lower", extent=extent, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest",
        aspect="equal" if 0.1 < (extent[3] - extent[2]) / max(extent[1] - extent[0], 1e-12) < 10 else "auto",
    )  # fmt: skip
    ax.set_xlabel(f"{x_name} (reciprocal lattice units)")
    ax.set_ylabel(f"{y_name} (reciprocal lattice units)")
    fixed_value = axes[names[fixed]][at]
    ax.set_title(
        f"{name}, {names[fixed]} = {fixed_value:g}  ({finite.size:,} of {plane.size:,} points with data)"
    )
    fig.colorbar(image, ax=ax, label=name)
    fig.tight_layout()
    return save_figure_atomic(fig, png, dpi=100)


def _cmap():
    from matplotlib import colormaps

    return colormaps["viridis"].with_extremes(bad="#bbbbbb")
