"""The least-squares side of ``mdx2.scale``: interpolation weights, normal equations, regularisers, solver.

mdx2 1.0.5 (``mdx2/scaling.py``) fits each model ``u`` (values at the control points of a 1-, 2- or
3-D grid) by forming, for the rows ``r`` not masked::

    A[r, :] = q_r * interp_weights(row r)       (q = Ipred / sigma, or 1 / sigma for the offset)
    y[r]    = ...                               (the scaled intensity over sigma)
    AA = A.T A,   Ay = A.T y,   yy = y . y       (sums over rows: additive per partition)
    G  = AA + alpha_i * B_i.T B_i + ...          (regularisers: model-sized)
    u  = scipy.sparse.linalg.lsqr(G, Ay)[0]      (atol = btol = 1e-6, conlim = 1e8, iter_lim = 2 n)
    x2 = (u.AA.u - 2 u.Ay + yy) / n_rows

Here ``AA`` is held as a *stencil*: ``S[p, c]`` is ``AA[p, p + offset(c)]`` for the ``3**d``
neighbour offsets ``c`` of a ``d``-dimensional grid (the only entries an interpolation with
``2**d`` corners can fill), so partial sums are ``n_params x 3**d`` arrays whatever the number of
rows; :func:`accumulate` (numba) adds one partition's rows, :func:`accumulate_oracle` is the dense
``A.T @ A`` it is tested against. :func:`lsqr` is scipy's LSQR transcribed line by line (same
iteration, same stopping rule) on our own CSR matrix, so no scipy is needed at run time.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numba
import numpy as np

__all__ = [
    "Grid",
    "NormalEquations",
    "Sparse",
    "accumulate",
    "accumulate_oracle",
    "calc_points",
    "lsqr",
    "regulariser",
    "solve",
]


# ---------------------------------------------------------------------------------------------- grids


def calc_points(vmin, vmax, dx=1.0, nx=None, integer_limits=True) -> np.ndarray:
    """Control points of an axis, as mdx2's ``_ModelRefiner._calc_points`` (same numpy scalar types:
    ``vmin``/``vmax`` are the masked minimum and maximum of the float32 column)."""
    x_min, x_max = vmin, vmax
    if integer_limits:
        x_min = np.floor(x_min)
        x_max = np.ceil(x_max)
    if nx is None:
        nx = np.round((x_max - x_min) / dx).astype(int) + 1
    return np.linspace(x_min, x_max, nx)


@dataclass(frozen=True, eq=False)
class Grid:
    """A model's control-point axes (1 to 3) in mdx2's order (Fortran flattening: first axis fastest).

    ``inclusive`` selects mdx2's InterpLin3 rule for rows on the grid (``x >= w[0] & x <= w[-1]``,
    ``trunc``) instead of InterpLin1/2's (``np.interp(..., left=nan, right=nan)``, ``floor``); both
    keep the same rows and bins for finite coordinates.
    """

    axes: tuple[np.ndarray, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(a.size for a in self.axes)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.axes)

    def map(self, *coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows inside the grid, their lower corner bins ``(d, n)`` and fractions ``(d, n)``, as mdx2's
        ``InterpLinN._map``."""
        n = self.shape
        if self.ndim == 3:
            inside = np.ones(coords[0].shape, dtype=bool)
            for x, w in zip(coords, self.axes, strict=True):
                inside &= (x >= w[0]) & (x <= w[-1])
            ind = np.nonzero(inside)[0]
            f = [np.interp(x[ind], w, np.arange(m)) for x, w, m in zip(coords, self.axes, n, strict=True)]
            bins = [fi.astype(int) for fi in f]
        else:
            f = [
                np.interp(x, w, np.arange(m), left=np.nan, right=np.nan)
                for x, w, m in zip(coords, self.axes, n, strict=True)
            ]
            ok = np.ones(coords[0].shape, dtype=bool)
            for fi in f:
                ok &= ~np.isnan(fi)
            ind = np.nonzero(ok)[0].astype(int)
            f = [fi[ind] for fi in f]
            bins = [np.floor(fi).astype(int) for fi in f]
        for b, m in zip(bins, n, strict=True):
            b[b == m - 1] -= 1
        fracs = [fi - b for fi, b in zip(f, bins, strict=True)]
        if not bins:
            return ind, np.zeros((0, 0), int), np.zeros((0, 0))
        return ind, np.stack(bins), np.stack(fracs)


