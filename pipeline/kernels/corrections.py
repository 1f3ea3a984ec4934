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
makes the value NaN even at weight 0). :func:`correct_rows` does it all in one numba pass;
:func:`correct_rows_oracle` is the plain numpy/scipy transcription of mdx2 it is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from pipeline.geometry.expressions import MillerExpression
from pipeline.geometry.model import BackgroundGrid, CorrectionGrid
from pipeline.geometry.symmetry import to_asu

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

    def factor_stack(self) -> np.ndarray:
        """Grids to interpolate, (solid_angle, *enabled factors, d3s), interleaved: shape (ny, nx, m) so
        that one grid point's values share a cache line. mdx2 interpolates each and then multiplies,
        which is not the same as interpolating the product."""
        grid = self.corrections
        names = ["solid_angle", *(name for name in _FACTORS if getattr(self, name)), "d3s"]
        return np.ascontiguousarray(np.stack([grid[name] for name in names], axis=-1))


def _axis(axis: np.ndarray) -> np.ndarray:
    """An axis packed for :func:`_fraction`: row 0 the grid points, row 1 the inverse cell widths
    (np.interp's slopes), and in row 1's last slot the cells per unit (for guessing the cell)."""
    axis = np.asarray(axis, dtype=np.float64)
    packed = np.zeros((2, axis.size))
    packed[0] = axis
    if axis.size > 1:
        packed[1, :-1] = 1.0 / np.diff(axis)
        packed[1, -1] = (axis.size - 1) / (axis[-1] - axis[0])
    return packed


@numba.njit(nogil=True, cache=True, inline="always")
def _fraction(x, packed):
    """np.interp(x, axis, arange(n)) as (base, weight), clamped to the grid.

    The cell is guessed from the mean spacing (mdx2's grids are evenly spaced) and corrected by
    stepping, so uneven axes give the same cell as a binary search; the weight uses np.interp's
    slope (x - axis[j]) * (1 / (axis[j + 1] - axis[j])).
    """
    axis = packed[0]
    n = axis.size
    if n == 1 or x <= axis[0]:
        return 0, 0.0
    if x >= axis[n - 1]:
        return n - 1, 0.0
    j = np.int64((x - axis[0]) * packed[1, n - 1])
    j = min(max(j, 0), n - 2)
    while j > 0 and axis[j] > x:
        j -= 1
    while j < n - 2 and axis[j + 1] <= x:
        j += 1
    return j, (x - axis[j]) * packed[1, j]


@numba.njit(nogil=True, cache=True, inline="always")
def _corner(values, i, j, k):
    """values[i, j, k], or 0.0 outside the grid (map_coordinates' constant mode)."""
    if i < values.shape[0] and j < values.shape[1] and k < values.shape[2]:
        return values[i, j, k]
    return 0.0


