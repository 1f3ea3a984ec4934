"""Map integer Miller indices to the reciprocal-space asymmetric unit, as mdx2's ``Symmetry.to_asu``.

For each Laue operator ``op[i]`` in *reverse* order ``i = N-1 ... 0``: ``hkl_i = op[i].T @ (H, K, L)``;
where ``asu(hkl_i)`` holds, set ``op = i`` and ``hkl = hkl_i``; so the lowest matching index wins.
With P1 (``ops is None``): ``op = (L < 0)`` and ``L = |L|``.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from pipeline.geometry.expressions import MillerExpression

__all__ = ["selects_one_per_orbit", "to_asu", "to_asu_oracle"]


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

    The result is mdx2's: of the operators whose image lies in the ASU, the lowest index wins.
    Images use integer arithmetic (the operators' entries are integers; mdx2 computes them in float64
    and truncates, which gives the same integers). When the ASU holds exactly one member of every
    orbit (checked once per symmetry, see :func:`selects_one_per_orbit`), the search is guided:
    rows arrive sorted by (h, k, l) and neighbours share their operator, so each row first tries the
    operator of a nearby row; only rows where that fails are searched in full. The winning image is
    then unique, and the lowest operator giving it is found with integer arithmetic alone.
    Otherwise every row is searched in full, operators in increasing order.
    """
    H, K, L = (np.asarray(a, dtype=np.int64) for a in (H, K, L))
    if ops is None:
        return H, K, np.abs(L), (L < 0).astype(np.int64)
    int_ops = np.rint(ops).astype(np.int64)
    if not np.array_equal(int_ops, ops):
        raise ValueError("Laue operators must have integer entries")
    if max(np.abs(a).max(initial=0) for a in (H, K, L)) >= 2**29:
        raise ValueError("Miller indices x ndiv beyond 2**29 cannot be mapped to the asymmetric unit")
    hkl = np.empty((3, H.size), dtype=np.int32)
    for i, a in enumerate((H, K, L)):
        hkl[i] = a.ravel()
    ops_t = np.ascontiguousarray(np.transpose(int_ops, (0, 2, 1)).astype(np.int32))  # op[i].T
    if hkl.shape[1] > 4 * _GUESS_STRIDE and selects_one_per_orbit(int_ops, asu):
        out, op_index = _guided_search(hkl, ops_t, asu)
    else:
        out, op_index = _full_search(hkl, ops_t, asu)
    shape = H.shape
    return (
        out[0].astype(np.int64).reshape(shape),
        out[1].astype(np.int64).reshape(shape),
        out[2].astype(np.int64).reshape(shape),
        op_index.reshape(shape),
    )


_GUESS_STRIDE = 16  # rows that share the operator guess of their block's first row


def _full_search(hkl: np.ndarray, ops_t: np.ndarray, asu: MillerExpression):
    """Operators in increasing order, each tested only on the rows no lower operator has claimed."""
    rest = hkl
    todo = np.arange(hkl.shape[1])
    out = np.empty_like(hkl)
    op_index = np.full(hkl.shape[1], -1, dtype=np.int64)
    for i in range(ops_t.shape[0]):
        if todo.size == 0:
            break
        image = _apply(ops_t[i], rest)
        hit = np.ascontiguousarray(asu(image[0], image[1], image[2]))
        todo, rest = _claim(i, image, hit, todo, rest, out, op_index)
    if todo.size:
        bad = todo[0]
        raise ValueError(
            f"no Laue operator maps ({hkl[0, bad]}, {hkl[1, bad]}, {hkl[2, bad]}) into the asymmetric unit "
            f"{asu.text!r}; the symmetry in geometry.nxs is inconsistent"
        )
    return out, op_index


