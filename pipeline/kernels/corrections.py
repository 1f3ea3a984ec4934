"""Correct integrated rows (a pure function of the rows and the geometry), as ``mdx2.correct``.

Per row, with mdx2 1.0.5's formulas::

    s               = |UB @ (h, k, l)|                                   (1/Angstrom)
    (H, K, L), op   = asymmetric-unit image of round((h, k, l) * ndiv)   h = H / ndiv ...
    rate            = counts / seconds          rate_error = sqrt(counts) / seconds
    rate           -= background(phi, iy, ix)                            (if a background is given)
    factor          = solid_angle [* attenuation] [* efficiency] [* polarization]
    intensity       = rate / factor             intensity_error = rate_error / factor
    rs_volume       = pixels * d3s / det(UB)    (with lorentz: intensity, error *= rs_volume)

Grids are interpolated linearly at fractional grid coordinates ``np.interp(x, axis, arange(n))``,
as mdx2's ``interp2``/``interp3`` (``scipy.ndimage.map_coordinates(order=1)``, where a NaN corner
makes the value NaN even at weight 0). :func:`correct_rows` does it in numpy, blocks of rows at a time
on padded, flattened grids, or (the same bits) with the numba kernels of
:mod:`pipeline.kernels.corrections_fused`; :func:`correct_rows_oracle` is the plain numpy/scipy
transcription of mdx2 it is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.kernels.asu import LIMIT as ASU_LIMIT
from pipeline.kernels.asu import asu_images
from pipeline.kernels.interpolate import grid_fraction
from pipeline.model import BackgroundGrid, CorrectionGrid
from pipeline.symmetry.expressions import MillerExpression

__all__ = ["CorrectionModel", "correct_rows", "correct_rows_oracle"]

_FACTORS = ("attenuation", "efficiency", "polarization")


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


def _cells(x: np.ndarray, axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid cell and weight of each ``x``, as mdx2: ``y = np.interp(x, axis, arange(n))`` (clamped to
    the grid), then ``map_coordinates``' split of ``y`` into ``floor(y)`` and ``y - floor(y)``. A NaN
    ``x`` gets a NaN weight (and a cell inside the grid)."""
    cell, weight = grid_fraction(x, axis)
    np.clip(cell, 0, axis.size - 1, out=cell)
    return cell, weight


def _padded(values: np.ndarray) -> np.ndarray:
    """``values`` with one more plane of zeros after the end of every axis, flattened: the corner past
    the last grid point reads 0, as ``map_coordinates(order=1, mode="constant")`` (it always has
    weight 0 there, but a NaN beside it still makes the value NaN, as in mdx2)."""
    out = np.zeros(tuple(n + 1 for n in values.shape))
    out[tuple(slice(0, n) for n in values.shape)] = values
    return out.ravel()


@dataclass(frozen=True, eq=False)
class _Grids:
    """The model's grids, padded and flattened for :func:`_correct_block` (small: built per call)."""

    iy: np.ndarray
    ix: np.ndarray
    factors: list[np.ndarray]  # solid_angle, then each enabled factor
    d3s: np.ndarray
    bkg_axes: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # phi, iy, ix
    bkg_rate: np.ndarray | None


_GRIDS: dict[
    int, tuple[CorrectionModel, _Grids]
] = {}  # the last models' grids (a run corrects piece by piece)


def _grids(model: CorrectionModel) -> _Grids:
    """The model's grids as the kernels take them, made once per model (kept for the last 8)."""
    hit = _GRIDS.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    grids = _make_grids(model)
    if len(_GRIDS) >= 8:
        _GRIDS.clear()
    _GRIDS[id(model)] = (model, grids)
    return grids


def _make_grids(model: CorrectionModel) -> _Grids:
    grid, bkg = model.corrections, model.background
    names = ["solid_angle", *(name for name in _FACTORS if getattr(model, name))]
    return _Grids(
        iy=np.asarray(grid.iy, dtype=np.float64),
        ix=np.asarray(grid.ix, dtype=np.float64),
        factors=[_padded(np.asarray(grid[name], dtype=np.float64)) for name in names],
        d3s=_padded(np.asarray(grid["d3s"], dtype=np.float64)),
        bkg_axes=None if bkg is None else tuple(np.asarray(a, np.float64) for a in (bkg.phi, bkg.iy, bkg.ix)),
        bkg_rate=None if bkg is None else _padded(np.asarray(bkg.rate, dtype=np.float64)),
    )