@numba.njit(nogil=True, cache=True)
def _correct_kernel(
    h,
    k,
    l,
    phi,
    iy,
    ix,
    counts,
    seconds,
    pixels,
    ub,
    det_ub,
    c_iy,
    c_ix,
    factors,
    has_bkg,
    b_phi,
    b_iy,
    b_ix,
    bkg,
    lorentz,
    s_out,
    i_out,
    e_out,
    v_out,
):
    for r in range(h.size):
        hr, kr, lr = np.float64(h[r]), np.float64(k[r]), np.float64(l[r])
        sx = ub[0, 0] * hr + ub[0, 1] * kr + ub[0, 2] * lr
        sy = ub[1, 0] * hr + ub[1, 1] * kr + ub[1, 2] * lr
        sz = ub[2, 0] * hr + ub[2, 1] * kr + ub[2, 2] * lr
        s_out[r] = np.sqrt(sx * sx + sy * sy + sz * sz)
        # bilinear interpolation of each grid at (iy, ix); factor = product of all but the last (d3s)
        y, fy = _fraction(np.float64(iy[r]), c_iy)
        x, fx = _fraction(np.float64(ix[r]), c_ix)
        factor = 1.0
        d3s = 0.0
        last = factors.shape[2] - 1
        for c in range(last + 1):
            v = (1 - fy) * (1 - fx) * _corner(factors, y, x, c) + (1 - fy) * fx * _corner(
                factors, y, x + 1, c
            )
            v += fy * (1 - fx) * _corner(factors, y + 1, x, c) + fy * fx * _corner(factors, y + 1, x + 1, c)
            if c == last:
                d3s = v
            elif c == 0:
                factor = v
            else:
                factor *= v
        t = np.float64(seconds[r])
        rate = counts[r] / t
        rate_error = np.sqrt(np.float64(counts[r])) / t
        if has_bkg:
            p, fp = _fraction(np.float64(phi[r]), b_phi)
            y, fy = _fraction(np.float64(iy[r]), b_iy)
            x, fx = _fraction(np.float64(ix[r]), b_ix)
            b = 0.0
            for dp in range(2):
                wp = fp if dp else 1 - fp
                for dy in range(2):
                    wy = fy if dy else 1 - fy
                    for dx in range(2):
                        wx = fx if dx else 1 - fx
                        b += wp * wy * wx * _corner(bkg, p + dp, y + dy, x + dx)
            rate -= b
        volume = pixels[r] * d3s / det_ub
        intensity = rate / factor
        error = rate_error / factor
        if lorentz:
            intensity *= volume
            error *= volume
        i_out[r] = intensity
        e_out[r] = error
        v_out[r] = volume


def _asu_columns(rows, ndiv, model: CorrectionModel) -> dict[str, np.ndarray]:
    # mdx2 rounds (h * ndiv) in the table's float32 precision
    H, K, L = (np.round(rows[c] * n).astype(np.int64) for c, n in zip("hkl", ndiv, strict=True))
    H, K, L, op = to_asu(H, K, L, model.ops, model.asu)
    return {
        "h": (H / ndiv[0]).astype(np.float32),
        "k": (K / ndiv[1]).astype(np.float32),
        "l": (L / ndiv[2]).astype(np.float32),
        "op": op.astype(np.int32),
    }


def correct_rows(rows: dict[str, np.ndarray], ndiv, model: CorrectionModel) -> dict[str, np.ndarray]:
    """Corrected columns (mdx2's dtypes) of integrated ``rows`` (h k l phi iy ix seconds counts pixels n)."""
    size = len(rows["h"])
    out = {
        name: np.empty(size, dtype=np.float32) for name in ("s", "intensity", "intensity_error", "rs_volume")
    }
    bkg = model.background
    empty = np.zeros(1)
    _correct_kernel(
        *(
            np.ascontiguousarray(rows[c])
            for c in ("h", "k", "l", "phi", "iy", "ix", "counts", "seconds", "pixels")
        ),
        np.ascontiguousarray(model.ub_matrix, dtype=np.float64),
        float(np.linalg.det(model.ub_matrix)),
        _axis(model.corrections.iy),
        _axis(model.corrections.ix),
        model.factor_stack(),
        bkg is not None,
        _axis(bkg.phi if bkg is not None else empty),
        _axis(bkg.iy if bkg is not None else empty),
        _axis(bkg.ix if bkg is not None else empty),
        np.ascontiguousarray(bkg.rate) if bkg is not None else np.zeros((1, 1, 1)),
        model.lorentz,
        out["s"],
        out["intensity"],
        out["intensity_error"],
        out["rs_volume"],
    )
    out.update(_asu_columns(rows, ndiv, model))
    out["ix"] = np.asarray(rows["ix"], dtype=np.float32)
    out["iy"] = np.asarray(rows["iy"], dtype=np.float32)
    out["phi"] = np.asarray(rows["phi"], dtype=np.float32)
    out["n"] = np.asarray(rows["n"]).astype(np.int32)
    return out


def correct_rows_oracle(rows: dict[str, np.ndarray], ndiv, model: CorrectionModel) -> dict[str, np.ndarray]:
    """The same, transcribed from mdx2.correct with numpy and scipy (the reference for tests)."""
    from pipeline.geometry.interpolate import interp_points_2d, interp_points_3d

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
