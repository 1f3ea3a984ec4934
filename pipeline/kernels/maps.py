"""mdx2.map's grid: integer grid axes from ``--limits``, each grid point mapped to the asymmetric unit
and looked up in a merged table, one block of whole H planes at a time.

mdx2 1.0.5 (``command_line/map.py``, ``HKLTable.to_asu``/``lookup``) does, for the whole map at once:

* ``Hmin = round(hmin * ndiv[0])`` (numpy's round half to even, float64), likewise the five other
  limits; axes ``arange(Hmin, Hmax + 1) / ndiv[0]`` (float64), ...;
* with symmetry, every grid point (H, K, L) goes to its image in the ASU under the lowest-index Laue
  operator that puts it there (:func:`pipeline.kernels.asu.asu_images` gives the same images);
* the value is the table's ``signal`` at the row with the same integer (H, K, L)
  (``round(h * ndiv)`` of the table), NaN where no row has it; the result's dtype is that of
  ``np.where(match, column, nan)``: float32 stays float32, integers become float64.

Here a block of whole H planes is computed at once (memory bounded by the block), in one of two ways:

* :func:`map_block_orbits` (the fast path, :func:`orbits` says when it applies): when the ASU holds
  exactly one member of every orbit (:func:`pipeline.kernels.asu.selects_one_per_orbit`), a grid
  point's image is the one member of its orbit in the ASU, so the point takes the value of the table
  row that *is* that member. Each table row inside the ASU is sent to every point of its orbit
  (``inverse(op.T) @ row`` for every Laue operator) that falls in the block: the work grows with the
  table and the operators, not with the map's volume. Rows outside the ASU are never looked up by
  mdx2 and are skipped. Without symmetry each row goes to its own point.
* :func:`map_block` (any ASU; also the reference the fast path is tested against): every grid point
  mapped to the ASU as mdx2 does and looked up in the table's sorted packed keys.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from pipeline.kernels.asu import asu_images, selects_one_per_orbit
from pipeline.kernels.keys import KEY_LIMIT, pack_keys

__all__ = [
    "GridAxes",
    "Orbits",
    "TableIndex",
    "count_repeated",
    "grid_axes",
    "map_block",
    "map_block_oracle",
    "map_block_orbits",
    "map_dtype",
    "orbits",
    "orbits_of_rows",
]


@dataclass(frozen=True)
class GridAxes:
    """Integer bounds of the map (inclusive) and ``ndiv``; the float axes are ``integer / ndiv``."""

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    ndiv: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a + 1 for a, b in zip(self.lo, self.hi, strict=True))

    def axis(self, i: int) -> np.ndarray:
        """mdx2's float64 axis: ``np.arange(lo, hi + 1) / ndiv``."""
        return np.arange(self.lo[i], self.hi[i] + 1) / self.ndiv[i]

    def integer_axis(self, i: int) -> np.ndarray:
        return np.arange(self.lo[i], self.hi[i] + 1, dtype=np.int64)


def grid_axes(limits, ndiv) -> GridAxes:
    """mdx2's integer bounds: ``np.round(limit * ndiv).astype(int)`` for each of the six limits."""
    hmin, hmax, kmin, kmax, lmin, lmax = (float(x) for x in limits)
    nd = tuple(int(n) for n in ndiv)
    lo = tuple(int(np.round(v * n)) for v, n in zip((hmin, kmin, lmin), nd, strict=True))
    hi = tuple(int(np.round(v * n)) for v, n in zip((hmax, kmax, lmax), nd, strict=True))
    for a, b, name in zip(lo, hi, "hkl", strict=True):
        if b < a:
            raise ValueError(f"limits along {name} round to no grid point ({a} > {b} in units of 1/ndiv)")
        if max(abs(a), abs(b)) > KEY_LIMIT:
            raise ValueError(f"limits along {name} x ndiv reach beyond +-{KEY_LIMIT}")
    return GridAxes(lo, hi, nd)


def map_dtype(column_dtype) -> np.dtype:
    """dtype of ``np.where(match, column, np.nan)`` (numpy >= 2: a Python float is a weak scalar)."""
    dt = np.dtype(column_dtype)
    if dt.kind == "f":
        return dt
    if dt.kind == "c":
        return dt
    return np.dtype(np.float64)


