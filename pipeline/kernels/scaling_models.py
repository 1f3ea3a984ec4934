"""mdx2.scale's four models, evaluated exactly as mdx2 1.0.5 evaluates them.

A model is a grid of control points (axes ``w``, increasing) and values ``u`` there (Fortran-shaped:
``u.shape == (Nx, Ny, ...)``); between control points it is piecewise (bi/tri)linear:

=================  ==========================  =========================  ======================
model              coordinates                 mdx2 class                 absent model means
=================  ==========================  =========================  ======================
ScalingModel       phi                         mdx2.scaling.ScalingModel  b = 1
AbsorptionModel    ix, iy, phi                 AbsorptionModel            a = 1
DetectorModel      ix, iy                      DetectorModel              d = 1
OffsetModel        s, phi                      OffsetModel                c = 0
=================  ==========================  =========================  ======================

``interp`` reproduces mdx2's ``InterpLin1/2/3.interp`` bit for bit: the same ``np.interp`` to
fractional bin positions, the same edge rule (the last control point belongs to the last bin), the same
product order of the weights, the result in the dtype of the coordinates (mdx2 starts from
``np.zeros_like(x)``), and zero outside the grid (mdx2 does not extrapolate). A model with ``u=None``
evaluates to its neutral value in float64, as mdx2's.

:func:`interp1_oracle` etc. are the slow, obviously-correct per-point versions the tests compare with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

__all__ = [
    "AbsorptionModel",
    "DetectorModel",
    "OffsetModel",
    "ScalingModel",
    "interp1",
    "interp1_oracle",
    "interp2",
    "interp2_oracle",
    "interp3",
    "interp3_oracle",
]


# --------------------------------------------------------------------------------------------------
# kernels: mdx2.scaling.InterpLin1/2/3.interp


def _bins_outside_nan(x: np.ndarray, w: np.ndarray):
    """Fractional positions of ``x`` on the axis ``w`` (NaN outside), as InterpLin1/2._map."""
    n = w.size
    return np.interp(x, w, np.arange(n), left=np.nan, right=np.nan)


def _floor_bins(f: np.ndarray, n: int):
    b = np.floor(f).astype(int)
    b[b == (n - 1)] -= 1  # the last control point belongs to the last bin
    return b, f - b


def _fast(x: np.ndarray, u: np.ndarray) -> bool:
    """The numba kernels below (same operations, in one pass) serve float32 or float64 coordinates and
    float64 values: numpy's path computes in float64 either way (``np.interp`` positions, float64
    ``u``) and casts only when storing into ``zeros_like(x)``, as the kernels' ``out[i] = ...`` does;
    other dtypes take numpy's path."""
    return x.dtype in (np.float32, np.float64) and u.dtype == np.float64 and x.ndim == 1


@numba.njit(nogil=True, cache=True, inline="always")
def _bin(f, n):
    b = np.int64(np.floor(f))
    if b == n - 1:
        b -= 1
    return b, f - b


@numba.njit(nogil=True, cache=True)
def _interp1_points(f, u, out):
    for i in range(f.size):
        if np.isnan(f[i]):
            continue
        b, fr = _bin(f[i], u.shape[0])
        out[i] = u[b] * (1 - fr) + u[b + 1] * fr


@numba.njit(nogil=True, cache=True)
def _interp2_points(fx, fy, u, out):
    nx, ny = u.shape
    for i in range(fx.size):
        if np.isnan(fx[i]) or np.isnan(fy[i]):
            continue
        xb, xf = _bin(fx[i], nx)
        yb, yf = _bin(fy[i], ny)
        out[i] = (
            u[xb, yb] * (1 - xf) * (1 - yf)
            + u[xb + 1, yb] * xf * (1 - yf)
            + u[xb, yb + 1] * (1 - xf) * yf
            + u[xb + 1, yb + 1] * xf * yf
        )


@numba.njit(nogil=True, cache=True)
def _interp3_points(x, y, z, wx, wy, wz, fx, fy, fz, u, out):
    nx, ny, nz = u.shape
    for i in range(x.size):
        inside = (x[i] >= wx[0]) & (x[i] <= wx[-1]) & (y[i] >= wy[0]) & (y[i] <= wy[-1])
        if not (inside & (z[i] >= wz[0]) & (z[i] <= wz[-1])):
            continue
        xb, xf = _bin(fx[i], nx)  # fractions are >= 0 inside: floor is InterpLin3's truncation
        yb, yf = _bin(fy[i], ny)
        zb, zf = _bin(fz[i], nz)
        out[i] = (
            u[xb, yb, zb] * (1 - zf) * (1 - xf) * (1 - yf)
            + u[xb + 1, yb, zb] * (1 - zf) * xf * (1 - yf)
            + u[xb, yb + 1, zb] * (1 - zf) * (1 - xf) * yf
            + u[xb + 1, yb + 1, zb] * (1 - zf) * xf * yf
            + u[xb, yb, zb + 1] * zf * (1 - xf) * (1 - yf)
            + u[xb + 1, yb, zb + 1] * zf * xf * (1 - yf)
            + u[xb, yb + 1, zb + 1] * zf * (1 - xf) * yf
            + u[xb + 1, yb + 1, zb + 1] * zf * xf * yf
        )


