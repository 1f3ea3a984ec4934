"""Reduce partial rows into per-voxel observations: mdx2's partial-observation split, then sums.

Input: partial rows (one per storage chunk and voxel, :data:`~pipeline.kernels.binning.PARTIAL_DTYPE`).
For each partial row ``m = phi_sum / pixels`` (its mean rotation angle). Within each voxel (H, K, L)::

    n = floor((m - min(m over the voxel)) / max_spread)

and all sums are added up by (H, K, L, n). Every row of a voxel must be present in the same call, so
the caller partitions by ranges of keys. Output rows are sorted by (H, K, L, n), as mdx2 writes them.
"""

from __future__ import annotations

import numpy as np

from pipeline.kernels.aot import kernel
from pipeline.kernels.binning import PARTIAL_DTYPE
from pipeline.kernels.keys import KEY_BITS, KEY_OFFSET, unpack_keys

__all__ = [
    "OBSERVATION_DTYPE",
    "finalize",
    "kahan_reduceat",
    "reduce_partials",
    "reduce_partials_oracle",
    "reduce_to_columns",
    "reduce_to_table",
]

#: Sums per observation (voxel, n); the same columns as the partial rows plus ``n``.
OBSERVATION_DTYPE = np.dtype([*PARTIAL_DTYPE.descr, ("n", "<i8")])

_INTEGER_SUMS = ("pixels", "counts")  # exact in any order
_FLOAT_SUMS = ("phi", "iy", "ix", "seconds")  # summed as pandas does (see kahan_reduceat)


def reduce_partials(rows: np.ndarray, max_spread: float) -> np.ndarray:
    """Sum partial rows into observations (voxel, n); see the module docstring. Sorted by (key, n).

    1. a stable sort by voxel key keeps each voxel's rows in their original (chunk) order;
    2. one pass over the sorted rows: per voxel the minimum mean angle, each row's n, then the sums
       of each (voxel, n) in row order (floats with pandas' Kahan summation, see kahan_reduceat).
    """
    if rows.dtype != PARTIAL_DTYPE:
        raise TypeError(f"expected partial rows of dtype {PARTIAL_DTYPE}, got {rows.dtype}")
    if rows.size == 0:
        return np.zeros(0, dtype=OBSERVATION_DTYPE)
    order = np.argsort(rows["key"], kind="stable")
    columns = [rows[name] for name in ("key", "pixels", "counts", *_FLOAT_SUMS)]
    key, n, ints, sums = _reduce_sorted(order, *columns, float(max_spread))
    out = np.empty(key.size, dtype=OBSERVATION_DTYPE)
    out["key"] = key
    out["n"] = n
    for i, name in enumerate(_INTEGER_SUMS):
        out[name] = ints[:, i]
    for i, name in enumerate(_FLOAT_SUMS):
        out[name] = sums[:, i]
    return out