class TableIndex:
    """A merged table's keys, sorted, with one column (the map's signal) in the same order."""

    def __init__(self, H: np.ndarray, K: np.ndarray, L: np.ndarray, values: np.ndarray):
        H, K, L = (np.asarray(a, dtype=np.int64) for a in (H, K, L))
        if H.size and max(np.abs(a).max() for a in (H, K, L)) > KEY_LIMIT:
            raise ValueError(f"table indices x ndiv beyond +-{KEY_LIMIT}")
        keys = pack_keys(H, K, L)
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.values = np.asarray(values)[order]
        self.hkl = np.stack([a[order] for a in (H, K, L)]).astype(np.int32)  # (3, n), sorted
        self.dtype = map_dtype(self.values.dtype)
        dup = np.flatnonzero(self.keys[1:] == self.keys[:-1])
        self.duplicates = int(dup.size)

    @classmethod
    def from_table(cls, h, k, l, ndiv, values) -> TableIndex:
        """From float columns as stored: ``round(h * ndiv)`` as mdx2's ``HKLTable.H``."""
        H, K, L = (
            np.round(np.asarray(x, dtype=np.float64) * n).astype(np.int64)
            for x, n in zip((h, k, l), ndiv, strict=True)
        )
        return cls(H, K, L, values)

    def __len__(self) -> int:
        return self.keys.size

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes + self.hkl.nbytes

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Values at ``keys`` (any shape), NaN where the table has no row."""
        out = np.full(keys.shape, np.nan, dtype=self.dtype)
        if self.keys.size == 0:
            return out
        pos = np.searchsorted(self.keys, keys)
        np.minimum(pos, self.keys.size - 1, out=pos)
        hit = self.keys[pos] == keys
        out[hit] = self.values[pos[hit]]
        return out


def _block_indices(axes: GridAxes, h0: int, h1: int) -> np.ndarray:
    """int32 (3, n) integer indices of H planes ``h0:h1`` (positions along the H axis), C order."""
    H = axes.integer_axis(0)[h0:h1]
    K = axes.integer_axis(1)
    L = axes.integer_axis(2)
    shape = (H.size, K.size, L.size)
    hkl = np.empty((3, *shape), dtype=np.int32)
    hkl[0] = H[:, None, None]
    hkl[1] = K[None, :, None]
    hkl[2] = L[None, None, :]
    return hkl.reshape(3, -1)


def map_block(
    axes: GridAxes, h0: int, h1: int, index: TableIndex, ops, asu, symmetry: bool = True
) -> np.ndarray:
    """The map's values on H planes ``h0:h1`` (positions along the H axis): (h1 - h0, nK, nL)."""
    hkl = _block_indices(axes, h0, h1)
    if symmetry:
        hkl, _ = asu_images(hkl, ops, asu)
    keys = pack_keys(hkl[0], hkl[1], hkl[2])
    return index.lookup(keys).reshape(h1 - h0, axes.shape[1], axes.shape[2])


def map_block_oracle(
    axes: GridAxes, h0: int, h1: int, table: dict, ndiv, signal: str, ops, asu, symmetry=True
):
    """Slow and plain: a dict from the table's integer (H, K, L) to its value (first row wins), each
    grid point mapped by trying the Laue operators in order."""
    Ht, Kt, Lt = (
        np.round(np.asarray(table[c]) * n).astype(np.int64) for c, n in zip("hkl", ndiv, strict=True)
    )
    values = np.asarray(table[signal])
    lookup = {}
    for j in range(Ht.size):
        lookup.setdefault((int(Ht[j]), int(Kt[j]), int(Lt[j])), values[j])
    out = np.full((h1 - h0, axes.shape[1], axes.shape[2]), np.nan, dtype=map_dtype(values.dtype))
    for a, H in enumerate(axes.integer_axis(0)[h0:h1]):
        for b, K in enumerate(axes.integer_axis(1)):
            for c, L in enumerate(axes.integer_axis(2)):
                v = np.array([H, K, L], dtype=float)
                key = (int(H), int(K), int(L))
                if symmetry:
                    for i in range(ops.shape[0]):
                        w = (ops[i].T @ v).astype(np.int64)
                        if bool(asu(w[0:1], w[1:2], w[2:3])[0]):
                            key = (int(w[0]), int(w[1]), int(w[2]))
                            break
                    else:
                        raise ValueError("no operator maps the point into the asymmetric unit")
                if key in lookup:
                    out[a, b, c] = lookup[key]
    return out


@dataclass(frozen=True, eq=False)
class Orbits:
    """What :func:`map_block_orbits` needs: table rows (3, n) int32 that may be looked up, their
    values followed by one NaN (index -1 picks it), and the matrices sending a row to its orbit."""

    hkl: np.ndarray
    values: np.ndarray  # (n + 1,), the map's dtype; values[-1] is NaN
    mats: np.ndarray  # (m, 3, 3) int64


def orbits(index: TableIndex, ops, asu, symmetry: bool = True) -> Orbits | None:
    """The fast path's inputs from a :class:`TableIndex` (see :func:`orbits_of_rows`)."""
    return orbits_of_rows(index.hkl, index.values, ops, asu, symmetry)


def orbits_of_rows(hkl: np.ndarray, values: np.ndarray, ops, asu, symmetry: bool = True) -> Orbits | None:
    """The fast path's inputs for table rows ``hkl`` (3, n) int32 (distinct) and their values, or
    None where it does not apply (an ASU that does not select one member of every orbit, or
    operators without integer inverses)."""
    dtype = map_dtype(values.dtype)
    if not symmetry:
        rows, mats = None, np.eye(3, dtype=np.int64)[None]
    else:
        int_ops = np.rint(ops).astype(np.int64)
        if not np.array_equal(int_ops, ops) or not selects_one_per_orbit(int_ops, asu):
            return None
        mats = np.rint(np.linalg.inv(np.transpose(int_ops, (0, 2, 1)).astype(float))).astype(np.int64)
        eye = np.eye(3, dtype=np.int64)
        if not all(np.array_equal(m @ op.T, eye) for m, op in zip(mats, int_ops, strict=True)):
            return None
        rows = np.flatnonzero(np.asarray(asu(hkl[0], hkl[1], hkl[2]), dtype=bool))
    n = hkl.shape[1] if rows is None else rows.size
    out = np.empty(n + 1, dtype=dtype)
    out[:-1] = values if rows is None else values[rows]
    out[-1] = np.nan
    kept = hkl if rows is None else hkl[:, rows]
    return Orbits(np.ascontiguousarray(kept, dtype=np.int32), out, mats)