def _corners(ndim: int) -> np.ndarray:
    """The ``2**d`` corner offsets in mdx2's order of the A matrix (x fastest, then y, then z)."""
    return np.array([c[::-1] for c in itertools.product((0, 1), repeat=ndim)], dtype=np.int64)


def _stencil(shape: tuple[int, ...]):
    """Corner offsets, the stencil code of each corner pair, and the flat offset of each code."""
    d = len(shape)
    corners = _corners(d)
    strides = np.cumprod((1, *shape[:-1])).astype(np.int64)
    codes = np.zeros((len(corners), len(corners)), dtype=np.int64)
    for a, b in itertools.product(range(len(corners)), repeat=2):
        delta = corners[b] - corners[a]
        codes[a, b] = int(sum((delta[j] + 1) * 3**j for j in range(d)))
    deltas = np.array([c[::-1] for c in itertools.product((-1, 0, 1), repeat=d)], dtype=np.int64)
    offsets = deltas @ strides
    return corners, codes, deltas, offsets, strides


# -------------------------------------------------------------------------------- normal equations


@dataclass
class NormalEquations:
    """Partial sums of one model's normal equations: ``S`` (AA as a stencil), ``Ay``, ``yy``, rows."""

    S: np.ndarray  # (n_params, 3**d)
    Ay: np.ndarray  # (n_params,)
    yy: float
    n: int

    def __add__(self, other: NormalEquations) -> NormalEquations:
        return NormalEquations(self.S + other.S, self.Ay + other.Ay, self.yy + other.yy, self.n + other.n)

    @classmethod
    def zeros(cls, grid: Grid) -> NormalEquations:
        return cls(np.zeros((grid.size, 3**grid.ndim)), np.zeros(grid.size), 0.0, 0)


@numba.njit(nogil=True, cache=True)
def _accumulate(bins, fracs, q, y, corners, codes, strides, S, Ay):  # pragma: no cover - numba
    d, n = bins.shape
    k = corners.shape[0]
    idx = np.empty(k, dtype=np.int64)
    wts = np.empty(k)
    for r in range(n):
        for a in range(k):
            flat = 0
            w = 1.0
            for j in range(d):
                o = corners[a, j]
                flat += (bins[j, r] + o) * strides[j]
                w *= fracs[j, r] if o == 1 else 1.0 - fracs[j, r]
            idx[a] = flat
            wts[a] = w
        qr = q[r]
        yr = y[r]
        for a in range(k):
            wa = wts[a] * qr
            Ay[idx[a]] += wa * yr
            for b in range(k):
                S[idx[a], codes[a, b]] += wa * (wts[b] * qr)


@numba.njit(nogil=True, cache=True)
def _interp_index(x, w):  # pragma: no cover - numba
    """``np.interp(x, w, arange(w.size))`` for ``w[0] <= x <= w[-1]``, as numpy computes it: the bin
    ``j`` with ``w[j] <= x < w[j + 1]`` (the last point: ``w.size - 1``), then
    ``slope * (x - w[j]) + j`` with ``slope = (j + 1 - j) / (w[j + 1] - w[j])``."""
    m = w.size
    if x == w[m - 1]:
        return np.float64(m - 1)
    lo, hi = 0, m - 1
    while hi - lo > 1:  # w[lo] <= x < w[hi]
        mid = (lo + hi) // 2
        if w[mid] <= x:
            lo = mid
        else:
            hi = mid
    slope = (np.float64(lo + 1) - np.float64(lo)) / (w[lo + 1] - w[lo])
    return slope * (x - w[lo]) + np.float64(lo)