@kernel(
    nogil=True, cache=True, signatures=[("int64[::1]", *["int64[:]"] * 3, *["float64[:]"] * 4, "float64")]
)
def _reduce_sorted(order, key_, pixels_, counts_, phi, iy, ix, seconds, max_spread):
    """Rows taken in ``order`` (sorted by key) -> (key, n, [pixels, counts], [phi, iy, ix, seconds])."""
    size = order.size
    key = np.empty(size, dtype=np.int64)
    pixels = np.empty(size, dtype=np.int64)
    counts = np.empty(size, dtype=np.int64)
    floats = np.empty((size, 4), dtype=np.float64)
    for i in range(size):
        r = order[i]
        key[i] = key_[r]
        pixels[i] = pixels_[r]
        counts[i] = counts_[r]
        floats[i, 0] = phi[r]
        floats[i, 1] = iy[r]
        floats[i, 2] = ix[r]
        floats[i, 3] = seconds[r]
    out_key = np.empty(size, dtype=np.int64)
    out_n = np.empty(size, dtype=np.int64)
    out_ints = np.empty((size, 2), dtype=np.int64)
    out_sums = np.empty((size, 4), dtype=np.float64)
    split = np.empty(size, dtype=np.int64)
    total = 0
    a = 0
    while a < size:
        b = a + 1
        while b < size and key[b] == key[a]:
            b += 1
        if b == a + 1:  # one row (most voxels at fine subdivision): n = 0, Kahan sums of one value
            out_key[total] = key[a]
            out_n[total] = 0
            out_ints[total, 0] = pixels[a]
            out_ints[total, 1] = counts[a]
            for j in range(4):
                out_sums[total, j] = 0.0 + floats[a, j]  # as the Kahan loop: -0.0 becomes 0.0
            total += 1
            a = b
            continue
        # the voxel's rows are a..b-1: minimum of the mean angles m = phi / pixels, then each n
        lowest = np.inf
        for i in range(a, b):
            lowest = min(lowest, floats[i, 0] / pixels[i])
        for i in range(a, b):
            split[i] = np.int64(np.floor((floats[i, 0] / pixels[i] - lowest) / max_spread))
        # one output row per distinct n, in increasing n; rows of an n summed in row order
        current = -1
        while True:
            following = np.iinfo(np.int64).max
            for i in range(a, b):
                if current < split[i] < following:
                    following = split[i]
            if following == np.iinfo(np.int64).max:
                break
            current = following
            n_pixels = 0
            n_counts = 0
            for j in range(4):
                s = 0.0
                c = 0.0
                for i in range(a, b):
                    if split[i] != current:
                        continue
                    y = floats[i, j] - c  # Kahan, as pandas' group_sum
                    t = s + y
                    c = (t - s) - y
                    if c != c:
                        c = 0.0
                    s = t
                out_sums[total, j] = s
            for i in range(a, b):
                if split[i] == current:
                    n_pixels += pixels[i]
                    n_counts += counts[i]
            out_key[total] = key[a]
            out_n[total] = current
            out_ints[total, 0] = n_pixels
            out_ints[total, 1] = n_counts
            total += 1
        a = b
    return out_key[:total], out_n[:total], out_ints[:total], out_sums[:total]


_INTEGRATED_FIELDS = ("h", "k", "l", "phi", "iy", "ix", "seconds", "counts", "pixels", "n")
#: the sums as _reduce_sorted returns them; the columns of mdx2's dtypes, whole or fields of a table
_FINALIZE_INTO = (
    "int64[:]", "int64[:]", "int64[:, :]", "float64[:, :]", "int64[::1]", *["float32[:]"] * 7,
    "int32[:]", "int32[:]", "float64[:]",
)  # fmt: skip


def reduce_to_table(rows: np.ndarray, max_spread: float, ndiv, dtype: np.dtype) -> np.ndarray:
    """``finalize(reduce_partials(rows, max_spread), ndiv)`` as one structured array of ``dtype``
    (mdx2's integrated columns, :data:`~pipeline.io.tables.INTEGRATED_SCHEMA`), written in one pass
    from the sums: no observation array, no column temporaries (the reduce task's memory and time)."""
    if rows.dtype != PARTIAL_DTYPE:
        raise TypeError(f"expected partial rows of dtype {PARTIAL_DTYPE}, got {rows.dtype}")
    sums = _sums(rows, max_spread)
    table = np.empty(sums[0].size, dtype)
    _finalize_into(*sums, np.asarray(ndiv, dtype=np.int64), *(table[f] for f in _INTEGRATED_FIELDS))
    return table


def reduce_to_columns(rows: np.ndarray, max_spread: float, ndiv, schema: dict) -> dict[str, np.ndarray]:
    """:func:`reduce_to_table` as one contiguous array per column of ``schema`` (what the table
    writer takes without copying)."""
    if rows.dtype != PARTIAL_DTYPE:
        raise TypeError(f"expected partial rows of dtype {PARTIAL_DTYPE}, got {rows.dtype}")
    sums = _sums(rows, max_spread)
    columns = {name: np.empty(sums[0].size, schema[name]) for name in _INTEGRATED_FIELDS}
    _finalize_into(*sums, np.asarray(ndiv, dtype=np.int64), *columns.values())
    return columns


def _sums(rows: np.ndarray, max_spread: float):
    """(key, n, [pixels, counts], [phi, iy, ix, seconds]) of the observations, sorted."""
    if rows.size == 0:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2), np.int64), np.zeros((0, 4)))
    order = np.argsort(rows["key"], kind="stable")
    columns = [rows[name] for name in ("key", "pixels", "counts", *_FLOAT_SUMS)]
    return _reduce_sorted(order, *columns, float(max_spread))


