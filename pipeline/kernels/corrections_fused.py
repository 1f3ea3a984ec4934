"""``correct``'s row work in one numba pass per row range (nogil): the fast path of
:func:`pipeline.kernels.corrections.correct_rows`.

Two kernels, each one loop over the rows, with the numpy path's operations in the numpy path's order
(the numpy path, ``corrections._correct_block`` and ``corrections._asu_columns``, is the oracle they
are tested against bit for bit):

* :func:`_correct_kernel`: ``s``, the interpolated factors (``np.interp`` onto grid coordinates as
  numpy computes it, then mdx2's bilinear / trilinear sums on padded grids), the background, the
  intensities and ``rs_volume``, in float64, cast to float32 at the end;
* :func:`_asu_kernel`: ``round(h * ndiv)`` in float32, the Laue operators' images in int32 arithmetic,
  and the ASU test. The ASU expression is not interpreted per row: it is a boolean combination of
  comparisons between linear forms (checked once by :func:`compile_asu`), so each comparison is one bit
  and a table of the expression's value for every combination of bits (computed once, by the same
  numpy evaluator) decides membership. Rows try the previous row's operator first (rows come sorted,
  neighbours share it); this gives mdx2's operator (the lowest whose image is in the ASU) when the
  ASU holds one member of every orbit (checked as for the numpy path), otherwise every row is
  searched in increasing order.

:func:`fused_plan` says whether the fast path applies (dtypes as integrate writes them, strictly
increasing grid axes of 2 points or more, an ASU made of such comparisons); otherwise the numpy path
runs. Errors (indices beyond the ASU limit, no operator mapping a row into the ASU) are left to the
numpy path, which raises them with its message.
"""

from __future__ import annotations

import ast
import functools
import sys
import threading
from dataclasses import dataclass

import numba
import numpy as np

from pipeline.symmetry.expressions import MillerExpression

__all__ = ["AsuTable", "compile_asu", "fused_columns", "fused_plan", "load_kernels", "warm_up"]

LIMIT = 2**29  # as pipeline.kernels.asu.LIMIT
MAX_COMPARISONS = 14  # table of 2**14 entries at most

# comparison codes
_OPS = {ast.Eq: 0, ast.NotEq: 1, ast.Lt: 2, ast.LtE: 3, ast.Gt: 4, ast.GtE: 5}


# --- interpolation ---------------------------------------------------------------------------------


@numba.njit(nogil=True, cache=True, inline="always")
def _fraction(x, axis, inv_step, slopes):
    """``f = np.interp(x, axis, arange(n))`` exactly as numpy computes it (strictly increasing axis,
    n >= 2), then ``corrections._cells``: cell ``int(f)`` clipped to the grid, weight ``f - cell``
    (a NaN ``x``: cell 0, weight NaN, as numpy's cast of NaN clipped). The interval ``j`` with
    ``axis[j] <= x < axis[j + 1]`` is numpy's; it is found from a guess for an evenly spaced axis
    (``inv_step`` = (n - 1) / span), moved until those two comparisons hold. ``slopes`` are numpy's
    slopes ``(j + 1 - j) / (axis[j + 1] - axis[j])``, computed once (as numpy does for long inputs)."""
    n = axis.size
    if x != x:
        return 0, np.nan
    last = n - 1
    if x < axis[0]:
        f = 0.0
    elif x >= axis[last]:
        f = float(last)
    else:
        j = int((x - axis[0]) * inv_step)
        j = min(max(j, 0), last - 1)
        while j > 0 and axis[j] > x:
            j -= 1
        while axis[j + 1] <= x:
            j += 1
        if axis[j] == x:
            f = float(j)
        else:
            # numpy retries from the right end when this is NaN: it cannot be (x finite and above
            # axis[j], the slope positive, at most inf), and the dead test cost ~25 ns per call
            f = slopes[j] * (x - axis[j]) + float(j)
    b = int(f)
    return b, f - b


@numba.njit(nogil=True, cache=True, inline="always")
def _inv_step(axis):
    return (axis.size - 1) / (axis[axis.size - 1] - axis[0])