def _bilinear(values: np.ndarray, corners: tuple[np.ndarray, ...], weights: tuple[np.ndarray, ...]):
    total = weights[0] * values.take(corners[0])
    for corner, weight in zip(corners[1:], weights[1:], strict=True):
        total += weight * values.take(corner)
    return total


def _correct_block(rows, sl: slice, ub, det_ub, g: _Grids, lorentz: bool, out) -> None:
    """Rows ``sl``: s, intensity, intensity_error and rs_volume into ``out`` (float64 throughout)."""
    h, k, l = (rows[c][sl].astype(np.float64) for c in "hkl")
    s2 = np.zeros_like(h)
    for i in range(3):
        si = ub[i, 0] * h + ub[i, 1] * k + ub[i, 2] * l
        s2 += si * si
    out["s"][sl] = np.sqrt(s2)
    iy, ix = rows["iy"][sl], rows["ix"][sl]
    y, fy = _cells(iy, g.iy)
    x, fx = _cells(ix, g.ix)
    stride = g.ix.size + 1
    c00 = y * stride + x
    c10 = c00 + stride
    corners = (c00, c00 + 1, c10, c10 + 1)
    w11 = fy * fx
    w10, w01 = fy - w11, fx - w11
    weights = (1 - fy - w01, w01, w10, w11)  # (1-fy)(1-fx), (1-fy)fx, fy(1-fx), fy fx
    factor = _bilinear(g.factors[0], corners, weights)
    for values in g.factors[1:]:
        factor *= _bilinear(values, corners, weights)
    counts = rows["counts"][sl].astype(np.float64)
    seconds = rows["seconds"][sl].astype(np.float64)
    rate = counts / seconds
    rate_error = np.sqrt(counts) / seconds
    if g.bkg_axes is not None:
        a_phi, a_iy, a_ix = g.bkg_axes
        p, fp = _cells(rows["phi"][sl], a_phi)
        y, fy = _cells(iy, a_iy)
        x, fx = _cells(ix, a_ix)
        sy = a_ix.size + 1
        sp = (a_iy.size + 1) * sy
        base = p * sp + y * sy + x
        for dp, wp in ((0, 1 - fp), (sp, fp)):
            for dy, wy in ((0, 1 - fy), (sy, fy)):
                corner = base + (dp + dy)
                rate -= wp * wy * ((1 - fx) * g.bkg_rate.take(corner) + fx * g.bkg_rate.take(corner + 1))
    volume = rows["pixels"][sl] * _bilinear(g.d3s, corners, weights) / det_ub
    intensity = rate / factor
    error = rate_error / factor
    if lorentz:
        intensity *= volume
        error *= volume
    out["intensity"][sl] = intensity
    out["intensity_error"][sl] = error
    out["rs_volume"][sl] = volume


def _asu_columns(rows, ndiv, model: CorrectionModel) -> dict[str, np.ndarray]:
    size = len(rows["h"])
    hkl = np.empty((3, size), dtype=np.int32)
    for i, (c, n) in enumerate(zip("hkl", ndiv, strict=True)):
        scaled = np.round(rows[c] * n)  # as mdx2: rounded in the table's float32 precision
        if size and not np.abs(scaled).max() < ASU_LIMIT:  # (NaN fails too)
            raise ValueError(
                f"{c} x ndiv is {np.abs(scaled).max():g} in some rows: beyond 2**29 (or not finite), "
                "which cannot be mapped to the asymmetric unit"
            )
        hkl[i] = scaled
    image, op = asu_images(hkl, model.ops, model.asu)
    out = {c: (image[i] / n).astype(np.float32) for i, (c, n) in enumerate(zip("hkl", ndiv, strict=True))}
    out["op"] = op.astype(np.int32)
    return out