@numba.njit(nogil=True, cache=True)
def _accumulate_rows(d, c0, c1, c2, w0, w1, w2, q, y, corners, codes, strides, S, Ay):  # pragma: no cover
    """:func:`_accumulate` on every row, mapping rows to bins on the fly (:meth:`Grid.map`'s rules):
    a row counts when ``w[0] <= c <= w[-1]`` on every axis; its position is ``np.interp``'s, its bin
    ``trunc`` of it, moved down on the last control point; its fraction the remainder."""
    n = y.size
    k = corners.shape[0]
    idx = np.empty(k, dtype=np.int64)
    wts = np.empty(k)
    bins = np.zeros(3, dtype=np.int64)
    fracs = np.zeros(3)
    for r in range(n):
        x0 = np.float64(c0[r])
        if not (x0 >= w0[0] and x0 <= w0[w0.size - 1]):
            continue
        if d > 1:
            x1 = np.float64(c1[r])
            if not (x1 >= w1[0] and x1 <= w1[w1.size - 1]):
                continue
        if d > 2:
            x2 = np.float64(c2[r])
            if not (x2 >= w2[0] and x2 <= w2[w2.size - 1]):
                continue
        for j in range(d):
            if j == 0:
                f = _interp_index(x0, w0)
                m = w0.size
            elif j == 1:
                f = _interp_index(np.float64(c1[r]), w1)
                m = w1.size
            else:
                f = _interp_index(np.float64(c2[r]), w2)
                m = w2.size
            b = np.int64(f)
            if b == m - 1:
                b -= 1
            bins[j] = b
            fracs[j] = f - b
        for a in range(k):
            flat = 0
            w = 1.0
            for j in range(d):
                o = corners[a, j]
                flat += (bins[j] + o) * strides[j]
                w *= fracs[j] if o == 1 else 1.0 - fracs[j]
            idx[a] = flat
            wts[a] = w
        qr = q[r]
        yr = y[r]
        for a in range(k):
            wa = wts[a] * qr
            Ay[idx[a]] += wa * yr
            for b2 in range(k):
                S[idx[a], codes[a, b2]] += wa * (wts[b2] * qr)


def accumulate(grid: Grid, coords, q: np.ndarray, y: np.ndarray) -> NormalEquations:
    """Normal equations of rows with grid coordinates ``coords``, row factors ``q`` and targets ``y``
    (the rows inside the grid, binned as :meth:`Grid.map` bins them, in one numba pass;
    :func:`accumulate_mapped` is the same through :meth:`Grid.map` and numpy)."""
    out = NormalEquations.zeros(grid)
    corners, codes, _, _, strides = _stencil(grid.shape)
    q = np.ascontiguousarray(np.broadcast_to(np.asarray(q, dtype=np.float64), np.shape(y)))
    y = np.ascontiguousarray(y, dtype=np.float64)
    if y.size:
        d = grid.ndim
        cs = [np.ascontiguousarray(c) for c in coords]
        ws = [np.ascontiguousarray(w, dtype=np.float64) for w in grid.axes]
        cs += [cs[0]] * (3 - d)
        ws += [ws[0]] * (3 - d)
        _accumulate_rows(d, *cs, *ws, q, y, corners, codes, strides, out.S, out.Ay)
    out.yy = float(np.sum(y**2))
    out.n = int(y.size)
    return out