@kernel(nogil=True, cache=True, signatures=[_FINALIZE_INTO])
def _finalize_into(key, n, ints, sums, ndiv, h, k, l, phi, iy, ix, seconds, counts, pixels, n_out):
    """:func:`finalize`'s operations row by row (the same float64 divisions, then the casts)."""
    field = (1 << KEY_BITS) - 1
    for i in range(key.size):
        kk = key[i]
        h[i] = np.float32(((kk >> (2 * KEY_BITS)) - KEY_OFFSET) / ndiv[0])
        k[i] = np.float32((((kk >> KEY_BITS) & field) - KEY_OFFSET) / ndiv[1])
        l[i] = np.float32(((kk & field) - KEY_OFFSET) / ndiv[2])
        p = ints[i, 0]
        phi[i] = np.float32(sums[i, 0] / p)
        iy[i] = np.float32(sums[i, 1] / p)
        ix[i] = np.float32(sums[i, 2] / p)
        seconds[i] = np.float32(sums[i, 3])
        counts[i] = np.int32(ints[i, 1])
        pixels[i] = np.int32(p)
        n_out[i] = np.float64(n[i])


def kahan_reduceat(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sums of ``values[starts[i]:starts[i + 1]]`` (rows, per column) exactly as pandas' ``groupby().sum()``.

    mdx2 sums the partial rows with pandas, whose ``group_sum`` adds each group's rows in row order
    with Kahan compensation (``y = v - c; t = s + y; c = (t - s) - y; s = t``, and ``c = 0`` when it
    is NaN). ``np.add.reduceat`` (plain/pairwise addition) differs in the last bit of e.g. the phi
    and seconds sums, which can flip a float32 output value. (pandas 3.1 adds with ``np.add.reduceat``
    instead when the rows happen to be sorted by group already; mdx2's concatenation of per-chunk
    tables is, in practice, only in degenerate cases such as a single storage chunk, where every
    group has one row and both ways give the same sums.)
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    return _kahan_reduceat(values, np.asarray(starts, dtype=np.int64))


@kernel(nogil=True, cache=True, signatures=[("float64[:, ::1]", "int64[::1]")])
def _kahan_reduceat(values, starts):
    # no fastmath: LLVM keeps every IEEE operation as written, so (t - s) - y is not folded to 0
    n, k = values.shape
    out = np.zeros((starts.size, k))
    for g in range(starts.size):
        hi = starts[g + 1] if g + 1 < starts.size else n
        for j in range(k):
            s = 0.0
            c = 0.0
            for i in range(starts[g], hi):
                y = values[i, j] - c
                t = s + y
                c = (t - s) - y
                if c != c:  # pandas GH#53606: an infinite value must not turn the sum into NaN
                    c = 0.0
                s = t
            out[g, j] = s
    return out


def reduce_partials_oracle(rows: np.ndarray, max_spread: float) -> np.ndarray:
    """The same reduction in pandas, as mdx2.integrate writes it (groupby transform min, groupby sum)."""
    import pandas as pd

    df = pd.DataFrame({name: rows[name] for name in PARTIAL_DTYPE.names})
    m = df["phi"] / df["pixels"]
    df["n"] = np.floor((m - m.groupby(df["key"]).transform("min")) / max_spread).astype(np.int64)
    df = df.groupby(["key", "n"], sort=True).sum().reset_index()
    out = np.empty(len(df), dtype=OBSERVATION_DTYPE)
    for name in OBSERVATION_DTYPE.names:
        out[name] = df[name].to_numpy()
    return out


def finalize(obs: np.ndarray, ndiv: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Observation sums to mdx2's integrated columns: h = H / ndiv, means of phi/iy/ix, mdx2's dtypes."""
    H, K, L = unpack_keys(obs["key"])
    pixels = obs["pixels"]
    return {
        "h": (H / ndiv[0]).astype(np.float32),
        "k": (K / ndiv[1]).astype(np.float32),
        "l": (L / ndiv[2]).astype(np.float32),
        "phi": (obs["phi"] / pixels).astype(np.float32),
        "iy": (obs["iy"] / pixels).astype(np.float32),
        "ix": (obs["ix"] / pixels).astype(np.float32),
        "seconds": obs["seconds"].astype(np.float32),
        "counts": obs["counts"].astype(np.int32),
        "pixels": pixels.astype(np.int32),
        "n": obs["n"].astype(np.float64),
    }