BLOCK_ROWS = 1 << 15  # rows per pass: the temporaries of a pass stay in the CPU's cache (32 K rows: 15-20 %
# fewer thread-seconds than 64 K on medium with 2 threads, see docs/SPEED.md)


def correct_rows(
    rows: dict[str, np.ndarray], ndiv, model: CorrectionModel, fused: bool = True
) -> dict[str, np.ndarray]:
    """Corrected columns (mdx2's dtypes) of integrated ``rows`` (h k l phi iy ix seconds counts pixels n).

    ``fused``: in one numba pass per kernel where :func:`~pipeline.kernels.corrections_fused.fused_plan`
    allows (the same bits); otherwise, and with ``fused=False``, in numpy blocks of rows."""
    grids = _grids(model)
    out = None
    if fused:
        from pipeline.kernels.corrections_fused import fused_columns, fused_plan

        plan = fused_plan(rows, ndiv, model)
        out = None if plan is None else fused_columns(rows, ndiv, model, grids, plan)
    if out is None:
        out = _numpy_columns(rows, ndiv, model, grids)
    out["ix"] = np.asarray(rows["ix"], dtype=np.float32)
    out["iy"] = np.asarray(rows["iy"], dtype=np.float32)
    out["phi"] = np.asarray(rows["phi"], dtype=np.float32)
    out["n"] = np.asarray(rows["n"]).astype(np.int32)
    return out


def _numpy_columns(rows, ndiv, model: CorrectionModel, grids: _Grids) -> dict[str, np.ndarray]:
    size = len(rows["h"])
    out = {
        name: np.empty(size, dtype=np.float32) for name in ("s", "intensity", "intensity_error", "rs_volume")
    }
    ub = np.asarray(model.ub_matrix, dtype=np.float64)
    det_ub = float(np.linalg.det(ub))
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 counts over 0 factor etc.: NaN, as mdx2
        for start in range(0, size, BLOCK_ROWS):
            _correct_block(rows, slice(start, start + BLOCK_ROWS), ub, det_ub, grids, model.lorentz, out)
    out.update(_asu_columns(rows, ndiv, model))
    return out


def correct_rows_oracle(rows: dict[str, np.ndarray], ndiv, model: CorrectionModel) -> dict[str, np.ndarray]:
    """The same, transcribed from mdx2.correct with numpy and scipy (the reference for tests)."""
    from pipeline.kernels.interpolate import interp_points_2d, interp_points_3d

    h, k, l = rows["h"], rows["k"], rows["l"]
    ub = model.ub_matrix
    s_vec = ub @ np.stack((h, k, l))
    s = np.sqrt(np.sum(s_vec * s_vec, axis=0))
    grid = model.corrections
    axes = (grid.iy, grid.ix)
    needed = ["solid_angle", "d3s", *(name for name in _FACTORS if getattr(model, name))]
    factors = {name: interp_points_2d(axes, grid[name], rows["iy"], rows["ix"]) for name in needed}
    counts, seconds = rows["counts"], rows["seconds"]
    rate = counts / seconds
    rate_error = np.sqrt(counts) / seconds
    if model.background is not None:
        b = model.background
        rate = rate - interp_points_3d((b.phi, b.iy, b.ix), b.rate, rows["phi"], rows["iy"], rows["ix"])
    factor = factors["solid_angle"].copy()
    for name in _FACTORS:
        if getattr(model, name):
            factor *= factors[name]
    rs_volume = rows["pixels"] * factors["d3s"] / np.linalg.det(ub)
    intensity = rate / factor
    intensity_error = rate_error / factor
    if model.lorentz:
        intensity *= rs_volume
        intensity_error *= rs_volume
    out = _asu_columns(rows, ndiv, model)
    out.update(
        s=s.astype(np.float32),
        intensity=intensity.astype(np.float32),
        intensity_error=intensity_error.astype(np.float32),
        ix=np.asarray(rows["ix"]).astype(np.float32),
        iy=np.asarray(rows["iy"]).astype(np.float32),
        phi=np.asarray(rows["phi"]).astype(np.float32),
        rs_volume=rs_volume.astype(np.float32),
        n=np.asarray(rows["n"]).astype(np.int32),
    )
    return out