def _guided_search(hkl: np.ndarray, ops_t: np.ndarray, asu: MillerExpression):
    """See :func:`to_asu`: each row tries the operator of the first row of its block of
    ``_GUESS_STRIDE`` rows, then that of the next block (a region boundary usually lies between the
    two); rows that miss both are searched in full."""
    n = hkl.shape[1]
    _, reps = _full_search(np.ascontiguousarray(hkl[:, ::_GUESS_STRIDE]), ops_t, asu)
    guess = np.repeat(reps, _GUESS_STRIDE)[:n]
    image = _apply_each(ops_t, guess, hkl)
    miss = np.flatnonzero(~np.asarray(asu(image[0], image[1], image[2])))
    if miss.size:
        second = reps[np.minimum(miss // _GUESS_STRIDE + 1, reps.size - 1)]
        rows = np.ascontiguousarray(hkl[:, miss])
        tried = _apply_each(ops_t, second, rows)
        hit = np.asarray(asu(tried[0], tried[1], tried[2]))
        image[:, miss[hit]], guess[miss[hit]] = tried[:, hit], second[hit]
        miss = miss[~hit]
    if miss.size:
        image[:, miss], guess[miss] = _full_search(np.ascontiguousarray(hkl[:, miss]), ops_t, asu)
    _lowest_with_image(ops_t, hkl, image, guess)
    return image, guess


@numba.njit(nogil=True, cache=True)
def _apply_each(ops_t, which, v):
    """Row j's image under its own operator ``ops_t[which[j]]``."""
    out = np.empty_like(v)
    for j in range(v.shape[1]):
        m = ops_t[which[j]]
        a, b, c = v[0, j], v[1, j], v[2, j]
        for i in range(3):
            out[i, j] = m[i, 0] * a + m[i, 1] * b + m[i, 2] * c
    return out


@numba.njit(nogil=True, cache=True)
def _lowest_with_image(ops_t, v, image, which):
    """Lower ``which[j]`` to the lowest operator that maps row j onto the same image (special
    positions, where several operators do). Most rows fail on the first component of each test."""
    for j in range(v.shape[1]):
        a = v[0, j]
        b = v[1, j]
        c = v[2, j]
        x = image[0, j]
        for i in range(which[j]):
            if ops_t[i, 0, 0] * a + ops_t[i, 0, 1] * b + ops_t[i, 0, 2] * c != x:
                continue
            if (
                ops_t[i, 1, 0] * a + ops_t[i, 1, 1] * b + ops_t[i, 1, 2] * c == image[1, j]
                and ops_t[i, 2, 0] * a + ops_t[i, 2, 1] * b + ops_t[i, 2, 2] * c == image[2, j]
            ):
                which[j] = i
                break


@functools.lru_cache(maxsize=32)
def _selects_one_per_orbit(ops_bytes: bytes, n_ops: int, text: str, radius: int) -> bool:
    from pipeline.geometry.expressions import parse_miller_expression

    ops = np.frombuffer(ops_bytes, dtype=np.int64).reshape(n_ops, 3, 3)
    asu = parse_miller_expression(text)
    r = np.arange(-radius, radius + 1)
    points = np.stack([g.ravel() for g in np.meshgrid(r, r, r, indexing="ij")])  # (3, P)
    images = np.einsum("nji,jp->nip", ops, points)  # op.T @ point, for every operator: (N, 3, P)
    inside = asu(images[:, 0], images[:, 1], images[:, 2])  # (N, P)
    if not inside.any(axis=0).all():
        return False
    # every operator whose image is inside must give the same image
    first = np.argmax(inside, axis=0)
    chosen = images[first, :, np.arange(points.shape[1])].T  # (3, P)
    same = (images == chosen[None]).all(axis=1)
    return bool(np.all(~inside | same))


def selects_one_per_orbit(ops: np.ndarray, asu: MillerExpression, radius: int = 8) -> bool:
    """True if, for every Miller index in a box of ``radius``, the operators' images that satisfy
    the ASU expression are one and the same point. The conditions are linear in (h, k, l) and
    homogeneous, so a box around the origin holds every case that matters."""
    ops = np.ascontiguousarray(np.rint(ops).astype(np.int64))
    return _selects_one_per_orbit(ops.tobytes(), ops.shape[0], asu.text, radius)


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
