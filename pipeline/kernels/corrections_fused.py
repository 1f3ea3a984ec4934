"""``correct``'s row work in one numba pass per row range (nogil): the fast path of
:func:`pipeline.kernels.corrections.correct_rows`.

Two kernels, each one loop over the rows, with the numpy path's operations in the numpy path's order
(the numpy path, ``corrections._correct_block`` and ``corrections._asu_columns``, is the oracle they
are tested against bit for bit):

* ``correct_kernel``: ``s``, the interpolated factors (``np.interp`` onto grid coordinates as
  numpy computes it, then mdx2's bilinear / trilinear sums on padded grids), the background, the
  intensities and ``rs_volume``, in float64, cast to float32 at the end;
* ``asu_kernel``: ``round(h * ndiv)`` in float32, the Laue operators' images in int32 arithmetic,
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

The kernels' source is :mod:`pipeline.kernels.corrections_numba`. They run from the module that
``make install`` compiles ahead of time from it (:mod:`pipeline.kernels.aot`), when it is there and
was built from the source as it is now (the source's hash is in the module's name): loading it takes
a millisecond where importing numba and loading the jitted kernels from its cache took 0.3 s; else
(no build, another source, arrays of other layouts) numba's jitted kernels run. Both builds give the
same bits (the same LLVM code; the tests run both).
"""

from __future__ import annotations

import ast
import functools
import sys
import threading
from dataclasses import dataclass

import numpy as np

from pipeline.symmetry.expressions import MillerExpression

__all__ = [
    "AsuTable",
    "compile_asu",
    "fused_columns",
    "fused_plan",
    "load_kernels",
    "warm_up",
]
MAX_COMPARISONS = 14  # table of 2**14 entries at most

# comparison codes
_OPS = {ast.Eq: 0, ast.NotEq: 1, ast.Lt: 2, ast.LtE: 3, ast.Gt: 4, ast.GtE: 5}


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


# --- the two builds of the kernels -------------------------------------------------------------------


@dataclass(frozen=True)
class _Kernels:
    correct: object
    asu: object
    compiled_ahead: bool  # the build compiled ahead of time (else numba's jitted kernels)


_JIT: list[_Kernels] = []
_LOAD_LOCK = threading.Lock()


def load_kernels(ahead: bool = True) -> _Kernels:
    """The kernels: if ``ahead`` and ``make install`` compiled them ahead of time for this source,
    :mod:`pipeline.kernels.aot`'s (that build for the arrays of its signatures, numba's jit for
    others); else numba's jitted kernels, loaded once (numba's first load sets up its compiler:
    ~0.15 s after the 0.15 s of ``import numba``)."""
    from pipeline.kernels import corrections_numba as source

    kernels = _Kernels(source._correct_kernel, source._asu_kernel, True)
    if ahead and kernels.correct.compiled_ahead and kernels.asu.compiled_ahead:
        return kernels
    with _LOAD_LOCK:
        if not _JIT:
            _JIT.append(_Kernels(kernels.correct.jitted, kernels.asu.jitted, False))
            _call_both(_JIT[0])  # loaded (or compiled) now, not in a run's first threads
        return _JIT[0]


def _call_both(kernels: _Kernels) -> None:
    n = 3
    f32, i32, ax = np.zeros(n, np.float32), np.zeros(n, np.int32), np.arange(2.0)
    t = _P1_TABLE
    kernels.asu(
        f32, f32, f32, 1, 1, 1, True, np.zeros((1, 3, 3), np.int64), True, t.forms, t.comparisons, t.table,
        f32.copy(), f32.copy(), f32.copy(), i32.copy(),
    )  # fmt: skip
    kernels.correct(
        f32, f32, f32, f32, f32, f32, f32, i32, i32, np.eye(3), 1.0, ax, ax, np.zeros((9, 2)), True,
        ax, ax, ax, np.zeros(27), False, f32.copy(), f32.copy(), f32.copy(), f32.copy(),
    )  # fmt: skip


def warm_up(ahead: bool = True) -> None:
    """Compile the jitted kernels into numba's cache and (``ahead``) build them ahead of time; a build
    that fails is reported on stderr (the jitted kernels then run)."""
    load_kernels(ahead=False)
    if ahead:
        from pipeline.kernels import aot

        try:
            aot.build("pipeline.kernels.corrections_numba")
        except Exception as exc:  # no compiler, a read-only install, ...: the jitted kernels will do
            print(
                f"correct's kernels not compiled ahead of time ({type(exc).__name__}: {exc})", file=sys.stderr
            )


_INTERLEAVED: dict[int, tuple[object, np.ndarray]] = {}


def _interleaved(grids) -> np.ndarray:
    """The factors and d3s side by side (a corner's values together), once per grids (the last 8)."""
    hit = _INTERLEAVED.get(id(grids))
    if hit is not None and hit[0] is grids:
        return hit[1]
    interleaved = np.stack([*grids.factors, grids.d3s], axis=1)
    if len(_INTERLEAVED) >= 8:
        _INTERLEAVED.clear()
    _INTERLEAVED[id(grids)] = (grids, interleaved)
    return interleaved


def fused_columns(
    rows, ndiv, model, grids, plan: FusedPlan, ahead: bool = True
) -> dict[str, np.ndarray] | None:
    """The corrected columns s, intensity, intensity_error, rs_volume, h, k, l, op of ``rows``, or
    None if some row needs the numpy path's error. ``ahead=False``: numba's jitted kernels only."""
    size = len(rows["h"])
    out = {
        name: np.empty(size, dtype=np.float32) for name in ("s", "intensity", "intensity_error", "rs_volume")
    }
    ub = np.ascontiguousarray(model.ub_matrix, dtype=np.float64)
    det_ub = float(np.linalg.det(ub))
    has_bkg = grids.bkg_axes is not None
    empty = np.arange(2.0)
    b_phi, b_iy, b_ix = grids.bkg_axes if has_bkg else (empty, empty, empty)
    interleaved = _interleaved(grids)
    b_rate = grids.bkg_rate if has_bkg else empty
    t = plan.asu
    inputs = [rows[c] for c in ("h", "k", "l", "phi", "iy", "ix", "seconds", "counts", "pixels")]
    kernels = load_kernels(ahead)  # (arrays the ahead-of-time build does not take run jitted)
    kernels.correct(
        *inputs, ub, det_ub, grids.iy, grids.ix, interleaved, bool(has_bkg),
        b_phi, b_iy, b_ix, b_rate, bool(model.lorentz),
        out["s"], out["intensity"], out["intensity_error"], out["rs_volume"],
    )  # fmt: skip
    for c in "hkl":
        out[c] = np.empty(size, dtype=np.float32)
    out["op"] = np.empty(size, dtype=np.int32)
    bad = kernels.asu(
        rows["h"], rows["k"], rows["l"], int(ndiv[0]), int(ndiv[1]), int(ndiv[2]), bool(plan.p1), plan.ops_t,
        bool(plan.guided), t.forms, t.comparisons, t.table, out["h"], out["k"], out["l"], out["op"],
    )  # fmt: skip
    return None if bad >= 0 else out
