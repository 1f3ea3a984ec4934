"""Reintegrate: one storage chunk's voxel sums -> corrected, scaled rows in the asymmetric unit, and
their sums per ASU voxel, as ``mdx2.reintegrate`` (mdx2 1.0.5).

Per storage chunk, mdx2 bins the pixels by voxel (the same partial sums as ``integrate``: pixels,
counts, and sums of phi, iy, ix and exposure seconds), then per voxel row, in float64::

    h, k, l     = H / ndiv, ...                     phi, iy, ix = sums / pixels
    s           = |UB @ (h, k, l)|
    solid_angle = solid_angle * attenuation * polarization * efficiency    (at iy, ix)
    multiplicity      = pixels * d3s * prod(ndiv) / det(UB)
    scale             = seconds * solid_angle * a * b * d
    background_counts = seconds * (bg_rate + c * a * d * solid_angle)

with the models of scales.nxs ``b = scaling(phi)``, ``a = absorption(ix, iy, phi)``, ``d =
detector(ix, iy)``, ``c = offset(s, phi)`` (1, 1, 1, 0 when absent) and ``bg_rate`` the binned
background at (phi, iy, ix) (0 without one). Rows are mapped to the asymmetric unit and added into
float32 grids (uint32 for counts) with ``np.add.at``, chunk after chunk: each addition is
``float32(float64(sum) + value)``, in chunk order and, within a chunk, in (H, K, L) order of the
original voxel. Voxels outside the grid mdx2 allocates (the ASU images of the Miller grid's points,
with 0 included) are dropped, as ``accumulate(resize=False)`` drops them.

Grids are interpolated as ``scipy.ndimage.map_coordinates(order=1)`` does it, operation for
operation (see :func:`interp_scipy`), so values are bit-identical to mdx2's.

:func:`reintegrate_rows` does the per-chunk part, :func:`accumulate_sorted` the sums per ASU voxel,
:func:`finish_rows` mdx2's output columns. :func:`reintegrate_oracle` is the plain transcription
of mdx2 (numpy, scipy, a dense grid) the tests compare with.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numba
import numpy as np

from pipeline.kernels.asu import asu_images
from pipeline.kernels.binning import PARTIAL_DTYPE
from pipeline.kernels.keys import KEY_BITS, KEY_OFFSET, pack_keys, unpack_keys
from pipeline.kernels.scaling_models import _bin
from pipeline.model import BackgroundGrid, CorrectionGrid
from pipeline.symmetry.expressions import MillerExpression

__all__ = [
    "REINTEGRATE_DTYPE",
    "ReintegrateModel",
    "accumulate_pieces",
    "accumulate_sorted",
    "asu_grid_range",
    "finish_rows",
    "interp_scipy",
    "reintegrate_oracle",
    "reintegrate_rows",
]

#: One row per (storage chunk, original voxel), keyed by its ASU voxel: mdx2's four grid columns.
REINTEGRATE_DTYPE = np.dtype(
    [
        ("key", "<i8"),
        ("counts", "<f8"),
        ("background_counts", "<f8"),
        ("scale", "<f8"),
        ("multiplicity", "<f8"),
    ]
)
SUMS = ("counts", "background_counts", "scale", "multiplicity")


@dataclass(frozen=True, eq=False)
class ReintegrateModel:
    """What :func:`reintegrate_rows` needs besides the rows (small; shipped once to each worker).

    ``scales``: an object with ``scaling``, ``absorption``, ``detector``, ``offset`` models (each
    with mdx2's ``interp``, or None), or None. ``asu_range``: ((Hlo, Hhi), (Klo, Khi), (Llo, Lhi)),
    the ASU grid mdx2 allocates (:func:`asu_grid_range`).
    """

    ub_matrix: np.ndarray
    ops: np.ndarray | None  # Laue operators (N, 3, 3); None = P1
    asu: MillerExpression | None
    corrections: CorrectionGrid
    background: BackgroundGrid | None
    scales: object | None
    ndiv: tuple[int, int, int]
    asu_range: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def asu_grid_range(h, k, l, ndiv, ops, asu) -> tuple[tuple[int, int], ...]:
    """mdx2's output grid: ``round(h * ndiv)`` of every Miller grid point, mapped to the ASU; per
    axis ``(min(lowest, 0), highest)``."""
    hkl = np.empty((3, np.size(h)), dtype=np.int32)
    for i, (a, n) in enumerate(zip((h, k, l), ndiv, strict=True)):
        hkl[i] = np.round(np.ravel(a) * n)
    image, _ = asu_images(hkl, ops, asu)
    return tuple((min(int(image[i].min()), 0), int(image[i].max())) for i in range(3))


# -- interpolation, as scipy.ndimage.map_coordinates(order=1, mode="constant") -----------------------


def _fractions(x: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """mdx2's fractional grid coordinate ``f = np.interp(x, axis, arange(n))`` (within [0, n-1])."""
    n = np.size(axis)
    return np.interp(np.asarray(x, dtype=np.float64), np.asarray(axis, dtype=np.float64), np.arange(n))


@numba.njit(nogil=True, cache=True, inline="always")
def _bilinear(grids, col, c00, c01, c10, c11, wy0, wy1, wx0, wx1):
    """Column ``col`` of the correction grids at one point, the four corners summed in
    map_coordinates' order from 0.0."""
    f = 0.0
    f += grids[c00, col] * wy0 * wx0
    f += grids[c01, col] * wy0 * wx1
    f += grids[c10, col] * wy1 * wx0
    f += grids[c11, col] * wy1 * wx1
    return f


@numba.njit(nogil=True, cache=True, inline="always")
def _cell(f, n):
    """scipy's order-1 spline cell: ``start = floor(f)``, ``w0 = 1 - (f - start)``, ``w1 = 1 - w0``
    (the last weight is 1 minus the others, not ``f - start``); at ``f == n - 1`` the second index
    lies past the grid and scipy mirrors it to ``n - 2`` (weight 0, but a NaN there gives NaN)."""
    start = np.floor(f)
    w0 = 1.0 - (f - start)
    w1 = 1.0 - w0
    i0 = np.int64(start)
    i1 = i0 + 1
    if i1 >= n:
        i1 = 0 if n == 1 else n - 2
    return i0, i1, w0, w1


@numba.njit(nogil=True, cache=True)
def _interp2(fy, fx, ny, nx, grids, out):
    """Each grid of ``grids`` (k, ny * nx) at the points: corners in C order, ``(v * wy) * wx``
    added to 0.0 in turn, as map_coordinates."""
    for i in range(fy.size):
        y0, y1, wy0, wy1 = _cell(fy[i], ny)
        x0, x1, wx0, wx1 = _cell(fx[i], nx)
        for g in range(grids.shape[0]):
            t = 0.0
            t += grids[g, y0 * nx + x0] * wy0 * wx0
            t += grids[g, y0 * nx + x1] * wy0 * wx1
            t += grids[g, y1 * nx + x0] * wy1 * wx0
            t += grids[g, y1 * nx + x1] * wy1 * wx1
            out[g, i] = t


@numba.njit(nogil=True, cache=True)
def _interp3(fz, fy, fx, nz, ny, nx, grid, out):
    """``grid`` (nz * ny * nx) at the points: corners in C order, ``((v * wz) * wy) * wx``."""
    for i in range(fz.size):
        z0, z1, wz0, wz1 = _cell(fz[i], nz)
        y0, y1, wy0, wy1 = _cell(fy[i], ny)
        x0, x1, wx0, wx1 = _cell(fx[i], nx)
        t = 0.0
        for zc in range(2):
            z = z0 if zc == 0 else z1
            wz = wz0 if zc == 0 else wz1
            for yc in range(2):
                y = y0 if yc == 0 else y1
                wy = wy0 if yc == 0 else wy1
                base = (z * ny + y) * nx
                t += grid[base + x0] * wz * wy * wx0
                t += grid[base + x1] * wz * wy * wx1
        out[i] = t


def interp_scipy(values: np.ndarray, axes, points) -> np.ndarray:
    """Linear interpolation of a 2-D grid, a stack of 2-D grids (k, ny, nx) or a 3-D grid (with
    ``len(axes) == 3``), float64, at ``points`` (one array per axis), bit for bit as mdx2's
    ``interp2``/``interp3`` (``map_coordinates(order=1)``): the corners in C order, each
    ``value * w_axis0 * w_axis1 [* w_axis2]`` left to right, added to 0.0 in turn."""
    values = np.asarray(values, dtype=np.float64)
    f = [_fractions(x, a) for x, a in zip(points, axes, strict=True)]
    shape = tuple(np.size(a) for a in axes)
    if len(axes) == 3:
        if values.shape != shape:
            raise ValueError(f"grid of shape {values.shape}, expected {shape}")
        out = np.empty(f[0].size)
        _interp3(*f, *shape, np.ascontiguousarray(values).ravel(), out)
        return out
    if values.shape[-2:] != shape or values.ndim not in (2, 3):
        raise ValueError(f"grid(s) of shape {values.shape}, expected {shape} or (k, *{shape})")
    stack = np.ascontiguousarray(values.reshape(-1, shape[0] * shape[1]))
    out = np.empty((stack.shape[0], f[0].size))
    _interp2(*f, *shape, stack, out)
    return out[0] if values.ndim == 2 else out


# -- one chunk: the per-row values in one compiled pass -------------------------------------------------


def _axis(xp) -> np.ndarray:
    """An axis for :func:`_np_interp_index`: ``xp`` (float64, strictly increasing) over the slopes
    ``1 / (xp[j+1] - xp[j])`` numpy's ``interp`` divides by, the last entry ``(n-1) / (xp[-1] -
    xp[0])`` (to guess the interval of a point)."""
    xp = np.asarray(xp, dtype=np.float64).ravel()
    out = np.zeros((2, xp.size))
    out[0] = xp
    if xp.size > 1:
        fp = np.arange(xp.size, dtype=np.float64)
        out[1, :-1] = (fp[1:] - fp[:-1]) / (xp[1:] - xp[:-1])  # numpy's precomputed slopes
        out[1, -1] = (xp.size - 1) / (xp[-1] - xp[0])
    return out


@numba.njit(nogil=True, cache=True, inline="always")
def _np_interp_index(x, axis, left, right):
    """``np.interp(x, xp, np.arange(xp.size), left, right)`` for one float64 ``x`` (``axis`` from
    :func:`_axis`), operation for operation as numpy's C loop: ``slope * (x - xp[j]) + j`` with
    numpy's slope, NaN retried from the right, the exact-hit and last-point rules."""
    n = axis.shape[1]
    if np.isnan(x):
        return x
    if n == 1:
        if x < axis[0, 0]:
            return left
        if x > axis[0, 0]:
            return right
        return 0.0
    if x > axis[0, n - 1]:
        return right
    if x < axis[0, 0]:
        return left
    if x == axis[0, n - 1]:
        return np.float64(n - 1)
    # the interval xp[j] <= x < xp[j + 1] (unique: xp increases), guessed as if xp were evenly
    # spaced (grids are) and walked to: the j of numpy's binary search
    j = np.int64((x - axis[0, 0]) * axis[1, n - 1])
    j = min(max(j, 0), n - 2)
    while j > 0 and axis[0, j] > x:
        j -= 1
    while j < n - 2 and axis[0, j + 1] <= x:
        j += 1
    fj = np.float64(j)
    if axis[0, j] == x:
        return fj
    slope = axis[1, j]
    r = slope * (x - axis[0, j]) + fj
    # numpy retries from the right on NaN; both formed and one chosen: a branch here costs 3x
    r2 = slope * (x - axis[0, j + 1]) + np.float64(j + 1)
    return r if not np.isnan(r) else r2


@numba.njit(nogil=True, cache=True, inline="always")
def _lin1(f, u):
    """mdx2's InterpLin1.interp at one point, from its fractional index ``f`` (NaN outside: 0)."""
    if np.isnan(f):
        return 0.0
    b, fr = _bin(f, u.shape[0])
    return u[b] * (1 - fr) + u[b + 1] * fr


@numba.njit(nogil=True, cache=True, inline="always")
def _lin2(fx, fy, u):
    """mdx2's InterpLin2.interp at one point, from its fractional indices (NaN outside: 0)."""
    if np.isnan(fx) or np.isnan(fy):
        return 0.0
    xb, xf = _bin(fx, u.shape[0])
    yb, yf = _bin(fy, u.shape[1])
    return (
        u[xb, yb] * (1 - xf) * (1 - yf)
        + u[xb + 1, yb] * xf * (1 - yf)
        + u[xb, yb + 1] * (1 - xf) * yf
        + u[xb + 1, yb + 1] * xf * yf
    )


@numba.njit(nogil=True, cache=True, inline="always")
def _lin3(x, y, z, wx, wy, wz, fx, fy, fz, u):
    """mdx2's InterpLin3.interp at one point (inside by comparison with the end control points),
    from its (clamped) fractional indices."""
    nx, ny, nz = u.shape
    inside = (x >= wx[0, 0]) & (x <= wx[0, nx - 1]) & (y >= wy[0, 0]) & (y <= wy[0, ny - 1])
    if not (inside & (z >= wz[0, 0]) & (z <= wz[0, nz - 1])):
        return 0.0
    xb, xf = _bin(fx, nx)
    yb, yf = _bin(fy, ny)
    zb, zf = _bin(fz, nz)
    return (
        u[xb, yb, zb] * (1 - zf) * (1 - xf) * (1 - yf)
        + u[xb + 1, yb, zb] * (1 - zf) * xf * (1 - yf)
        + u[xb, yb + 1, zb] * (1 - zf) * (1 - xf) * yf
        + u[xb + 1, yb + 1, zb] * (1 - zf) * xf * yf
        + u[xb, yb, zb + 1] * zf * (1 - xf) * (1 - yf)
        + u[xb + 1, yb, zb + 1] * zf * xf * (1 - yf)
        + u[xb, yb + 1, zb + 1] * zf * (1 - xf) * yf
        + u[xb + 1, yb + 1, zb + 1] * zf * xf * yf
    )


@numba.njit(nogil=True, cache=True)
def _indices(x, offset, m, axis, left, right, out):
    """``out[t] = np.interp(x[offset + t], xp, arange, left, right)`` for ``t < m``: a short loop,
    so the processor overlaps the points (one point's search is a chain of dependent steps)."""
    for t in range(m):
        out[t] = _np_interp_index(x[offset + t], axis, left, right)


_BLOCK_ROWS = 512


@numba.njit(nogil=True, cache=True)
def _chunk_values(
    order, pixels_, counts_, phi_, iy_, ix_, seconds_, s_,
    grid_iy, grid_ix, grids, mult_factor, det,
    has_b, b_w, b_u, has_a, a_wx, a_wy, a_wz, a_u, has_d, d_wx, d_wy, d_u,
    has_c, c_ws, c_wphi, c_u, has_bkg, bkg_phi, bkg_iy, bkg_ix, bkg_rate,
    out,
):  # fmt: skip
    """mdx2's ``calc_corrections`` per row, rows taken in ``order``; ``out`` (n, 4): counts,
    background_counts, scale, multiplicity (float64), each formed with the operations of the numpy
    code it replaces (see :func:`reintegrate_oracle`). Rows go in blocks: the coordinates, then the
    fractional indices on each axis (one loop per axis), then the values."""
    ny = grid_iy.shape[1]
    nx = grid_ix.shape[1]
    nz_b = bkg_phi.shape[1]
    ny_b = bkg_iy.shape[1]
    nx_b = bkg_ix.shape[1]
    n = order.size
    B = _BLOCK_ROWS
    X = np.empty((5, B))  # phi, iy, ix, seconds, pixels
    F = np.zeros((13, B))  # fractional indices, by axis
    nan = np.nan
    for start in range(0, n, B):
        m = min(B, n - start)
        for t in range(m):
            r = order[start + t]
            pixels = np.float64(pixels_[r])
            X[4, t] = pixels
            X[0, t] = phi_[r] / pixels
            X[1, t] = iy_[r] / pixels
            X[2, t] = ix_[r] / pixels
            X[3, t] = seconds_[r]
        phi, iy, ix = X[0], X[1], X[2]
        _indices(iy, 0, m, grid_iy, 0.0, ny - 1.0, F[0])
        _indices(ix, 0, m, grid_ix, 0.0, nx - 1.0, F[1])
        if has_b:
            _indices(phi, 0, m, b_w, nan, nan, F[2])
        if has_a:
            _indices(ix, 0, m, a_wx, 0.0, a_wx.shape[1] - 1.0, F[3])
            _indices(iy, 0, m, a_wy, 0.0, a_wy.shape[1] - 1.0, F[4])
            _indices(phi, 0, m, a_wz, 0.0, a_wz.shape[1] - 1.0, F[5])
        if has_d:
            _indices(ix, 0, m, d_wx, nan, nan, F[6])
            _indices(iy, 0, m, d_wy, nan, nan, F[7])
        if has_c:
            _indices(s_, start, m, c_ws, nan, nan, F[8])
            _indices(phi, 0, m, c_wphi, nan, nan, F[9])
        if has_bkg:
            _indices(phi, 0, m, bkg_phi, 0.0, nz_b - 1.0, F[10])
            _indices(iy, 0, m, bkg_iy, 0.0, ny_b - 1.0, F[11])
            _indices(ix, 0, m, bkg_ix, 0.0, nx_b - 1.0, F[12])
        for t in range(m):
            i = start + t
            pixels = X[4, t]
            seconds = X[3, t]
            # corrections: scipy's map_coordinates(order=1) of each factor at (iy, ix)
            y0, y1, wy0, wy1 = _cell(F[0, t], ny)
            x0, x1, wx0, wx1 = _cell(F[1, t], nx)
            c00 = y0 * nx + x0
            c01 = y0 * nx + x1
            c10 = y1 * nx + x0
            c11 = y1 * nx + x1
            f0 = _bilinear(grids, 0, c00, c01, c10, c11, wy0, wy1, wx0, wx1)
            f1 = _bilinear(grids, 1, c00, c01, c10, c11, wy0, wy1, wx0, wx1)
            f2 = _bilinear(grids, 2, c00, c01, c10, c11, wy0, wy1, wx0, wx1)
            f3 = _bilinear(grids, 3, c00, c01, c10, c11, wy0, wy1, wx0, wx1)
            f4 = _bilinear(grids, 4, c00, c01, c10, c11, wy0, wy1, wx0, wx1)
            sa = f0
            sa *= f1
            sa *= f2
            sa *= f3
            multiplicity = pixels * f4 * mult_factor / det
            b = _lin1(F[2, t], b_u) if has_b else 1.0
            a = 1.0
            if has_a:
                a = _lin3(X[2, t], X[1, t], X[0, t], a_wx, a_wy, a_wz, F[3, t], F[4, t], F[5, t], a_u)
            d = _lin2(F[6, t], F[7, t], d_u) if has_d else 1.0
            c = _lin2(F[8, t], F[9, t], c_u) if has_c else 0.0
            bg_rate = 0.0
            if has_bkg:
                z0, z1, wz0, wz1 = _cell(F[10, t], nz_b)
                y0, y1, wy0, wy1 = _cell(F[11, t], ny_b)
                x0, x1, wx0, wx1 = _cell(F[12, t], nx_b)
                base = (z0 * ny_b + y0) * nx_b
                g = 0.0
                g += bkg_rate[base + x0] * wz0 * wy0 * wx0
                g += bkg_rate[base + x1] * wz0 * wy0 * wx1
                base = (z0 * ny_b + y1) * nx_b
                g += bkg_rate[base + x0] * wz0 * wy1 * wx0
                g += bkg_rate[base + x1] * wz0 * wy1 * wx1
                base = (z1 * ny_b + y0) * nx_b
                g += bkg_rate[base + x0] * wz1 * wy0 * wx0
                g += bkg_rate[base + x1] * wz1 * wy0 * wx1
                base = (z1 * ny_b + y1) * nx_b
                g += bkg_rate[base + x0] * wz1 * wy1 * wx0
                g += bkg_rate[base + x1] * wz1 * wy1 * wx1
                bg_rate = g
            out[i, 0] = np.float64(counts_[order[i]])
            out[i, 1] = seconds * (bg_rate + c * a * d * sa)
            out[i, 2] = seconds * sa * a * b * d
            out[i, 3] = multiplicity


@numba.njit(nogil=True, cache=True)
def _hkl_int32(keys):
    """(H, K, L) of packed keys as one (3, n) int32 array."""
    out = np.empty((3, keys.size), dtype=np.int32)
    field = (1 << KEY_BITS) - 1
    for i in range(keys.size):
        key = keys[i]
        out[0, i] = (key >> (2 * KEY_BITS)) - KEY_OFFSET
        out[1, i] = ((key >> KEY_BITS) & field) - KEY_OFFSET
        out[2, i] = (key & field) - KEY_OFFSET
    return out


@numba.njit(nogil=True, cache=True)
def _emit(image, values, ranges, out_keys, out_values):
    """The rows whose ASU image lies in mdx2's grid (``ranges`` (3, 2)), keyed by the image, in order;
    returns how many."""
    m = 0
    for i in range(values.shape[0]):
        H = np.int64(image[0, i])
        K = np.int64(image[1, i])
        L = np.int64(image[2, i])
        if H < ranges[0, 0] or H > ranges[0, 1] or K < ranges[1, 0] or K > ranges[1, 1]:
            continue
        if L < ranges[2, 0] or L > ranges[2, 1]:
            continue
        out_keys[m] = ((H + KEY_OFFSET) << (2 * KEY_BITS)) | ((K + KEY_OFFSET) << KEY_BITS) | (L + KEY_OFFSET)
        for c in range(4):
            out_values[m, 1 + c] = values[i, c]
        m += 1
    return m


_NONE1 = np.zeros(2)
_NOAXIS = _axis([0.0, 1.0])
_NONE2 = np.zeros((2, 2))
_NONE3 = np.zeros((2, 2, 2))


def _model_args(model: ReintegrateModel) -> tuple:
    """The grids and models of ``model`` as :func:`_chunk_values`' arguments (placeholders for absent
    models; a model without values ``u`` is neutral, as mdx2's)."""
    grid = model.corrections
    names = ("solid_angle", "attenuation", "polarization", "efficiency", "d3s")
    f64 = functools.partial(np.ascontiguousarray, dtype=np.float64)
    grids = f64(np.stack([np.reshape(grid[n], -1) for n in names], axis=1))
    scales = model.scales

    def fitted(name):
        m = getattr(scales, name, None)
        return m if m is not None and m.u is not None else None

    b, a, d, c = (fitted(n) for n in ("scaling", "absorption", "detector", "offset"))
    bkg = model.background
    return (
        _axis(grid.iy), _axis(grid.ix), grids,
        float(np.prod(model.ndiv)), float(np.linalg.det(np.asarray(model.ub_matrix, dtype=np.float64))),
        b is not None, *((_axis(b.phi), f64(b.u)) if b else (_NOAXIS, _NONE1)),
        a is not None,
        *((_axis(a.ix), _axis(a.iy), _axis(a.phi), f64(a.u)) if a else (_NOAXIS,) * 3 + (_NONE3,)),
        d is not None, *((_axis(d.ix), _axis(d.iy), f64(d.u)) if d else (_NOAXIS, _NOAXIS, _NONE2)),
        c is not None, *((_axis(c.s), _axis(c.phi), f64(c.u)) if c else (_NOAXIS, _NOAXIS, _NONE2)),
        bkg is not None,
        *((_axis(bkg.phi), _axis(bkg.iy), _axis(bkg.ix), f64(bkg.rate).ravel()) if bkg
          else (_NOAXIS, _NOAXIS, _NOAXIS, _NONE1)),
    )  # fmt: skip


def reintegrate_rows(rows: np.ndarray, model: ReintegrateModel) -> np.ndarray:
    """One storage chunk's partial rows (``PARTIAL_DTYPE``, any order, one per voxel) ->
    ``REINTEGRATE_DTYPE`` rows keyed by their ASU voxel, in the order mdx2 adds them (original voxel
    order), without the rows outside mdx2's grid.

    mdx2's ``calc_corrections`` per row is one compiled pass (:func:`_chunk_values`); ``s = |UB @
    hkl|`` for the offset model stays numpy's (the same matrix product as mdx2's)."""
    if rows.dtype != PARTIAL_DTYPE:
        raise TypeError(f"expected partial rows of dtype {PARTIAL_DTYPE}, got {rows.dtype}")
    n = rows.size
    order = np.argsort(rows["key"])  # one row per voxel: any sort gives the same order
    hkl = _hkl_int32(rows["key"][order])
    args = _model_args(model)
    s = _NONE1
    offset = getattr(model.scales, "offset", None)
    if offset is not None and offset.u is not None:
        ndiv = model.ndiv
        h, k, l = hkl[0] / ndiv[0], hkl[1] / ndiv[1], hkl[2] / ndiv[2]
        ub, hkl_f = np.asarray(model.ub_matrix, dtype=np.float64), np.stack((h, k, l))
        # mdx2's UB @ hkl; in blocks small enough for OpenBLAS to stay on this thread (its threads
        # spin and take the CPU from the other tasks); each column's product is the same
        v = np.concatenate(
            [ub @ hkl_f[:, i : i + 16384] for i in range(0, n, 16384)] or [np.zeros((3, 0))], axis=1
        )
        s = np.sqrt(np.sum(v * v, axis=0))
    values = np.empty((n, 4))
    _chunk_values(
        order, rows["pixels"], rows["counts"], rows["phi"], rows["iy"], rows["ix"], rows["seconds"], s,
        *args, values,
    )  # fmt: skip
    image, _ = asu_images(hkl, model.ops, model.asu, lowest=False)  # the images only
    out = np.empty(n, dtype=REINTEGRATE_DTYPE)
    ranges = np.asarray(model.asu_range, dtype=np.int64)
    m = _emit(image, values, ranges, out["key"], out.view(np.float64).reshape(n, 5))
    return out[:m]


# -- sums per ASU voxel ------------------------------------------------------------------------------


@numba.njit(nogil=True, cache=True)
def _accumulate(order, key_, counts_, bkg_, scale_, mult_):
    size = order.size
    keys = np.empty(size, dtype=np.int64)
    counts = np.empty(size, dtype=np.uint32)
    sums = np.empty((size, 3), dtype=np.float32)
    total = 0
    a = 0
    while a < size:
        key = key_[order[a]]
        c = np.uint32(0)
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        b = a
        while b < size and key_[order[b]] == key:
            r = order[b]
            c = np.uint32(np.float64(c) + counts_[r])
            # np.add.at(float32 grid, index, float64 values): float32(float64(sum) + value)
            s0 = np.float32(np.float64(s0) + bkg_[r])
            s1 = np.float32(np.float64(s1) + scale_[r])
            s2 = np.float32(np.float64(s2) + mult_[r])
            b += 1
        keys[total] = key
        counts[total] = c
        sums[total, 0] = s0
        sums[total, 1] = s1
        sums[total, 2] = s2
        total += 1
        a = b
    return keys[:total], counts[:total], sums[:total]


def accumulate_sorted(rows: np.ndarray) -> dict[str, np.ndarray]:
    """Sum ``REINTEGRATE_DTYPE`` rows per key as mdx2's grid does: a stable sort by key keeps each
    voxel's rows in the order given (chunk order), then each voxel's sums are formed in that order
    (float32 accumulators, float64 additions; counts uint32). Returns key and the four sums, by key."""
    if rows.dtype != REINTEGRATE_DTYPE:
        raise TypeError(f"expected rows of dtype {REINTEGRATE_DTYPE}, got {rows.dtype}")
    order = np.argsort(rows["key"], kind="stable")
    keys, counts, sums = _accumulate(
        order, rows["key"], rows["counts"], rows["background_counts"], rows["scale"], rows["multiplicity"]
    )
    return {
        "key": keys,
        "counts": counts,
        "background_counts": sums[:, 0].copy(),
        "scale": sums[:, 1].copy(),
        "multiplicity": sums[:, 2].copy(),
    }


@numba.njit(nogil=True, cache=True)
def _accumulate_dense(
    key_, counts_, bkg_, scale_, mult_, h0, k0, nk, l0, nl, counts, sums, touched, n_touched
):
    """Add rows into a dense block of voxels (H from ``h0``, K from ``k0``, L from ``l0``; C order)
    as mdx2's grids take them: ``float32(float64(sum) + value)`` (counts: uint32), row after row.
    A voxel all 0 before its row is listed in ``touched`` (from ``n_touched``; returns the new
    count): the voxels to read out, without scanning the block."""
    field = (1 << KEY_BITS) - 1
    for r in range(key_.size):
        key = key_[r]
        H = (key >> (2 * KEY_BITS)) - KEY_OFFSET
        K = ((key >> KEY_BITS) & field) - KEY_OFFSET
        L = (key & field) - KEY_OFFSET
        c = ((H - h0) * nk + (K - k0)) * nl + (L - l0)
        if counts[c] == 0 and sums[c, 0] == 0 and sums[c, 1] == 0 and sums[c, 2] == 0:
            touched[n_touched] = c
            n_touched += 1
        counts[c] = np.uint32(np.float64(counts[c]) + counts_[r])
        sums[c, 0] = np.float32(np.float64(sums[c, 0]) + bkg_[r])
        sums[c, 1] = np.float32(np.float64(sums[c, 1]) + scale_[r])
        sums[c, 2] = np.float32(np.float64(sums[c, 2]) + mult_[r])
    return n_touched


@numba.njit(nogil=True, cache=True)
def _dense_cells(cells, counts, sums, h0, k0, nk, l0, nl):
    """The voxels ``cells`` (sorted, repeats allowed) of a dense block with any sum not 0, in C (=
    key) order: keys, counts, sums; they are set back to 0 (the block is all 0 again)."""
    keys = np.empty(cells.size, dtype=np.int64)
    out_counts = np.empty(cells.size, dtype=np.uint32)
    out_sums = np.empty((cells.size, 3), dtype=np.float32)
    m = 0
    last = -1
    for i in range(cells.size):
        c = cells[i]
        if c == last:
            continue
        last = c
        if counts[c] != 0 or sums[c, 0] != 0 or sums[c, 1] != 0 or sums[c, 2] != 0:
            L = c % nl + l0
            K = (c // nl) % nk + k0
            H = c // (nl * nk) + h0
            keys[m] = ((H + KEY_OFFSET) << (2 * KEY_BITS)) | ((K + KEY_OFFSET) << KEY_BITS) | (L + KEY_OFFSET)
            out_counts[m] = counts[c]
            out_sums[m, 0] = sums[c, 0]
            out_sums[m, 1] = sums[c, 1]
            out_sums[m, 2] = sums[c, 2]
            m += 1
        counts[c] = 0
        sums[c, 0] = 0
        sums[c, 1] = 0
        sums[c, 2] = 0
    return keys[:m], out_counts[:m], out_sums[:m]


#: largest dense block :func:`accumulate_pieces` allocates (bytes); beyond, it sorts
DENSE_LIMIT = 512 * 2**20
# A thread's dense block, kept (all 0) for its next partition: fresh memory is zeroed by the kernel
# page by page, slower than the pass that clears the block while reading it out.
_BLOCK = threading.local()


def _dense_block(cells: int) -> tuple[np.ndarray, np.ndarray]:
    kept = getattr(_BLOCK, "kept", None)
    _BLOCK.kept = None
    if kept is not None and kept[0].size >= cells:
        return kept
    return np.zeros(cells, dtype=np.uint32), np.zeros((cells, 3), dtype=np.float32)


def accumulate_pieces(pieces, asu_range, dense_limit: int = DENSE_LIMIT) -> dict[str, np.ndarray]:
    """:func:`accumulate_sorted` of the concatenation of ``pieces`` (``REINTEGRATE_DTYPE`` arrays,
    e.g. memory-mapped slices of spilled runs, in the order mdx2 adds them), without concatenating
    or sorting: the rows are added into a dense block over the pieces' range of H and the ASU
    grid's K and L (16 bytes a voxel), when that block is at most ``dense_limit`` bytes."""
    pieces = [p for p in pieces if p.size]
    if not pieces:
        return accumulate_sorted(np.zeros(0, dtype=REINTEGRATE_DTYPE))
    h = [int((p["key"][i] >> (2 * KEY_BITS)) - KEY_OFFSET) for p in pieces for i in (0, -1)]
    h0, h1 = min(h), max(h)  # pieces are sorted (or bucketed) by H: first and last rows bound it
    (_, _), (k0, k1), (l0, l1) = asu_range
    nk, nl = k1 - k0 + 1, l1 - l0 + 1
    cells = (h1 - h0 + 1) * nk * nl
    if cells * 16 > dense_limit:
        return accumulate_sorted(np.concatenate(pieces))
    block = _dense_block(cells)
    counts, sums = block[0][:cells], block[1][:cells]
    touched = np.empty(sum(p.size for p in pieces), dtype=np.int64)
    n_touched = 0
    for p in pieces:
        if p.dtype != REINTEGRATE_DTYPE:
            raise TypeError(f"expected rows of dtype {REINTEGRATE_DTYPE}, got {p.dtype}")
        n_touched = _accumulate_dense(
            p["key"], p["counts"], p["background_counts"], p["scale"], p["multiplicity"],
            h0, k0, nk, l0, nl, counts, sums, touched, n_touched,
        )  # fmt: skip
    touched = np.sort(touched[:n_touched])
    keys, counts, sums = _dense_cells(touched, counts, sums, h0, k0, nk, l0, nl)
    _BLOCK.kept = block  # all 0 again
    return {
        "key": keys,
        "counts": counts,
        "background_counts": sums[:, 0].copy(),
        "scale": sums[:, 1].copy(),
        "multiplicity": sums[:, 2].copy(),
    }


@numba.njit(nogil=True, cache=True)
def _hkl_columns(keys, lo, n, out):
    """``h = ((H - lo) / n + lo / n)`` as float32 (numpy's operations on int64 H), k and l alike."""
    field = (1 << KEY_BITS) - 1
    for i in range(keys.size):
        key = keys[i]
        H = (key >> (2 * KEY_BITS)) - KEY_OFFSET
        K = ((key >> KEY_BITS) & field) - KEY_OFFSET
        L = (key & field) - KEY_OFFSET
        out[0, i] = np.float32((H - lo[0]) / n[0] + lo[0] / n[0])
        out[1, i] = np.float32((K - lo[1]) / n[1] + lo[1] / n[1])
        out[2, i] = np.float32((L - lo[2]) / n[2] + lo[2] / n[2])


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _intensity_columns(counts, bkg, scale, intensity, error):
    """numpy's ``((counts - bkg) / scale)`` and ``(sqrt(counts) / scale)`` on uint32 counts and
    float32 sums (computed in float64), as float32."""
    for i in range(counts.size):
        c = np.float64(counts[i])
        sc = np.float64(scale[i])
        intensity[i] = np.float32((c - np.float64(bkg[i])) / sc)
        error[i] = np.float32(np.sqrt(c) / sc)


def finish_rows(
    sums: dict[str, np.ndarray], ndiv, asu_range, output: str = "counts"
) -> dict[str, np.ndarray]:
    """mdx2's output rows from the sums per ASU voxel: voxels whose four sums are all 0 dropped (as
    ``to_table(sparse=True)``), ``h = (H - lo) / ndiv + lo / ndiv`` (the grid's axes) in float32, and
    with ``output="intensity"``: ``intensity = (counts - background_counts) / scale``,
    ``intensity_error = sqrt(counts) / scale`` (float32) in place of counts, background and scale."""
    if output not in ("counts", "intensity"):
        raise ValueError(f"output must be 'counts' or 'intensity', got {output!r}")
    keep = ~(
        (sums["counts"] == 0)
        & (sums["background_counts"] == 0)
        & (sums["scale"] == 0)
        & (sums["multiplicity"] == 0)
    )
    everything = bool(keep.all())
    keys = sums["key"] if everything else sums["key"][keep]
    hkl = np.empty((3, keys.size), dtype=np.float32)
    lo = np.array([r[0] for r in asu_range], dtype=np.int64)
    _hkl_columns(np.ascontiguousarray(keys), lo, np.asarray(ndiv, dtype=np.int64), hkl)
    out = {"h": hkl[0], "k": hkl[1], "l": hkl[2]}
    for name in SUMS:
        out[name] = sums[name] if everything else sums[name][keep]
    if output == "intensity":
        counts, bkg, scale = out.pop("counts"), out.pop("background_counts"), out.pop("scale")
        intensity = np.empty(counts.size, dtype=np.float32)
        error = np.empty(counts.size, dtype=np.float32)
        _intensity_columns(counts, bkg, scale, intensity, error)
        out["intensity"], out["intensity_error"] = intensity, error
    return out


# -- the oracle ---------------------------------------------------------------------------------------


def reintegrate_oracle(chunks: list[np.ndarray], model: ReintegrateModel, output: str = "counts"):
    """mdx2.reintegrate transcribed: each chunk's binned rows (``PARTIAL_DTYPE``) corrected with
    scipy's ``map_coordinates``, mapped to the ASU and added with ``np.add.at`` into dense grids,
    chunk after chunk; then the non-zero cells in C order. Small inputs only (tests)."""
    from scipy.ndimage import map_coordinates

    def interp(values, axes, points):
        coords = [np.interp(p, a, np.arange(a.size)) for p, a in zip(points, axes, strict=True)]
        return map_coordinates(values, np.stack(coords), order=1)

    (hlo, hhi), (klo, khi), (llo, lhi) = model.asu_range
    shape = (hhi - hlo + 1, khi - klo + 1, lhi - llo + 1)
    grids = {name: np.zeros(shape, dtype=np.uint32 if name == "counts" else np.float32) for name in SUMS}
    grid = model.corrections
    for rows in chunks:
        rows = rows[np.argsort(rows["key"], kind="stable")]
        H, K, L = unpack_keys(rows["key"])
        pixels = rows["pixels"]
        phi, iy, ix = rows["phi"] / pixels, rows["iy"] / pixels, rows["ix"] / pixels
        sa = interp(grid["solid_angle"], (grid.iy, grid.ix), (iy, ix))
        for name in ("attenuation", "polarization", "efficiency"):
            sa *= interp(grid[name], (grid.iy, grid.ix), (iy, ix))
        d3s = interp(grid["d3s"], (grid.iy, grid.ix), (iy, ix))
        multiplicity = pixels * d3s * np.prod(model.ndiv) / np.linalg.det(model.ub_matrix)
        scales = model.scales
        models = {n: getattr(scales, n, None) for n in ("scaling", "absorption", "detector", "offset")}
        b = models["scaling"].interp(phi) if models["scaling"] else 1.0
        a = models["absorption"].interp(ix, iy, phi) if models["absorption"] else 1.0
        d = models["detector"].interp(ix, iy) if models["detector"] else 1.0
        if models["offset"]:
            s = model.ub_matrix @ np.stack((H / model.ndiv[0], K / model.ndiv[1], L / model.ndiv[2]))
            c = models["offset"].interp(np.sqrt(np.sum(s * s, axis=0)), phi)
        else:
            c = 0.0
        bkg = model.background
        bg_rate = interp(bkg.rate, (bkg.phi, bkg.iy, bkg.ix), (phi, iy, ix)) if bkg is not None else 0.0
        values = {
            "counts": rows["counts"].astype(np.float64),
            "background_counts": rows["seconds"] * (bg_rate + c * a * d * sa),
            "scale": rows["seconds"] * sa * a * b * d,
            "multiplicity": multiplicity,
        }
        hkl = np.stack((H, K, L)).astype(np.int32)
        image, _ = asu_images(hkl, model.ops, model.asu)
        index = (image[0] - hlo, image[1] - klo, image[2] - llo)
        inside = np.all([(i >= 0) & (i < n) for i, n in zip(index, shape, strict=True)], axis=0)
        index = tuple(i[inside] for i in index)
        for name in SUMS:
            np.add.at(grids[name], index, values[name][inside])
    nonzero = ~np.all([g == 0 for g in grids.values()], axis=0)
    cells = np.nonzero(nonzero)
    keys = pack_keys(cells[0] + hlo, cells[1] + klo, cells[2] + llo)
    sums = {"key": keys, **{name: g[cells] for name, g in grids.items()}}
    return finish_rows(sums, model.ndiv, model.asu_range, output)
