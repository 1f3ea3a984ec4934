"""Map integer Miller indices to the reciprocal-space asymmetric unit, as mdx2's ``Symmetry.to_asu``.

For each Laue operator ``op[i]`` in *reverse* order ``i = N-1 ... 0``: ``hkl_i = op[i].T @ (H, K, L)``;
where ``asu(hkl_i)`` holds, set ``op = i`` and ``hkl = hkl_i``; so the lowest matching index wins.
With P1 (``ops is None``): ``op = (L < 0)`` and ``L = |L|``.
"""

from __future__ import annotations

import numba
import numpy as np

from pipeline.geometry.expressions import MillerExpression

__all__ = ["to_asu", "to_asu_oracle"]


@numba.njit(nogil=True, cache=True)
def _apply(m, v):
    """m @ v for a 3x3 integer matrix and a (3, n) integer array (numpy's integer matmul is slow)."""
    out = np.empty_like(v)
    for j in range(v.shape[1]):
        a, b, c = v[0, j], v[1, j], v[2, j]
        for i in range(3):
            out[i, j] = m[i, 0] * a + m[i, 1] * b + m[i, 2] * c
    return out


@numba.njit(nogil=True, cache=True)
def _claim(i, image, hit, todo, rest, out, op_index):
    """Record the rows whose image under operator ``i`` is in the ASU; return the others, compacted."""
    n_miss = todo.size - np.count_nonzero(hit)
    next_todo = np.empty(n_miss, dtype=todo.dtype)
    next_rest = np.empty((3, n_miss), dtype=rest.dtype)
    m = 0
    for j in range(todo.size):
        if hit[j]:
            row = todo[j]
            op_index[row] = i
            for c in range(3):
                out[c, row] = image[c, j]
        else:
            next_todo[m] = todo[j]
            for c in range(3):
                next_rest[c, m] = rest[c, j]
            m += 1
    return next_todo, next_rest


def to_asu(H, K, L, ops: np.ndarray | None, asu: MillerExpression | None):
    """Integer (H, K, L) in the asymmetric unit and the index of the operator that maps them there.

    Same result as mdx2's loop over operators in reverse order with overwriting (the lowest matching
    index wins), computed the other way round: operators in increasing order, each tested only on
    the rows no lower operator has claimed. Images use integer arithmetic (the operators' entries
    are integers; mdx2 computes them in float64 and truncates, which gives the same integers).
    """
    H, K, L = (np.asarray(a, dtype=np.int64) for a in (H, K, L))
    if ops is None:
        return H, K, np.abs(L), (L < 0).astype(np.int64)
    int_ops = np.rint(ops).astype(np.int64)
    if not np.array_equal(int_ops, ops):
        raise ValueError("Laue operators must have integer entries")
    hkl = np.stack((H.ravel(), K.ravel(), L.ravel()))
    if np.abs(hkl).max(initial=0) >= 2**29:
        raise ValueError("Miller indices x ndiv beyond 2**29 cannot be mapped to the asymmetric unit")
    rest = hkl.astype(np.int32)  # the rows no lower operator has claimed yet
    todo = np.arange(hkl.shape[1])
    out = np.empty_like(rest)
    op_index = np.full(hkl.shape[1], -1, dtype=np.int64)
    for i in range(ops.shape[0]):
        if todo.size == 0:
            break
        image = _apply(int_ops[i].T.astype(np.int32), rest)  # hkl_i = op[i].T @ (H, K, L)
        hit = np.ascontiguousarray(asu(image[0], image[1], image[2]))
        todo, rest = _claim(i, image, hit, todo, rest, out, op_index)
    if todo.size:
        bad = todo[0]
        raise ValueError(
            f"no Laue operator maps ({hkl[0, bad]}, {hkl[1, bad]}, {hkl[2, bad]}) into the asymmetric unit "
            f"{asu.text!r}; the symmetry in geometry.nxs is inconsistent"
        )
    shape = H.shape
    return (
        out[0].astype(np.int64).reshape(shape),
        out[1].astype(np.int64).reshape(shape),
        out[2].astype(np.int64).reshape(shape),
        op_index.reshape(shape),
    )


def to_asu_oracle(H, K, L, ops: np.ndarray | None, asu: MillerExpression | None):
    """One row at a time, plainly: the operator with the lowest index whose image lies in the ASU."""
    H, K, L = (np.asarray(a, dtype=np.int64).ravel() for a in (H, K, L))
    if ops is None:
        return H, K, np.abs(L), (L < 0).astype(np.int64)
    out = np.zeros((4, H.size), dtype=np.int64)
    for j in range(H.size):
        v = np.array([H[j], K[j], L[j]], dtype=float)
        for i in range(ops.shape[0]):
            w = (ops[i].T @ v).astype(np.int64)
            if bool(asu(w[0:1], w[1:2], w[2:3])[0]):
                out[:, j] = (*w, i)
                break
        else:
            raise ValueError("no operator maps the row into the asymmetric unit")
    return out[0], out[1], out[2], out[3]