@numba.njit(nogil=True, cache=True, inline="always")
def _slopes(axis):
    out = np.empty(axis.size - 1)
    for j in range(axis.size - 1):
        out[j] = (float(j + 1) - float(j)) / (axis[j + 1] - axis[j])
    return out


@numba.njit(nogil=True, cache=True, inline="always")
def _bilinear(v, j, c00, stride, w00, w01, w10, w11):
    """Grid ``j`` of the interleaved grids ``v`` (padded cells, grids) at a point: the numpy path's
    sum, in its order."""
    total = w00 * v[c00, j]
    total += w01 * v[c00 + 1, j]
    total += w10 * v[c00 + stride, j]
    total += w11 * v[c00 + stride + 1, j]
    return total


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _correct_kernel(
    h, k, l, phi, iy, ix, seconds, counts, pixels, ub, det_ub, g_iy, g_ix, grids,
    has_bkg, b_phi, b_iy, b_ix, b_rate, lorentz, s_out, i_out, e_out, v_out,
):  # fmt: skip
    stride = g_ix.size + 1
    sy = b_ix.size + 1
    sp = (b_iy.size + 1) * sy
    n_factors = grids.shape[1] - 1  # the factors, then d3s
    i_iy, i_ix = _inv_step(g_iy), _inv_step(g_ix)
    i_bphi, i_biy, i_bix = _inv_step(b_phi), _inv_step(b_iy), _inv_step(b_ix)
    s_iy, s_ix = _slopes(g_iy), _slopes(g_ix)
    s_bphi, s_biy, s_bix = _slopes(b_phi), _slopes(b_iy), _slopes(b_ix)
    for r in range(h.size):
        hh, kk, ll = np.float64(h[r]), np.float64(k[r]), np.float64(l[r])
        s2 = 0.0
        for i in range(3):
            si = ub[i, 0] * hh + ub[i, 1] * kk + ub[i, 2] * ll
            s2 += si * si
        s_out[r] = np.float32(np.sqrt(s2))
        y_r, x_r = np.float64(iy[r]), np.float64(ix[r])
        y, fy = _fraction(y_r, g_iy, i_iy, s_iy)
        x, fx = _fraction(x_r, g_ix, i_ix, s_ix)
        c00 = y * stride + x
        w11 = fy * fx
        w10 = fy - w11
        w01 = fx - w11
        w00 = 1 - fy - w01
        factor = _bilinear(grids, 0, c00, stride, w00, w01, w10, w11)
        for j in range(1, n_factors):
            factor *= _bilinear(grids, j, c00, stride, w00, w01, w10, w11)
        cnt = np.float64(counts[r])
        sec = np.float64(seconds[r])
        rate = cnt / sec
        rate_error = np.sqrt(cnt) / sec
        if has_bkg:
            p, fp = _fraction(np.float64(phi[r]), b_phi, i_bphi, s_bphi)
            by, fby = _fraction(y_r, b_iy, i_biy, s_biy)
            bx, fbx = _fraction(x_r, b_ix, i_bix, s_bix)
            base = p * sp + by * sy + bx
            for dp in range(2):
                wp = 1 - fp if dp == 0 else fp
                for dy in range(2):
                    wy = 1 - fby if dy == 0 else fby
                    corner = base + (dp * sp + dy * sy)
                    rate -= wp * wy * ((1 - fbx) * b_rate[corner] + fbx * b_rate[corner + 1])
        volume = np.float64(pixels[r]) * _bilinear(grids, n_factors, c00, stride, w00, w01, w10, w11) / det_ub
        intensity = rate / factor
        error = rate_error / factor
        if lorentz:
            intensity *= volume
            error *= volume
        i_out[r] = np.float32(intensity)
        e_out[r] = np.float32(error)
        v_out[r] = np.float32(volume)


# --- asymmetric unit -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AsuTable:
    """An ASU expression as comparisons of linear forms and a truth table over their outcomes."""

    forms: np.ndarray  # (F, 3) int64: coefficients of each linear form
    comparisons: np.ndarray  # (C, 3) int64: left form, right form, comparison code
    table: np.ndarray  # (2**C,) bool: the expression's value for each combination of outcomes


