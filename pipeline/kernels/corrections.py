"""Correct integrated rows (a pure function of the rows and the geometry), as ``mdx2.correct``.

Per row, with the operations and dtypes of mdx2 1.0.5::

    s               = |UB @ (h, k, l)|                                   (1/Angstrom)
    (H, K, L), op   = asymmetric-unit image of round((h, k, l) * ndiv)   h = H / ndiv ...
    rate            = counts / seconds          rate_error = sqrt(counts) / seconds
    rate           -= background(phi, iy, ix)                            (if a background is given)
    factor          = solid_angle [* attenuation] [* efficiency] [* polarization]
    intensity       = rate / factor             intensity_error = rate_error / factor
    rs_volume       = pixels * d3s / det(UB)    (with lorentz: intensity, error *= rs_volume)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.geometry.expressions import MillerExpression
from pipeline.geometry.interpolate import interp_points_2d, interp_points_3d
from pipeline.geometry.model import BackgroundGrid, CorrectionGrid
from pipeline.geometry.symmetry import to_asu

__all__ = ["CorrectionModel", "correct_rows"]


@dataclass(frozen=True, eq=False)
class CorrectionModel:
    """Everything ``correct_rows`` needs besides the rows (small; shipped once to each worker)."""

    ub_matrix: np.ndarray
    ops: np.ndarray | None  # Laue operators (N, 3, 3); None = P1
    asu: MillerExpression | None
    corrections: CorrectionGrid
    background: BackgroundGrid | None
    attenuation: bool = True
    efficiency: bool = True
    polarization: bool = True
    lorentz: bool = False


def correct_rows(rows: dict[str, np.ndarray], ndiv, model: CorrectionModel) -> dict[str, np.ndarray]:
    """Corrected columns (mdx2's dtypes) of integrated ``rows`` (h k l phi iy ix seconds counts pixels n)."""
    h, k, l = rows["h"], rows["k"], rows["l"]
    ub = model.ub_matrix
    s_vec = ub @ np.stack((h, k, l))
    s = np.sqrt(np.sum(s_vec * s_vec, axis=0))
    # mdx2 rounds (h * ndiv) in the table's float32 precision
    H, K, L = (np.round(v * n).astype(int) for v, n in zip((h, k, l), ndiv, strict=True))
    H, K, L, op = to_asu(H, K, L, model.ops, model.asu)

    grid = model.corrections
    axes = (grid.iy, grid.ix)
    needed = ["solid_angle", "d3s"] + [
        name for name in ("attenuation", "efficiency", "polarization") if getattr(model, name)
    ]
    factors = {name: interp_points_2d(axes, grid[name], rows["iy"], rows["ix"]) for name in needed}

    counts, seconds = rows["counts"], rows["seconds"]
    rate = counts / seconds
    rate_error = np.sqrt(counts) / seconds
    if model.background is not None:
        b = model.background
        rate = rate - interp_points_3d((b.phi, b.iy, b.ix), b.rate, rows["phi"], rows["iy"], rows["ix"])
    factor = factors["solid_angle"].copy()
    for name in ("attenuation", "efficiency", "polarization"):
        if getattr(model, name):
            factor *= factors[name]
    rs_volume = rows["pixels"] * factors["d3s"] / np.linalg.det(ub)
    intensity = rate / factor
    intensity_error = rate_error / factor
    if model.lorentz:
        intensity *= rs_volume
        intensity_error *= rs_volume
    return {
        "h": (H / ndiv[0]).astype(np.float32),
        "k": (K / ndiv[1]).astype(np.float32),
        "l": (L / ndiv[2]).astype(np.float32),
        "s": s.astype(np.float32),
        "intensity": intensity.astype(np.float32),
        "intensity_error": intensity_error.astype(np.float32),
        "ix": np.asarray(rows["ix"]).astype(np.float32),
        "iy": np.asarray(rows["iy"]).astype(np.float32),
        "phi": np.asarray(rows["phi"]).astype(np.float32),
        "rs_volume": rs_volume.astype(np.float32),
        "n": np.asarray(rows["n"]).astype(np.int32),
        "op": op.astype(np.int32),
    }