def count_repeated(hkl: np.ndarray, chunk: int = 1 << 22) -> int:
    """Rows of ``hkl`` (3, n) whose (h, k, l) an earlier row has (8 bytes a row)."""
    keys = np.empty(hkl.shape[1], dtype=np.int64)
    for a in range(0, keys.size, chunk):
        keys[a : a + chunk] = pack_keys(hkl[0, a : a + chunk], hkl[1, a : a + chunk], hkl[2, a : a + chunk])
    keys.sort()
    return int(np.count_nonzero(keys[1:] == keys[:-1]))


@functools.cache
def _scatter_orbits_numba():
    """The numba loop (compiled on first use; numba is imported only for tables big enough)."""
    import numba

    @numba.njit(nogil=True, cache=True)
    def scatter(hkl, mats, h0, k0, l0, out):  # pragma: no cover - compiled
        nh, nk, nl = out.shape
        for j in range(hkl.shape[1]):
            a = np.int64(hkl[0, j])
            b = np.int64(hkl[1, j])
            c = np.int64(hkl[2, j])
            for i in range(mats.shape[0]):
                x = mats[i, 0, 0] * a + mats[i, 0, 1] * b + mats[i, 0, 2] * c - h0
                if x < 0 or x >= nh:
                    continue
                y = mats[i, 1, 0] * a + mats[i, 1, 1] * b + mats[i, 1, 2] * c - k0
                if y < 0 or y >= nk:
                    continue
                z = mats[i, 2, 0] * a + mats[i, 2, 1] * b + mats[i, 2, 2] * c - l0
                if z < 0 or z >= nl:
                    continue
                out[x, y, z] = j

    return scatter


def _scatter_orbits_numpy(hkl, mats, h0, k0, l0, out) -> None:
    """The same as the numba loop, one operator at a time over all rows; the axis along which the
    box is thinnest (a slice's single plane, a block's few H planes) is tested first, so the other
    two are computed only for the few rows that pass."""
    rows = np.arange(hkl.shape[1])
    v = hkl.astype(np.int64)
    origin = (h0, k0, l0)
    order = np.argsort(out.shape, kind="stable")
    for m in mats:
        first = order[0]
        c = m[first, 0] * v[0] + m[first, 1] * v[1] + m[first, 2] * v[2] - origin[first]
        sel = np.flatnonzero((c >= 0) & (c < out.shape[first]))
        coords = [None, None, None]
        coords[first] = c[sel]
        w = v[:, sel]
        ok = np.ones(sel.size, dtype=bool)
        for axis in order[1:]:
            coords[axis] = m[axis, 0] * w[0] + m[axis, 1] * w[1] + m[axis, 2] * w[2] - origin[axis]
            ok &= (coords[axis] >= 0) & (coords[axis] < out.shape[axis])
        out[coords[0][ok], coords[1][ok], coords[2][ok]] = rows[sel][ok]


NUMBA_ABOVE = 4_000_000  # rows x operators beyond which the numba loop beats numpy (after its start-up)


def scatter_orbits(hkl, mats, h0, k0, l0, out, use_numba: bool | None = None) -> None:
    """``out[q - (h0, k0, l0)] = j`` for every row j of ``hkl`` (3, n) and every orbit point
    ``q = mats[i] @ hkl[:, j]`` inside ``out``'s box. numba for big tables (``use_numba`` None: rows x
    operators above :data:`NUMBA_ABOVE`), numpy otherwise (no numba start-up for small maps)."""
    if use_numba is None:
        use_numba = hkl.shape[1] * mats.shape[0] > NUMBA_ABOVE
    scatter = _scatter_orbits_numba() if use_numba else _scatter_orbits_numpy
    scatter(hkl, mats, h0, k0, l0, out)


def map_block_orbits(
    axes: GridAxes, h0: int, h1: int, orb: Orbits, use_numba: bool | None = None
) -> np.ndarray:
    """:func:`map_block`'s result by sending table rows to their orbits (see the module's text)."""
    rows = np.full(
        (h1 - h0, axes.shape[1], axes.shape[2]),
        -1,
        dtype=np.int64 if orb.hkl.shape[1] >= 2**31 - 1 else np.int32,
    )
    scatter_orbits(orb.hkl, orb.mats, axes.lo[0] + h0, axes.lo[1], axes.lo[2], rows, use_numba)
    return orb.values.take(rows)