def accumulate_mapped(grid: Grid, coords, q: np.ndarray, y: np.ndarray) -> NormalEquations:
    """:func:`accumulate` through :meth:`Grid.map` (mdx2's ``_map``, in numpy) and :func:`_accumulate`."""
    out = NormalEquations.zeros(grid)
    ind, bins, fracs = grid.map(*coords)
    corners, codes, _, _, strides = _stencil(grid.shape)
    q = np.asarray(q, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if ind.size:
        _accumulate(
            np.ascontiguousarray(bins, dtype=np.int64),
            np.ascontiguousarray(fracs, dtype=np.float64),
            np.ascontiguousarray(np.broadcast_to(q, y.shape)[ind]),
            np.ascontiguousarray(y[ind]),
            corners,
            codes,
            strides,
            out.S,
            out.Ay,
        )
    out.yy = float(np.sum(y**2))
    out.n = int(y.size)
    return out


@numba.njit(nogil=True, cache=True, error_model="numpy")  # x / 0 gives inf or nan, as numpy
def _merge_rows(I, sigma, scale, offset, mask, ih, counts, wm, Iw):  # pragma: no cover - numba
    one = np.float32(1.0)
    for r in range(I.size):
        if mask[r]:
            continue
        s = scale[r]
        i = I[r] / s - offset[r]  # float32, as numpy's arrays
        sg = sigma[r] / s
        w = one / (sg * sg)  # numpy's sigma**2 is sigma * sigma
        g = ih[r]
        counts[g] += 1
        wm[g] += np.float64(w)
        Iw[g] += np.float64(i * w)


def merge_sums(I, sigma, scale, offset, mask, ih, n_groups: int):
    """mdx2's ``ScaledData.merge`` sums of the unmasked rows: per group the count, ``sum(w)`` and
    ``sum(w I)`` with ``I = I/scale - offset``, ``w = 1/(sigma/scale)**2`` in float32 per row and float64
    sums in row order (``np.bincount``'s); :func:`merge_sums_oracle` is the numpy expression."""
    counts = np.zeros(n_groups, np.int64)
    wm = np.zeros(n_groups)
    Iw = np.zeros(n_groups)
    f32 = all(a.dtype == np.float32 for a in (I, sigma, scale, offset))
    if not f32:
        return merge_sums_oracle(I, sigma, scale, offset, mask, ih, n_groups)
    with np.errstate(all="ignore"):
        _merge_rows(I, sigma, scale, offset, mask, ih, counts, wm, Iw)
    return counts, wm, Iw


def merge_sums_oracle(I, sigma, scale, offset, mask, ih, n_groups: int):
    keep = ~mask
    with np.errstate(all="ignore"):
        Ik = I[keep] / scale[keep] - offset[keep]
        sk = sigma[keep] / scale[keep]
        w = 1 / sk**2
        Iw = Ik * w
    ind = ih[keep]
    return (
        np.bincount(ind, minlength=n_groups),
        np.bincount(ind, weights=w, minlength=n_groups),
        np.bincount(ind, weights=Iw, minlength=n_groups),
    )


def design_matrix_oracle(grid: Grid, coords) -> np.ndarray:
    """Dense ``A0`` (rows x params), literally as mdx2's ``InterpLinN.A`` (small inputs only)."""
    ind, bins, fracs = grid.map(*coords)
    A = np.zeros((coords[0].size, grid.size))
    for corner in _corners(grid.ndim):
        w = np.ones(ind.size)
        sub = []
        for j in range(grid.ndim):
            w = w * (fracs[j] if corner[j] else 1 - fracs[j])
            sub.append(bins[j] + corner[j])
        cols = np.ravel_multi_index(tuple(sub), grid.shape, order="F") if sub else np.zeros(0, int)
        np.add.at(A, (ind, cols), w)
    return A


def accumulate_oracle(grid: Grid, coords, q, y) -> tuple[np.ndarray, np.ndarray, float]:
    """Dense ``AA``, ``Ay``, ``yy`` from the dense design matrix (the oracle of :func:`accumulate`)."""
    A = np.asarray(q, float)[:, None] * design_matrix_oracle(grid, coords)
    y = np.asarray(y, float)
    return A.T @ A, A.T @ y, float(np.sum(y**2))


# -------------------------------------------------------------------------------------- sparse


@dataclass(frozen=True, eq=False)
class Sparse:
    """A square sparse matrix in CSR form (sorted columns in each row, no duplicates)."""

    n: int
    rows: np.ndarray
    cols: np.ndarray
    vals: np.ndarray

    @classmethod
    def from_coo(cls, n: int, rows, cols, vals) -> Sparse:
        rows = np.asarray(rows, np.int64)
        cols = np.asarray(cols, np.int64)
        key = rows * n + cols
        uniq, inv = np.unique(key, return_inverse=True)
        summed = np.bincount(inv, weights=np.asarray(vals, float), minlength=uniq.size)
        return cls(n, uniq // n, uniq % n, summed)

    @property
    def indptr(self) -> np.ndarray:
        ptr = self.__dict__.get("_indptr")
        if ptr is None:
            ptr = np.concatenate([[0], np.cumsum(np.bincount(self.rows, minlength=self.n))]).astype(np.int64)
            object.__setattr__(self, "_indptr", ptr)
        return ptr

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """``G @ x``, each row summed in increasing column order (as scipy's CSR/CSC products)."""
        return _csr_matvec(self.indptr, self.cols, self.vals, np.ascontiguousarray(x, dtype=np.float64))

    def matvec_oracle(self, x: np.ndarray) -> np.ndarray:
        return np.bincount(self.rows, weights=self.vals * x[self.cols], minlength=self.n)

    def diagonal(self) -> np.ndarray:
        d = np.zeros(self.n)
        on = self.rows == self.cols
        d[self.rows[on]] = self.vals[on]
        return d

    def trace(self) -> float:
        return float(self.diagonal().sum())

    def scaled(self, alpha: float) -> Sparse:
        return Sparse(self.n, self.rows, self.cols, alpha * self.vals)

    @staticmethod
    def sum(*terms: Sparse) -> Sparse:
        n = terms[0].n
        return Sparse.from_coo(
            n,
            np.concatenate([t.rows for t in terms]),
            np.concatenate([t.cols for t in terms]),
            np.concatenate([t.vals for t in terms]),
        )

    def dense(self) -> np.ndarray:
        out = np.zeros((self.n, self.n))
        out[self.rows, self.cols] = self.vals
        return out


@numba.njit(nogil=True, cache=True)
def _csr_matvec(indptr, cols, vals, x):  # pragma: no cover - numba
    n = indptr.size - 1
    out = np.zeros(n)
    for i in range(n):
        acc = 0.0
        for j in range(indptr[i], indptr[i + 1]):
            acc += vals[j] * x[cols[j]]
        out[i] = acc
    return out


@numba.njit(nogil=True, cache=True)
def _norm(x):  # pragma: no cover - numba
    """``np.linalg.norm`` without BLAS (whose threads spin for seconds on a loaded machine)."""
    acc = 0.0
    for v in x:
        acc += v * v
    return math.sqrt(acc)


def stencil_to_sparse(grid: Grid, S: np.ndarray) -> Sparse:
    """``AA`` as a :class:`Sparse` matrix from its stencil."""
    _, _, deltas, offsets, _ = _stencil(grid.shape)
    shape = np.array(grid.shape)
    p = np.arange(grid.size)
    sub = np.stack(np.unravel_index(p, grid.shape, order="F"))  # (d, n)
    rows, cols, vals = [], [], []
    for c in range(S.shape[1]):
        nb = sub + deltas[c][:, None]
        ok = np.all((nb >= 0) & (nb < shape[:, None]), axis=0) & (S[:, c] != 0)
        rows.append(p[ok])
        cols.append(p[ok] + offsets[c])
        vals.append(S[ok, c])
    return Sparse.from_coo(grid.size, np.concatenate(rows), np.concatenate(cols), np.concatenate(vals))


def _transpose_product(n: int, rows, cols, vals) -> Sparse:
    """``B.T @ B`` for a COO ``B`` with ``n`` columns (model-sized)."""
    rows = np.asarray(rows, np.int64)
    order = np.argsort(rows, kind="stable")
    rows, cols, vals = rows[order], np.asarray(cols, np.int64)[order], np.asarray(vals, float)[order]
    _, start, count = np.unique(rows, return_index=True, return_counts=True)
    out_r, out_c, out_v = [], [], []
    for k in np.unique(count):
        sel = start[count == k]
        idx = sel[:, None] + np.arange(k)[None, :]
        c, v = cols[idx], vals[idx]
        out_r.append(np.repeat(c, k, axis=1).ravel())
        out_c.append(np.tile(c, (1, k)).ravel())
        out_v.append((v[:, :, None] * v[:, None, :]).ravel())
    if not out_r:
        return Sparse(n, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    return Sparse.from_coo(n, np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_v))


def _sub2ind(shape, *subs) -> np.ndarray:
    return np.ravel_multi_index(tuple(subs), shape, order="F").ravel(order="F")


def _second_difference(shape: tuple[int, ...], axis: int):
    """mdx2's ``Bx``/``By``/``Bz``/1-D ``B``: rows ``-0.5, 1, -0.5`` along ``axis`` (COO, row count)."""
    grids = np.meshgrid(*[np.arange(m) for m in shape], indexing="ij")

    def cut(sl):
        return tuple(g[tuple(sl if j == axis else slice(None) for j in range(len(shape)))] for g in grids)

    left = _sub2ind(shape, *cut(slice(None, -2)))
    mid = _sub2ind(shape, *cut(slice(1, -1)))
    right = _sub2ind(shape, *cut(slice(2, None)))
    nrows = left.size
    rows = np.concatenate([np.arange(nrows)] * 3)
    cols = np.concatenate([left, mid, right])
    vals = np.concatenate([np.full(nrows, -0.5), np.full(nrows, 1.0), np.full(nrows, -0.5)])
    return rows, cols, vals


def _laplacian(shape: tuple[int, ...], axes):
    """mdx2's ``B`` (2-D) / ``Bxy`` (3-D): identity minus the mean of the neighbours along ``axes``."""
    n = math.prod(shape)
    grids = np.meshgrid(*[np.arange(m) for m in shape], indexing="ij")
    r, c = [], []
    for axis in axes:

        def cut(sl, axis=axis):
            return tuple(g[tuple(sl if j == axis else slice(None) for j in range(len(shape)))] for g in grids)

        lo = _sub2ind(shape, *cut(slice(None, -1)))
        hi = _sub2ind(shape, *cut(slice(1, None)))
        r += [lo, hi]
        c += [hi, lo]
    r, c = np.concatenate(r), np.concatenate(c)
    nn = np.bincount(r, minlength=n).astype(float)
    rows = np.concatenate([np.arange(n), r])
    cols = np.concatenate([np.arange(n), c])
    vals = np.concatenate([np.ones(n), -1.0 / nn[r]])
    return rows, cols, vals


def regulariser(shape: tuple[int, ...], kind: str) -> Sparse:
    """``B.T @ B`` of mdx2's regulariser ``kind`` on a grid of ``shape``:

    ``"d2"`` 1-D second difference (ScalingModel); ``"d2x"``/``"d2y"`` second differences along the
    first/second axis (OffsetModel's Bx, By); ``"d2z"`` along the third (AbsorptionModel's Bz);
    ``"lap"`` neighbour Laplacian over all axes (DetectorModel's 2-D B); ``"lapxy"`` over the first
    two axes (AbsorptionModel's Bxy).
    """
    n = math.prod(shape)
    if kind in ("d2", "d2x"):
        coo = _second_difference(shape, 0)
    elif kind == "d2y":
        coo = _second_difference(shape, 1)
    elif kind == "d2z":
        coo = _second_difference(shape, 2)
    elif kind == "lap":
        coo = _laplacian(shape, range(len(shape)))
    elif kind == "lapxy":
        coo = _laplacian(shape, (0, 1))
    else:
        raise ValueError(f"unknown regulariser {kind!r}")
    return _transpose_product(n, *coo)


# -------------------------------------------------------------------------------------- solver

_EPS = np.finfo(np.float64).eps


def _sym_ortho(a, b):
    if b == 0:
        return np.sign(a), 0, abs(a)
    elif a == 0:
        return 0, np.sign(b), abs(b)
    elif abs(b) > abs(a):
        tau = a / b
        s = np.sign(b) / math.sqrt(1 + tau * tau)
        c = s * tau
        r = b / s
    else:
        tau = b / a
        c = np.sign(a) / math.sqrt(1 + tau * tau)
        s = c * tau
        r = a / c
    return c, s, r


def lsqr(G: Sparse, b: np.ndarray, atol=1e-6, btol=1e-6, conlim=1e8, iter_lim=None):
    """``scipy.sparse.linalg.lsqr(G, b)`` (scipy 1.17, damp = 0) transcribed: returns ``(x, istop, itn)``.

    ``G`` is symmetric here, so ``G.T @ u`` is computed as ``G @ u``.
    """
    n = G.n
    if iter_lim is None:
        iter_lim = 2 * n
    itn = 0
    istop = 0
    ctol = 1 / conlim if conlim > 0 else 0
    anorm = 0
    acond = 0
    ddnorm = 0
    res2 = 0
    xnorm = 0
    xxnorm = 0
    z = 0
    cs2 = -1
    sn2 = 0
    u = b
    bnorm = _norm(b)
    x = np.zeros(n)
    beta = bnorm
    if beta > 0:
        u = (1 / beta) * u
        v = G.matvec(u)
        alfa = _norm(v)
    else:
        v = x.copy()
        alfa = 0
    if alfa > 0:
        v = (1 / alfa) * v
    w = v.copy()
    rhobar = alfa
    phibar = beta
    arnorm = alfa * beta
    if arnorm == 0:
        return x, istop, itn
    while itn < iter_lim:
        itn = itn + 1
        u = G.matvec(v) - alfa * u
        beta = _norm(u)
        if beta > 0:
            u = (1 / beta) * u
            anorm = math.sqrt(anorm**2 + alfa**2 + beta**2)
            v = G.matvec(u) - beta * v
            alfa = _norm(v)
            if alfa > 0:
                v = (1 / alfa) * v
        rhobar1 = rhobar
        psi = 0.0
        cs, sn, rho = _sym_ortho(rhobar1, beta)
        theta = sn * alfa
        rhobar = -cs * alfa
        phi = cs * phibar
        phibar = sn * phibar
        tau = sn * phi
        t1 = phi / rho
        t2 = -theta / rho
        dk = (1 / rho) * w
        x = x + t1 * w
        w = v + t2 * w
        ddnorm = ddnorm + _norm(dk) ** 2
        delta = sn2 * rho
        gambar = -cs2 * rho
        rhs = phi - delta * z
        zbar = rhs / gambar
        xnorm = math.sqrt(xxnorm + zbar**2)
        gamma = math.sqrt(gambar**2 + theta**2)
        cs2 = gambar / gamma
        sn2 = theta / gamma
        z = rhs / gamma
        xxnorm = xxnorm + z**2
        acond = anorm * math.sqrt(ddnorm)
        res1 = phibar**2
        res2 = res2 + psi**2
        rnorm = math.sqrt(res1 + res2)
        arnorm = alfa * abs(tau)
        test1 = rnorm / bnorm
        test2 = arnorm / (anorm * rnorm + _EPS)
        test3 = 1 / (acond + _EPS)
        t1 = test1 / (1 + anorm * xnorm / bnorm)
        rtol = btol + atol * anorm * xnorm / bnorm
        if itn >= iter_lim:
            istop = 7
        if 1 + test3 <= 1:
            istop = 6
        if 1 + test2 <= 1:
            istop = 5
        if 1 + t1 <= 1:
            istop = 4
        if test3 <= ctol:
            istop = 3
        if test2 <= atol:
            istop = 2
        if test1 <= rtol:
            istop = 1
        if istop != 0:
            break
    return x, istop, itn


def solve(AA: Sparse, Ay: np.ndarray, regs: list[tuple[float, Sparse]], extra_diag: float = 0.0):
    """``G = AA + sum(alpha_i BB_i) [+ extra_diag * I]`` and mdx2's ``lsqr(G, Ay)``: ``(x, istop, itn)``."""
    terms = [AA] + [BB.scaled(alpha) for alpha, BB in regs]
    if extra_diag:
        idx = np.arange(AA.n)
        terms.append(Sparse(AA.n, idx, idx, np.full(AA.n, float(extra_diag))))
    G = Sparse.sum(*terms)
    x, istop, itn = lsqr(G, Ay)
    return x, istop, itn


def chi2(AA: Sparse, Ay: np.ndarray, yy: float, u: np.ndarray, n: int) -> float:
    """mdx2's ``x2 = (u @ AA @ u - 2 u @ Ay + yy) / n``."""
    return float((u @ AA.matvec(u) - 2 * u @ Ay + yy) / n)