def _linear_coefficients(node: ast.AST) -> tuple[int, int, int]:
    from pipeline.symmetry.expressions import _evaluate

    unit = np.eye(3, dtype=np.int64)
    values = {name: unit[i] for i, name in enumerate("hkl")}
    out = np.broadcast_to(np.asarray(_evaluate(node, values), dtype=np.int64), (3,))
    return int(out[0]), int(out[1]), int(out[2])


@functools.lru_cache(maxsize=32)
def _compile(text: str) -> AsuTable | None:
    from pipeline.symmetry.expressions import linear_comparisons, parse_miller_expression

    tree = parse_miller_expression(text).tree
    forms: dict[tuple[int, int, int], int] = {}
    comparisons: list[tuple[int, int, int]] = []
    index: dict[int, list[int]] = {}  # id(Compare node) -> its comparisons
    # constants are refused: ``~True`` is -2 in numpy's evaluation
    nodes = linear_comparisons(tree)
    if nodes is None:
        return None
    for node in nodes:
        coefs = [_linear_coefficients(side) for side in [node.left, *node.comparators]]
        ids = []
        for op, a, b in zip(node.ops, coefs, coefs[1:], strict=False):
            fa, fb = forms.setdefault(a, len(forms)), forms.setdefault(b, len(forms))
            ids.append(len(comparisons))
            comparisons.append((fa, fb, _OPS[type(op)]))
        index[id(node)] = ids
    if not comparisons or len(comparisons) > MAX_COMPARISONS:
        return None

    def value(node, bits: int) -> bool:
        if isinstance(node, ast.Expression):
            return value(node.body, bits)
        if isinstance(node, ast.BoolOp):
            results = [value(v, bits) for v in node.values]
            return all(results) if isinstance(node.op, ast.And) else any(results)
        if isinstance(node, ast.BinOp):
            a, b = value(node.left, bits), value(node.right, bits)
            return {ast.BitAnd: a and b, ast.BitOr: a or b, ast.BitXor: a != b}[type(node.op)]
        if isinstance(node, ast.UnaryOp):
            return not value(node.operand, bits)
        return all(bits >> i & 1 for i in index[id(node)])  # a (chained) comparison

    table = np.array([value(tree, bits) for bits in range(1 << len(comparisons))], dtype=np.bool_)
    coef = np.zeros((len(forms), 3), dtype=np.int64)
    for c, i in forms.items():
        coef[i] = c
    return AsuTable(coef, np.array(comparisons, dtype=np.int64), table)


def compile_asu(asu: MillerExpression) -> AsuTable | None:
    """The expression as an :class:`AsuTable`, or None when it is not a boolean combination of
    comparisons between linear forms through the origin (then the numpy path evaluates it)."""
    return _compile(asu.text)


@numba.njit(nogil=True, cache=True, inline="always")
def _wrap32(v):
    """int64 -> the int32 numpy's int32 arithmetic gives (wrapping; a ring homomorphism)."""
    return ((v + 0x80000000) & 0xFFFFFFFF) - 0x80000000


@numba.njit(nogil=True, cache=True, inline="always")
def _image(ops_t, i, a, b, c):
    """``op[i].T @ (a, b, c)`` in int32 arithmetic (as ``asu._apply``), as int64 values."""
    return (
        _wrap32(ops_t[i, 0, 0] * a + ops_t[i, 0, 1] * b + ops_t[i, 0, 2] * c),
        _wrap32(ops_t[i, 1, 0] * a + ops_t[i, 1, 1] * b + ops_t[i, 1, 2] * c),
        _wrap32(ops_t[i, 2, 0] * a + ops_t[i, 2, 1] * b + ops_t[i, 2, 2] * c),
    )


@numba.njit(nogil=True, cache=True, inline="always")
def _inside(a, b, c, forms, comparisons, table, values):
    """(in the ASU, on one of its planes) for the image (a, b, c); ``values`` is scratch (F,)."""
    for f in range(forms.shape[0]):
        values[f] = _wrap32(forms[f, 0] * a + forms[f, 1] * b + forms[f, 2] * c)
    bits = 0
    on_plane = False
    for j in range(comparisons.shape[0]):
        x = values[comparisons[j, 0]]
        y = values[comparisons[j, 1]]
        code = comparisons[j, 2]
        if x == y:
            on_plane = True
        if code == 0:
            hit = x == y
        elif code == 1:
            hit = x != y
        elif code == 2:
            hit = x < y
        elif code == 3:
            hit = x <= y
        elif code == 4:
            hit = x > y
        else:
            hit = x >= y
        if hit:
            bits |= 1 << j
    return table[bits], on_plane


