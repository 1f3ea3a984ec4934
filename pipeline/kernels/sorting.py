"""Stable sorts of voxel keys in the order a hash table left them (every run a map task spills).

``np.argsort(keys, kind="stable")`` is a timsort for int64 (about 0.1 s per million keys here), and
gathering structured rows with ``rows[order]`` is slower still (0.2 s per million 56-byte rows). Keys
of one run span few distinct H, K and L, so :func:`stable_key_order` maps each key to its rank in
the mixed radix of the run's own (H, K, L) ranges (order-preserving) and sorts that with a least
significant digit radix sort of at most 12 bits per pass (2-3 passes, ~3x faster); it falls back to
the timsort when the ranges need more than 48 bits. :func:`take_rows` gathers whole rows as machine
words, :func:`concat_rows` joins them so. All give exactly what ``np.argsort(kind="stable")``,
``rows[order]`` and ``np.concatenate`` give. (Reduce partitions are concatenations of sorted runs,
which the timsort merges faster than this.)
"""

from __future__ import annotations

import numpy as np

from pipeline.kernels.aot import kernel
from pipeline.kernels.keys import KEY_BITS

__all__ = ["concat_rows", "stable_key_order", "stable_key_order_oracle", "take_rows"]

_DIGIT = 12
_MAX_BITS = 4 * _DIGIT
_FIELD = (1 << KEY_BITS) - 1


@kernel(nogil=True, cache=True, signatures=[("int64[::1]",)])
def _compact_keys(keys):
    """Keys as ranks in the mixed radix of their own (H, K, L) ranges, and the bits those need."""
    n = keys.size
    lo = np.full(3, np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full(3, np.iinfo(np.int64).min, dtype=np.int64)
    for i in range(n):
        k = keys[i]
        f0 = k >> (2 * KEY_BITS)
        f1 = (k >> KEY_BITS) & _FIELD
        f2 = k & _FIELD
        lo[0] = min(lo[0], f0)
        hi[0] = max(hi[0], f0)
        lo[1] = min(lo[1], f1)
        hi[1] = max(hi[1], f1)
        lo[2] = min(lo[2], f2)
        hi[2] = max(hi[2], f2)
    n1 = hi[1] - lo[1] + 1
    n2 = hi[2] - lo[2] + 1
    span = (hi[0] - lo[0] + 1) * n1 * n2  # at most 2**63 (three 21-bit fields)
    bits = 0
    while bits < 63 and (np.int64(1) << bits) < span:
        bits += 1
    out = np.empty(n, dtype=np.int64)
    if bits > _MAX_BITS:
        return out, bits
    for i in range(n):
        k = keys[i]
        out[i] = (((k >> (2 * KEY_BITS)) - lo[0]) * n1 + (((k >> KEY_BITS) & _FIELD) - lo[1])) * n2 + (
            (k & _FIELD) - lo[2]
        )
    return out, bits


@kernel(nogil=True, cache=True, signatures=[("int64[::1]", "int64", "int64")])
def _radix_order(ranks, bits, max_digit=_DIGIT):
    """Stable order of non-negative ``ranks`` below ``2**bits``: an LSD radix sort of (rank, index)
    pairs (ranks move with their indices, so every pass reads sequentially); all digit histograms
    are counted in one first pass."""
    n = ranks.size
    passes = max(1, (bits + max_digit - 1) // max_digit)
    digit = (bits + passes - 1) // passes  # equal digits of at most max_digit bits
    size = 1 << digit
    mask = size - 1
    count = np.zeros((passes, size), dtype=np.int64)
    for i in range(n):
        r = ranks[i]
        for q in range(passes):
            count[q, (r >> (q * digit)) & mask] += 1
    order = np.arange(n)
    keys = ranks.copy()
    order2 = np.empty(n, dtype=np.int64)
    keys2 = np.empty(n, dtype=np.int64)
    for q in range(passes):
        start = np.empty(size, dtype=np.int64)
        total = 0
        for d in range(size):
            start[d] = total
            total += count[q, d]
        shift = q * digit
        for i in range(n):
            r = keys[i]
            d = (r >> shift) & mask
            j = start[d]
            keys2[j] = r
            order2[j] = order[i]
            start[d] = j + 1
        order, order2 = order2, order
        keys, keys2 = keys2, keys
    return order


def stable_key_order(keys: np.ndarray) -> np.ndarray:
    """The stable sorting order of int64 voxel ``keys`` (equal to ``np.argsort(keys, kind="stable")``)."""
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    if keys.size < 2:
        return np.arange(keys.size)
    ranks, bits = _compact_keys(keys)
    if bits > _MAX_BITS:
        return np.argsort(keys, kind="stable")
    return _radix_order(ranks, bits, _DIGIT)


def stable_key_order_oracle(keys: np.ndarray) -> np.ndarray:
    return np.argsort(np.asarray(keys, dtype=np.int64), kind="stable")


def take_rows(rows: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``rows[order]`` for a structured array of plain fields, gathered as whole rows of bytes."""
    if rows.dtype.hasobject or not rows.flags.c_contiguous or rows.dtype.itemsize % 8:
        return rows[order]
    words = rows.view(np.int64).reshape(rows.size, rows.dtype.itemsize // 8)
    return np.take(words, order, axis=0).reshape(-1).view(rows.dtype)


def concat_rows(pieces: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """``np.concatenate(pieces)`` of structured arrays of ``dtype``, copied as machine words (numpy's
    structured concatenation goes field by field, several times slower)."""
    if not pieces:
        return np.zeros(0, dtype)
    if len(pieces) == 1:
        return pieces[0]
    if (
        dtype.hasobject
        or dtype.itemsize % 8
        or any(p.dtype != dtype or not p.flags.c_contiguous for p in pieces)
    ):
        return np.concatenate(pieces)
    return np.concatenate([p.view(np.int64) for p in pieces]).view(dtype)