def interp1(x: np.ndarray, w: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Piecewise-linear ``u`` on axis ``w`` at ``x`` (mdx2's InterpLin1.interp)."""
    x = np.asarray(x)
    if _fast(x, u):
        out = np.zeros_like(x)
        _interp1_points(_bins_outside_nan(x, w), u, out)
        return out
    f = _bins_outside_nan(x, w)
    ind = np.nonzero(~np.isnan(f))[0]
    b, frac = _floor_bins(f[ind], w.size)
    vals = np.zeros_like(x)
    vals[ind] = u[b] * (1 - frac) + u[b + 1] * frac
    return vals


def interp2(x: np.ndarray, y: np.ndarray, wx: np.ndarray, wy: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Bilinear ``u[(Nx, Ny)]`` at ``(x, y)`` (mdx2's InterpLin2.interp)."""
    x = np.asarray(x)
    if _fast(x, u):
        out = np.zeros_like(x)
        _interp2_points(_bins_outside_nan(x, wx), _bins_outside_nan(np.asarray(y), wy), u, out)
        return out
    fx = _bins_outside_nan(x, wx)
    fy = _bins_outside_nan(np.asarray(y), wy)
    ind = np.nonzero(~np.isnan(fx) & ~np.isnan(fy))[0]
    xb, xf = _floor_bins(fx[ind], wx.size)
    yb, yf = _floor_bins(fy[ind], wy.size)
    vals = np.zeros_like(x)
    vals[ind] = (
        u[xb, yb] * (1 - xf) * (1 - yf)
        + u[xb + 1, yb] * xf * (1 - yf)
        + u[xb, yb + 1] * (1 - xf) * yf
        + u[xb + 1, yb + 1] * xf * yf
    )
    return vals


def interp3(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    wx: np.ndarray,
    wy: np.ndarray,
    wz: np.ndarray,
    u: np.ndarray,
) -> np.ndarray:
    """Trilinear ``u[(Nx, Ny, Nz)]`` at ``(x, y, z)`` (mdx2's InterpLin3.interp).

    InterpLin3 differs from InterpLin1/2 in two details kept here: points are selected by comparing
    the coordinates with the end control points (not by NaN), and bins are found by truncation."""
    x, y, z = np.asarray(x), np.asarray(y), np.asarray(z)
    if _fast(x, u) and y.dtype == z.dtype == x.dtype:
        # np.interp is elementwise: on every point it gives the inside points' fractions unchanged
        f = [np.interp(c, w, np.arange(w.size)) for c, w in ((x, wx), (y, wy), (z, wz))]
        out = np.zeros_like(x)
        _interp3_points(x, y, z, wx, wy, wz, *f, u, out)
        return out
    inside = (x >= wx[0]) & (x <= wx[-1]) & (y >= wy[0]) & (y <= wy[-1]) & (z >= wz[0]) & (z <= wz[-1])
    ind = np.nonzero(inside)[0]
    bins = []
    for c, w in ((x, wx), (y, wy), (z, wz)):
        f = np.interp(c[ind], w, np.arange(w.size))
        b = f.astype(int)
        b[b == (w.size - 1)] -= 1
        bins.append((b, f - b))
    (xb, xf), (yb, yf), (zb, zf) = bins
    vals = np.zeros_like(x)
    vals[ind] = (
        u[xb, yb, zb] * (1 - zf) * (1 - xf) * (1 - yf)
        + u[xb + 1, yb, zb] * (1 - zf) * xf * (1 - yf)
        + u[xb, yb + 1, zb] * (1 - zf) * (1 - xf) * yf
        + u[xb + 1, yb + 1, zb] * (1 - zf) * xf * yf
        + u[xb, yb, zb + 1] * zf * (1 - xf) * (1 - yf)
        + u[xb + 1, yb, zb + 1] * zf * xf * (1 - yf)
        + u[xb, yb + 1, zb + 1] * zf * (1 - xf) * yf
        + u[xb + 1, yb + 1, zb + 1] * zf * xf * yf
    )
    return vals


# --------------------------------------------------------------------------------------------------
# slow oracles: one point at a time, from the definition


def _locate(c: float, w: np.ndarray) -> tuple[int, float] | None:
    """Bin and fraction of ``c`` on axis ``w``; None outside [w[0], w[-1]]."""
    if not (w[0] <= c <= w[-1]):
        return None
    f = float(np.interp(c, w, np.arange(w.size)))
    b = min(int(np.floor(f)), w.size - 2)
    return b, f - b


def _oracle(coords: list[np.ndarray], axes: list[np.ndarray], u: np.ndarray) -> np.ndarray:
    out = np.zeros_like(np.asarray(coords[0]))
    for i in range(out.size):
        where = [_locate(c[i], w) for c, w in zip(coords, axes, strict=True)]
        if any(loc is None for loc in where):
            continue
        total = 0.0
        for corner in np.ndindex(*(2,) * len(axes)):
            weight = 1.0
            for (_, frac), bit in zip(where, corner, strict=True):
                weight *= frac if bit else 1 - frac
            total += weight * u[tuple(b + bit for (b, _), bit in zip(where, corner, strict=True))]
        out[i] = total
    return out


def interp1_oracle(x, w, u):
    return _oracle([x], [w], u)


def interp2_oracle(x, y, wx, wy, u):
    return _oracle([x, y], [wx, wy], u)


def interp3_oracle(x, y, z, wx, wy, wz, u):
    return _oracle([x, y, z], [wx, wy, wz], u)


# --------------------------------------------------------------------------------------------------
# the models


def _check_grid(name: str, axes: dict[str, np.ndarray], u: np.ndarray | None) -> None:
    for axis, w in axes.items():
        if w.ndim != 1 or w.size < 2:
            raise ValueError(f"{name}: axis {axis!r} needs at least 2 control points, got shape {w.shape}")
        if not np.all(np.diff(w) > 0):
            raise ValueError(f"{name}: axis {axis!r} must be strictly increasing")
    shape = tuple(w.size for w in axes.values())
    if u is not None and u.shape != shape:
        raise ValueError(f"{name}: u has shape {u.shape}, expected {shape} from the axes {list(axes)}")


@dataclass(frozen=True, eq=False)
class ScalingModel:
    """Per-frame scale ``b(phi)``."""

    phi: np.ndarray
    u: np.ndarray | None = None

    AXES = ("phi",)
    NEUTRAL = 1.0

    def __post_init__(self):
        _check_grid(type(self).__name__, {"phi": self.phi}, self.u)

    def interp(self, phi: np.ndarray) -> np.ndarray:
        if self.u is None:
            return np.ones_like(phi, dtype=np.double)
        return interp1(phi, self.phi, self.u)


@dataclass(frozen=True, eq=False)
class AbsorptionModel:
    """Smooth absorption surface ``a(ix, iy, phi)``."""

    ix: np.ndarray
    iy: np.ndarray
    phi: np.ndarray
    u: np.ndarray | None = None

    AXES = ("ix", "iy", "phi")
    NEUTRAL = 1.0

    def __post_init__(self):
        _check_grid(type(self).__name__, {"ix": self.ix, "iy": self.iy, "phi": self.phi}, self.u)

    def interp(self, ix: np.ndarray, iy: np.ndarray, phi: np.ndarray) -> np.ndarray:
        if self.u is None:
            return np.ones_like(ix, dtype=np.double)
        return interp3(ix, iy, phi, self.ix, self.iy, self.phi, self.u)


@dataclass(frozen=True, eq=False)
class DetectorModel:
    """Detector efficiency ``d(ix, iy)``."""

    ix: np.ndarray
    iy: np.ndarray
    u: np.ndarray | None = None

    AXES = ("ix", "iy")
    NEUTRAL = 1.0

    def __post_init__(self):
        _check_grid(type(self).__name__, {"ix": self.ix, "iy": self.iy}, self.u)

    def interp(self, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
        if self.u is None:
            return np.ones_like(ix, dtype=np.double)
        return interp2(ix, iy, self.ix, self.iy, self.u)


@dataclass(frozen=True, eq=False)
class OffsetModel:
    """Additive offset ``c(s, phi)``."""

    s: np.ndarray
    phi: np.ndarray
    u: np.ndarray | None = None

    AXES = ("s", "phi")
    NEUTRAL = 0.0

    def __post_init__(self):
        _check_grid(type(self).__name__, {"s": self.s, "phi": self.phi}, self.u)

    def interp(self, s: np.ndarray, phi: np.ndarray) -> np.ndarray:
        if self.u is None:
            return np.zeros_like(s, dtype=np.double)
        return interp2(s, phi, self.s, self.phi, self.u)