@numba.njit(nogil=True, cache=True)
def _asu_kernel(h, k, l, n0, n1, n2, p1, ops_t, guided, forms, comparisons, table, oh, ok, ol, oop):
    """Returns -1, or the first row it cannot map (left to the numpy path's error message)."""
    values = np.empty(forms.shape[0], dtype=np.int64)
    f0, f1, f2 = np.float32(n0), np.float32(n1), np.float32(n2)
    d0, d1, d2 = np.float64(n0), np.float64(n1), np.float64(n2)
    n_ops = ops_t.shape[0]
    guess = -1
    for r in range(h.size):
        sa, sb, sc = np.rint(h[r] * f0), np.rint(k[r] * f1), np.rint(l[r] * f2)
        if not (abs(sa) < LIMIT and abs(sb) < LIMIT and abs(sc) < LIMIT):
            return r
        a, b, c = np.int64(sa), np.int64(sb), np.int64(sc)
        if p1:
            op = 1 if c < 0 else 0
            ia, ib, ic = a, b, abs(c)
        else:
            op = -1
            if guided and guess >= 0:
                ia, ib, ic = _image(ops_t, guess, a, b, c)
                inside, on_plane = _inside(ia, ib, ic, forms, comparisons, table, values)
                if inside:
                    op = guess
                    if on_plane:  # at a special position a lower operator may give the same image
                        for i in range(guess):
                            ja, jb, jc = _image(ops_t, i, a, b, c)
                            if ja == ia and jb == ib and jc == ic:
                                op = i
                                break
            if op < 0:
                for i in range(n_ops):
                    ia, ib, ic = _image(ops_t, i, a, b, c)
                    if _inside(ia, ib, ic, forms, comparisons, table, values)[0]:
                        op = i
                        break
                if op < 0:
                    return r
            guess = op
        oh[r] = np.float32(np.float64(ia) / d0)
        ok[r] = np.float32(np.float64(ib) / d1)
        ol[r] = np.float32(np.float64(ic) / d2)
        oop[r] = op
    return -1


# --- the plan and the entry point -----------------------------------------------------------------

_DTYPES = {
    "h": np.float32, "k": np.float32, "l": np.float32, "phi": np.float32, "iy": np.float32,
    "ix": np.float32, "seconds": np.float32, "counts": np.int32, "pixels": np.int32,
}  # fmt: skip


def _strictly_increasing(axis) -> bool:
    """Finite, at least 2 points, strictly increasing, with finite slopes (1 / spacing)."""
    a = np.asarray(axis, dtype=np.float64)
    if a.ndim != 1 or a.size < 2 or not np.all(np.isfinite(a)):
        return False
    d = np.diff(a)
    with np.errstate(divide="ignore", over="ignore"):
        return bool(np.all(d > 0) and np.all(np.isfinite(1.0 / d)))


@dataclass(frozen=True, eq=False)
class FusedPlan:
    p1: bool
    ops_t: np.ndarray  # (N, 3, 3) int64: op[i].T
    guided: bool
    asu: AsuTable


_P1_TABLE = AsuTable(np.zeros((1, 3), np.int64), np.zeros((1, 3), np.int64), np.zeros(2, np.bool_))


def fused_plan(rows, ndiv, model) -> FusedPlan | None:
    """How the fused kernels run these rows, or None when only the numpy path can (see module doc)."""
    if any(np.asarray(rows[c]).dtype != t for c, t in _DTYPES.items()):
        return None
    if not all(type(n) is int and 0 < n < 2**24 for n in ndiv):
        return None
    grid, bkg = model.corrections, model.background
    axes = [grid.iy, grid.ix] + ([] if bkg is None else [bkg.phi, bkg.iy, bkg.ix])
    if not all(_strictly_increasing(a) for a in axes):
        return None
    if model.ops is None:
        return FusedPlan(True, np.zeros((1, 3, 3), np.int64), False, _P1_TABLE)
    from pipeline.kernels.asu import selects_one_per_orbit

    int_ops = np.rint(model.ops).astype(np.int64)
    table = compile_asu(model.asu)
    if table is None or not np.array_equal(int_ops, model.ops):
        return None
    ops_t = np.ascontiguousarray(np.transpose(int_ops, (0, 2, 1)))
    return FusedPlan(False, ops_t, selects_one_per_orbit(int_ops, model.asu), table)


