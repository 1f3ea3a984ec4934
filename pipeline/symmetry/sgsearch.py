"""Find a change of basis that maps one space group onto another (same type, any settings).

Used to find the space-group type of a setting that is neither tabulated nor written as
"reference Hall symbol (change of basis)", and the type of a derived Laue group.

A change of basis c maps the lattice of G onto the lattice of T, so with primitive bases B_G and B_T
(columns) c = B_T U B_G^-1 for a unimodular integer U. With bases reduced against a metric that the
point group leaves invariant, U has entries in {-1, 0, 1} for the settings that occur in practice; we
try every such U whose conjugation maps the rotations of G onto those of T, then look for an origin
shift K that makes the translations agree (t + (I - R) K = t_T modulo lattice translations).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from functools import lru_cache

import numpy as np

from pipeline.symmetry.hall import SpaceGroup
from pipeline.symmetry.symops import ChangeOfBasis, as_int_rot, rot_det, rot_inv, rot_mul

__all__ = ["find_change_of_basis", "lattice_basis", "origin_shift"]


def _lcm_denominators(values) -> int:
    d = 1
    for v in values:
        d = math.lcm(d, Fraction(v).denominator)
    return d


def _hnf_rows(vectors: list[list[int]]) -> list[list[int]]:
    """Row-style Hermite normal form of integer 3-vectors: a basis of the lattice they generate."""
    rows = [list(v) for v in vectors if any(v)]
    basis = []
    for col in range(3):
        pivot_rows = [r for r in rows if r[col] != 0]
        rest = [r for r in rows if r[col] == 0]
        while len(pivot_rows) > 1:  # Euclid on the column
            pivot_rows.sort(key=lambda r: abs(r[col]))
            p = pivot_rows[0]
            reduced = [p]
            for r in pivot_rows[1:]:
                q = r[col] // p[col]
                r = [a - q * b for a, b in zip(r, p, strict=True)]
                (reduced if r[col] != 0 else rest).append(r)
            pivot_rows = reduced
        if pivot_rows:
            basis.append(pivot_rows[0])
        rows = [r for r in rest if any(r)]
    return basis


def lattice_basis(group: SpaceGroup) -> tuple:
    """Primitive basis (3x3 Fractions, columns are basis vectors) of Z^3 plus the centring translations."""
    d = _lcm_denominators(x for t in group.ltr for x in t)
    vectors = [[d * (i == j) for j in range(3)] for i in range(3)]
    vectors += [[int(x * d) for x in t] for t in group.ltr[1:]]
    rows = _hnf_rows(vectors)
    if len(rows) != 3:
        raise AssertionError(f"lattice translations {group.ltr} do not span 3 dimensions")
    return tuple(Fraction(rows[j][i], d) for i in range(3) for j in range(3))


def _reduced_basis(basis, rotations) -> np.ndarray:
    """A short basis of the lattice, lengths measured with a metric invariant under the rotations."""
    b = np.array([[float(x) for x in basis[3 * i : 3 * i + 3]] for i in range(3)])
    metric = sum(np.asarray(r, float).reshape(3, 3).T @ np.asarray(r, float).reshape(3, 3) for r in rotations)
    n = np.array(list(itertools.product(range(-2, 3), repeat=3)), dtype=float)
    n = n[np.any(n != 0, axis=1)]
    v = n @ b.T
    lengths = np.einsum("ij,jk,ik->i", v, metric, v)
    order = np.lexsort((n[:, 2], n[:, 1], n[:, 0], np.round(lengths, 9)))
    target = abs(np.linalg.det(b))
    chosen = []
    for i in order:
        trial = [*chosen, n[i]]
        if len(trial) < 3:
            if np.linalg.matrix_rank(np.array(trial) @ b.T, tol=1e-9) == len(trial):
                chosen.append(n[i])
        elif abs(abs(np.linalg.det(np.array(trial) @ b.T)) - target) < 1e-9 * max(target, 1):
            chosen.append(n[i])
            break
    coords = np.array(chosen).T  # columns: the chosen vectors in terms of the original basis
    return np.rint(coords).astype(np.int64)


@lru_cache(maxsize=1)
def _unimodular() -> np.ndarray:
    """All 3x3 matrices with entries in {-1, 0, 1} and determinant +-1, simplest (fewest non-zeros) first."""
    m = np.array(list(itertools.product((0, 1, -1), repeat=9)), dtype=np.int64).reshape(-1, 3, 3)
    det = np.rint(np.linalg.det(m)).astype(np.int64)
    m = m[np.abs(det) == 1]
    return m[np.argsort(np.count_nonzero(m.reshape(-1, 9), axis=1), kind="stable")]


def _to_basis(rotations, basis_int: np.ndarray, basis) -> np.ndarray:
    """Integer rotation matrices expressed in the reduced primitive basis."""
    b = np.array([[float(x) for x in basis[3 * i : 3 * i + 3]] for i in range(3)]) @ basis_int
    binv = np.linalg.inv(b)
    out = np.array([binv @ np.asarray(r, float).reshape(3, 3) @ b for r in rotations])
    return np.rint(out).astype(np.int64)


def _keys(mats: np.ndarray) -> np.ndarray:
    """An integer key per 3x3 matrix with entries in [-7, 7]; -1 where an entry is out of range."""
    flat = mats.reshape(*mats.shape[:-2], 9)
    ok = np.all(np.abs(flat) <= 7, axis=-1)
    key = np.zeros(flat.shape[:-1], dtype=np.int64)
    for k in range(9):
        key = key * 16 + (flat[..., k] + 8)
    return np.where(ok, key, -1)


def origin_shift(moved: SpaceGroup, target: SpaceGroup) -> tuple | None:
    """K with (I|K) moved (I|-K) == target, searched on a grid of 1/D, or None."""
    ops = [(r, t) for r, t in moved.all_ops()[: moved.order_p]]
    target_t: dict = {}
    for r, t in target.all_ops():
        target_t.setdefault(r, set()).add(tuple(x % 1 for x in t))
    if set(target_t) != {r for r, _ in ops}:
        return None
    d = math.lcm(72, _lcm_denominators(x for _, t in ops for x in t))
    d = math.lcm(d, _lcm_denominators(x for ts in target_t.values() for t in ts for x in t))
    grid = np.indices((d, d, d), dtype=np.int64).reshape(3, -1).T
    for r, t in ops:
        if not len(grid):
            return None
        rm = np.asarray(r, np.int64).reshape(3, 3)
        moved_t = (np.array([int(x * d) for x in t]) + grid @ (np.eye(3, dtype=np.int64) - rm).T) % d
        allowed = {tuple(int(x * d) % d for x in tt) for tt in target_t[r]}
        key = (moved_t[:, 0] * d + moved_t[:, 1]) * d + moved_t[:, 2]
        allowed_keys = np.array([(a * d + b) * d + c for a, b, c in allowed], dtype=np.int64)
        grid = grid[np.isin(key, allowed_keys)]
    if not len(grid):
        return None
    return tuple(Fraction(int(x), d) for x in grid[0])


def find_change_of_basis(group: SpaceGroup, target: SpaceGroup, translations: bool = True):
    """A proper change of basis c with c group c^-1 == target exactly, or None.

    With ``translations=False`` only rotations and lattices must agree (enough for symmorphic
    targets such as Laue groups).
    """
    if group.order_p != target.order_p:
        return None
    g_basis, t_basis = lattice_basis(group), lattice_basis(target)
    g_rot, t_rot = group.rotations(), target.rotations()
    g_red, t_red = _reduced_basis(g_basis, g_rot), _reduced_basis(t_basis, t_rot)
    wg = _to_basis(g_rot, g_red, g_basis)
    wt_keys = set(_keys(_to_basis(t_rot, t_red, t_basis)).tolist())
    u = _unimodular()
    uinv = np.rint(np.linalg.inv(u)).astype(np.int64)
    conj = u[:, None] @ wg[None] @ uinv[:, None]  # (n_u, n_rot, 3, 3)
    ok = np.all(np.isin(_keys(conj), list(wt_keys)), axis=1)
    g_full = tuple(Fraction(int(x)) for x in g_red.ravel())
    t_full = tuple(Fraction(int(x)) for x in t_red.ravel())
    to_g = rot_mul(g_basis, g_full)  # reduced primitive basis of G (columns)
    to_t = rot_mul(t_basis, t_full)
    for candidate in u[ok]:
        c = rot_mul(rot_mul(to_t, tuple(int(x) for x in candidate.ravel())), rot_inv(to_g))
        cb = ChangeOfBasis.from_matrix(c)
        if rot_det(c) <= 0:
            continue
        if any(as_int_rot(rot_mul(rot_mul(cb.c, r), cb.c_inv)) is None for r in g_rot):
            continue
        if not translations:
            return cb
        moved = group.change_basis(cb)
        shift = origin_shift(moved, target)
        if shift is not None:
            return ChangeOfBasis.from_matrix(c, shift)
    return None
