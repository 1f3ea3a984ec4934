"""Map integer Miller indices to the reciprocal-space asymmetric unit, as mdx2's ``Symmetry.to_asu``.

For each Laue operator ``op[i]`` in *reverse* order ``i = N-1 ... 0``: ``hkl_i = op[i].T @ (H, K, L)``;
where ``asu(hkl_i)`` holds, set ``op = i`` and ``hkl = hkl_i``; so the lowest matching index wins.
With P1 (``ops is None``): ``op = (L < 0)`` and ``L = |L|``.
"""

from __future__ import annotations

import functools

import numpy as np

from pipeline.symmetry.expressions import MillerExpression

__all__ = ["LIMIT", "asu_images", "selects_one_per_orbit", "to_asu", "to_asu_oracle"]


def _apply(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """m @ v for a 3x3 integer matrix and a (3, n) int32 array: a sum over the non-zero entries
    (operators' entries are 0 and +-1; numpy's integer matmul is slow)."""
    out = np.empty_like(v)
    for i in range(3):
        acc = None
        for j in range(3):
            c = int(m[i, j])
            if c == 0:
                continue
            term = v[j] if c == 1 else -v[j] if c == -1 else c * v[j]
            acc = term.copy() if acc is None else np.add(acc, term, out=acc)
        out[i] = 0 if acc is None else acc
    return out


def _apply_each(ops_t: np.ndarray, which: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Row j's image under its own operator ``ops_t[which[j]]``: each operator applied to its rows."""
    out = np.empty_like(v)
    for i in np.unique(which):
        rows = np.flatnonzero(which == i)
        out[:, rows] = _apply(ops_t[i], v[:, rows])
    return out


def _apply_blocks(ops_t: np.ndarray, which: np.ndarray, v: np.ndarray, stride: int) -> np.ndarray:
    """Like :func:`_apply_each` when rows come in blocks of ``stride`` that share an operator
    (``which[b]`` for block b): row blocks are gathered per operator, not rows."""
    n = v.shape[1]
    blocks = -(-n // stride)
    padded = np.zeros((3, blocks * stride), dtype=v.dtype)
    padded[:, :n] = v
    padded = padded.reshape(3, blocks, stride)
    out = np.empty_like(padded)
    for i in np.unique(which):
        sel = np.flatnonzero(which == i)
        out[:, sel] = _apply(ops_t[i], padded[:, sel].reshape(3, -1)).reshape(3, sel.size, stride)
    return out.reshape(3, -1)[:, :n]


def to_asu(H, K, L, ops: np.ndarray | None, asu: MillerExpression | None):
    """Integer (H, K, L) in the asymmetric unit and the index of the operator that maps them there
    (int64 arrays of the inputs' shape); see :func:`asu_images`."""
    H, K, L = (np.asarray(a, dtype=np.int64) for a in (H, K, L))
    if max(np.abs(a).max(initial=0) for a in (H, K, L)) >= LIMIT:
        raise ValueError("Miller indices x ndiv beyond 2**29 cannot be mapped to the asymmetric unit")
    hkl = np.empty((3, H.size), dtype=np.int32)
    for i, a in enumerate((H, K, L)):
        hkl[i] = a.ravel()
    image, op_index = asu_images(hkl, ops, asu)
    shape = H.shape
    return (*(image[i].astype(np.int64).reshape(shape) for i in range(3)), op_index.reshape(shape))


LIMIT = 2**29  # |H|, |K|, |L| below this: images of int32 indices under 0/+-1 operators stay int32


def asu_images(hkl: np.ndarray, ops: np.ndarray | None, asu: MillerExpression | None, lowest: bool = True):
    """Images in the asymmetric unit of the int32 indices ``hkl`` (3, n), all below :data:`LIMIT` in
    magnitude, and the index of the operator that maps each there: ((3, n) int32, (n,) int64).

    The result is mdx2's: of the operators whose image lies in the ASU, the lowest index wins.
    Images use integer arithmetic (the operators' entries are integers; mdx2 computes them in float64
    and truncates, which gives the same integers). When the ASU holds exactly one member of every
    orbit (checked once per symmetry, see :func:`selects_one_per_orbit`), the search is guided:
    rows arrive sorted by (h, k, l) and neighbours share their operator, so each row first tries the
    operator of a nearby row; only rows where that fails are searched in full. The winning image is
    then unique, and the lowest operator giving it is found with integer arithmetic alone.
    Otherwise every row is searched in full, operators in increasing order. With P1 (``ops`` None):
    ``op = (l < 0)`` and ``l = |l|``. ``lowest=False``: the images only matter (the operator given
    may then be another one with the same image at special positions).
    """
    if ops is None:
        image = hkl.copy()
        np.abs(hkl[2], out=image[2])
        return image, (hkl[2] < 0).astype(np.int64)
    int_ops = np.rint(ops).astype(np.int64)
    if not np.array_equal(int_ops, ops):
        raise ValueError("Laue operators must have integer entries")
    ops_t = np.ascontiguousarray(np.transpose(int_ops, (0, 2, 1)).astype(np.int32))  # op[i].T
    if hkl.shape[1] > 4 * _GUESS_STRIDE and selects_one_per_orbit(int_ops, asu):
        return _guided_search(hkl, ops_t, asu, lowest)
    return _full_search(hkl, ops_t, asu)


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
        hit = asu(image[0], image[1], image[2])
        claimed = todo[hit]
        op_index[claimed] = i
        out[:, claimed] = image[:, hit]
        todo, rest = todo[~hit], rest[:, ~hit]
    if todo.size:
        bad = todo[0]
        raise ValueError(
            f"no Laue operator maps ({hkl[0, bad]}, {hkl[1, bad]}, {hkl[2, bad]}) into the asymmetric unit "
            f"{asu.text!r}; the symmetry in geometry.nxs is inconsistent"
        )
    return out, op_index


def _guided_search(hkl: np.ndarray, ops_t: np.ndarray, asu: MillerExpression, lowest: bool = True):
    """See :func:`asu_images`: each row tries the operator of the first row of its block of
    ``_GUESS_STRIDE`` rows, then that of the next block (a region boundary usually lies between the
    two); rows that miss both are searched in full."""
    n = hkl.shape[1]
    _, reps = _full_search(np.ascontiguousarray(hkl[:, ::_GUESS_STRIDE]), ops_t, asu)
    guess = np.repeat(reps, _GUESS_STRIDE)[:n]
    image = _apply_blocks(ops_t, reps, hkl, _GUESS_STRIDE)
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
    if lowest:
        _lowest_with_image(ops_t, hkl, image, guess, asu)
    return image, guess


def _lowest_with_image(ops_t, v, image, which, asu: MillerExpression) -> None:
    """Lower ``which[j]`` to the lowest operator that maps row j onto the same image.

    Several operators give the same image only at special positions, whose image is fixed by an
    operator other than the identity. When the ASU is cut out by planes through the origin and holds
    one member of each orbit, such an image lies on one of those planes (an image inside a region of
    constant truth value would have distinct orbit members next to it in the ASU), so only rows whose
    image is on a plane are tested. Otherwise every row is.
    """
    on_planes = asu.on_planes(image[0], image[1], image[2])
    rows = np.flatnonzero(which > 0) if on_planes is None else np.flatnonzero(on_planes & (which > 0))
    for i in range(ops_t.shape[0]):
        rows = rows[which[rows] > i]
        if rows.size == 0:
            return
        same = (_apply(ops_t[i], v[:, rows]) == image[:, rows]).all(axis=0)
        which[rows[same]] = i
        rows = rows[~same]


@functools.lru_cache(maxsize=32)
def _selects_one_per_orbit(ops_bytes: bytes, n_ops: int, text: str, radius: int) -> bool:
    from pipeline.symmetry.expressions import parse_miller_expression

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