_LOADED = False
_LOAD_LOCK = threading.Lock()


def load_kernels() -> None:
    """Load the kernels (numba's first load sets up its compiler: ~0.15 s), once. numba then checks
    whether BLAS is there by importing ``scipy.linalg`` (~0.2 s, when scipy is installed); none of
    these kernels uses BLAS, so that import is skipped (numba then computes ``np.vdot`` & co. in
    loops instead: no kernel of this package uses them)."""
    global _LOADED
    with _LOAD_LOCK:
        if _LOADED:
            return
        block = "scipy.linalg" not in sys.modules and "numba.np.arraymath" not in sys.modules
        if block:
            sys.modules["scipy.linalg.cython_blas"] = None  # an import of it raises ImportError
        try:
            warm_up()
        finally:
            if block:
                sys.modules.pop("scipy.linalg.cython_blas", None)
        _LOADED = True


def warm_up() -> None:
    """Call both kernels on a few rows (compiling them, or loading them from numba's cache)."""
    n = 3
    f32, i32, ax = np.zeros(n, np.float32), np.zeros(n, np.int32), np.arange(2.0)
    t = _P1_TABLE
    _asu_kernel(
        f32, f32, f32, 1, 1, 1, True, np.zeros((1, 3, 3), np.int64), True, t.forms, t.comparisons, t.table,
        f32.copy(), f32.copy(), f32.copy(), i32.copy(),
    )  # fmt: skip
    _correct_kernel(
        f32, f32, f32, f32, f32, f32, f32, i32, i32, np.eye(3), 1.0, ax, ax, np.zeros((9, 2)), True,
        ax, ax, ax, np.zeros(27), False, f32.copy(), f32.copy(), f32.copy(), f32.copy(),
    )  # fmt: skip


def fused_columns(rows, ndiv, model, grids, plan: FusedPlan) -> dict[str, np.ndarray] | None:
    """The corrected columns s, intensity, intensity_error, rs_volume, h, k, l, op of ``rows``, or
    None if some row needs the numpy path's error."""
    load_kernels()
    size = len(rows["h"])
    out = {
        name: np.empty(size, dtype=np.float32) for name in ("s", "intensity", "intensity_error", "rs_volume")
    }
    ub = np.ascontiguousarray(model.ub_matrix, dtype=np.float64)
    det_ub = float(np.linalg.det(ub))
    has_bkg = grids.bkg_axes is not None
    empty = np.arange(2.0)
    b_phi, b_iy, b_ix = grids.bkg_axes if has_bkg else (empty, empty, empty)
    interleaved = np.stack([*grids.factors, grids.d3s], axis=1)  # a corner's values side by side
    b_rate = grids.bkg_rate if has_bkg else empty
    _correct_kernel(
        rows["h"], rows["k"], rows["l"], rows["phi"], rows["iy"], rows["ix"], rows["seconds"],
        rows["counts"], rows["pixels"], ub, det_ub, grids.iy, grids.ix, interleaved, has_bkg,
        b_phi, b_iy, b_ix, b_rate, model.lorentz,
        out["s"], out["intensity"], out["intensity_error"], out["rs_volume"],
    )  # fmt: skip
    for c in "hkl":
        out[c] = np.empty(size, dtype=np.float32)
    out["op"] = np.empty(size, dtype=np.int32)
    t = plan.asu
    bad = _asu_kernel(
        rows["h"], rows["k"], rows["l"], ndiv[0], ndiv[1], ndiv[2], plan.p1, plan.ops_t, plan.guided,
        t.forms, t.comparisons, t.table, out["h"], out["k"], out["l"], out["op"],
    )  # fmt: skip
    return None if bad >= 0 else out
