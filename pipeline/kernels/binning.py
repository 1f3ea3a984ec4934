"""Bin the pixels of one storage chunk into voxel partial sums: the hot loop of ``integrate``.

For every pixel that is not masked (counts != -1 and mask False), in C order of the chunk:

    (h, k, l)  = trilinear interpolation of the Miller grid (float64, mdx2's operation order)
    key        = pack(round(h * ndiv_h), round(k * ndiv_k), round(l * ndiv_l))   (half to even)
    per key:     pixels += 1, counts += c, phi += phi_frame, iy += y, ix += x, seconds += t_frame

Sums are accumulated per key in pixel order, the same additions ``np.bincount`` does in mdx2, so the
float64 partial sums (and the partial-observation split that depends on them) are bit-identical.

Two implementations: :func:`bin_chunk` (numba, nogil, an open-addressing hash table) and
:func:`bin_chunk_oracle` (plain numpy, ``np.unique`` + ``np.bincount``, as mdx2 does it).
"""

from __future__ import annotations

import numba
import numpy as np

from pipeline.geometry.interpolate import MillerBlock, miller_indices_dense
from pipeline.kernels.keys import KEY_BITS, KEY_LIMIT, KEY_OFFSET, pack_keys

__all__ = ["PARTIAL_DTYPE", "bin_chunk", "bin_chunk_oracle", "empty_partials"]

#: One row per (storage chunk, voxel): additive sums only; means are formed after the reduction.
PARTIAL_DTYPE = np.dtype(
    [
        ("key", "<i8"),
        ("pixels", "<i8"),
        ("counts", "<i8"),
        ("phi", "<f8"),
        ("iy", "<f8"),
        ("ix", "<f8"),
        ("seconds", "<f8"),
    ]
)

_EMPTY = np.int64(-1)
_HASH_MULT = np.uint64(11400714819323198485)  # 2**64 / golden ratio (Fibonacci hashing)


def empty_partials(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=PARTIAL_DTYPE)


@numba.njit(nogil=True, cache=True)
def _slot(key, keys, bits):
    """Index of ``key`` in the open-addressing table ``keys`` (linear probing), or of the empty slot."""
    mask = (1 << bits) - 1
    i = np.int64((np.uint64(key) * _HASH_MULT) >> np.uint64(64 - bits))
    while True:
        k = keys[i]
        if k == key or k == _EMPTY:
            return i
        i = (i + 1) & mask


@numba.njit(nogil=True, cache=True)
def _grow(keys, ints, floats, bits):
    """Rehash into a table twice the size."""
    new_bits = bits + 1
    new_keys = np.full(1 << new_bits, _EMPTY, dtype=np.int64)
    new_ints = np.zeros((1 << new_bits, 2), dtype=np.int64)
    new_floats = np.zeros((1 << new_bits, 4), dtype=np.float64)
    for i in range(keys.size):
        if keys[i] != _EMPTY:
            j = _slot(keys[i], new_keys, new_bits)
            new_keys[j] = keys[i]
            new_ints[j] = ints[i]
            new_floats[j] = floats[i]
    return new_keys, new_ints, new_floats, new_bits


@numba.njit(nogil=True, cache=True)
def _bin_chunk_numba(
    data, mask, use_mask, partial, final_axis, base, weight, phi, iy, ix, seconds, ndiv, bits
):
    nphi, ny, nx = data.shape
    keys = np.full(1 << bits, _EMPTY, dtype=np.int64)
    ints = np.zeros((1 << bits, 2), dtype=np.int64)  # pixels, counts
    floats = np.zeros((1 << bits, 4), dtype=np.float64)  # phi, iy, ix, seconds sums
    used = 0
    last_key = _EMPTY
    last_slot = 0
    nh = np.float64(ndiv[0])
    nk = np.float64(ndiv[1])
    nl = np.float64(ndiv[2])
    out_of_range = False
    for p in range(nphi):
        for y in range(ny):
            for x in range(nx):
                c = data[p, y, x]
                if c == -1:
                    continue
                if use_mask and mask[p, y, x]:
                    continue
                # last interpolation step along the final axis: lo * (1 - w) + hi * w (mdx2's order)
                if final_axis == 2:
                    j = base[x]
                    w = weight[x]
                    h = partial[p, y, j, 0] * (1.0 - w) + partial[p, y, j + 1, 0] * w
                    k = partial[p, y, j, 1] * (1.0 - w) + partial[p, y, j + 1, 1] * w
                    l = partial[p, y, j, 2] * (1.0 - w) + partial[p, y, j + 1, 2] * w
                elif final_axis == 1:
                    j = base[y]
                    w = weight[y]
                    h = partial[p, j, x, 0] * (1.0 - w) + partial[p, j + 1, x, 0] * w
                    k = partial[p, j, x, 1] * (1.0 - w) + partial[p, j + 1, x, 1] * w
                    l = partial[p, j, x, 2] * (1.0 - w) + partial[p, j + 1, x, 2] * w
                else:
                    j = base[p]
                    w = weight[p]
                    h = partial[j, y, x, 0] * (1.0 - w) + partial[j + 1, y, x, 0] * w
                    k = partial[j, y, x, 1] * (1.0 - w) + partial[j + 1, y, x, 1] * w
                    l = partial[j, y, x, 2] * (1.0 - w) + partial[j + 1, y, x, 2] * w
                H = np.int64(np.rint(h * nh))
                K = np.int64(np.rint(k * nk))
                L = np.int64(np.rint(l * nl))
                if abs(H) > KEY_LIMIT or abs(K) > KEY_LIMIT or abs(L) > KEY_LIMIT:
                    out_of_range = True
                    continue
                key = ((H + KEY_OFFSET) << (2 * KEY_BITS)) | ((K + KEY_OFFSET) << KEY_BITS) | (L + KEY_OFFSET)
                if key == last_key:
                    s = last_slot
                else:
                    s = _slot(key, keys, bits)
                    if keys[s] == _EMPTY:
                        if 2 * (used + 1) > keys.size:
                            keys, ints, floats, bits = _grow(keys, ints, floats, bits)
                            s = _slot(key, keys, bits)
                        keys[s] = key
                        used += 1
                    last_key = key
                    last_slot = s
                ints[s, 0] += 1
                ints[s, 1] += c
                floats[s, 0] += phi[p]
                floats[s, 1] += iy[y]
                floats[s, 2] += ix[x]
                floats[s, 3] += seconds[p]
    out_keys = np.empty(used, dtype=np.int64)
    out_ints = np.empty((used, 2), dtype=np.int64)
    out_floats = np.empty((used, 4), dtype=np.float64)
    n = 0
    for i in range(keys.size):
        if keys[i] != _EMPTY:
            out_keys[n] = keys[i]
            out_ints[n] = ints[i]
            out_floats[n] = floats[i]
            n += 1
    return out_keys, out_ints, out_floats, out_of_range, bits


def _pack_rows(keys, ints, floats) -> np.ndarray:
    out = np.empty(keys.size, dtype=PARTIAL_DTYPE)
    out["key"] = keys
    out["pixels"] = ints[:, 0]
    out["counts"] = ints[:, 1]
    out["phi"] = floats[:, 0]
    out["iy"] = floats[:, 1]
    out["ix"] = floats[:, 2]
    out["seconds"] = floats[:, 3]
    return out


def _check_inputs(data, mask, block: MillerBlock, phi, iy, ix, seconds):
    shape = data.shape
    if data.ndim != 3 or (mask is not None and mask.shape != shape):
        raise ValueError(f"data {data.shape} and mask {None if mask is None else mask.shape} must agree (3-D)")
    if (phi.size, iy.size, ix.size) != shape or seconds.size != shape[0]:
        raise ValueError(f"axes ({phi.size}, {iy.size}, {ix.size}) do not match the chunk's shape {shape}")
    if block.base.size != shape[block.final_axis]:
        raise ValueError("Miller block was prepared for a chunk of another shape")


def bin_chunk(data, mask, block: MillerBlock, phi, iy, ix, seconds, ndiv, size_hint: int = 0) -> np.ndarray:
    """Partial sums per voxel of one storage chunk (rows in no particular order); see module docstring.

    ``data`` int (nphi, ny, nx) counts with -1 for excluded pixels; ``mask`` bool, True = exclude, or
    None; ``block`` from :func:`~pipeline.geometry.interpolate.prepare_miller_block` for this chunk.
    """
    _check_inputs(data, mask, block, phi, iy, ix, seconds)
    data = np.ascontiguousarray(data)
    use_mask = mask is not None
    mask_arr = np.ascontiguousarray(mask, dtype=np.bool_) if use_mask else np.zeros((1, 1, 1), np.bool_)
    bits = max(10, int(np.ceil(np.log2(max(size_hint, 1) * 2 + 1))))
    keys, ints, floats, out_of_range, _ = _bin_chunk_numba(
        data,
        mask_arr,
        use_mask,
        block.partial,
        block.final_axis,
        block.base,
        block.weight,
        np.ascontiguousarray(phi, dtype=np.float64),
        np.ascontiguousarray(iy, dtype=np.float64),
        np.ascontiguousarray(ix, dtype=np.float64),
        np.ascontiguousarray(seconds, dtype=np.float64),
        np.asarray(ndiv, dtype=np.int64),
        bits,
    )
    if out_of_range:
        raise ValueError(f"a Miller index times ndiv exceeds {KEY_LIMIT}; subdivide {tuple(ndiv)} is too fine")
    return _pack_rows(keys, ints, floats)


def bin_chunk_oracle(data, mask, block: MillerBlock, phi, iy, ix, seconds, ndiv) -> np.ndarray:
    """Slow, obviously-correct version of :func:`bin_chunk` (numpy; ``np.unique`` and ``np.bincount``)."""
    _check_inputs(data, mask, block, phi, iy, ix, seconds)
    hkl = miller_indices_dense(block, data.shape)
    keep = data != -1
    if mask is not None:
        keep &= ~mask
    P, Y, X = np.meshgrid(np.asarray(phi, float), np.asarray(iy, float), np.asarray(ix, float), indexing="ij")
    T = np.broadcast_to(np.asarray(seconds, float)[:, None, None], data.shape)
    H, K, L = (np.round(hkl[..., i][keep] * n).astype(np.int64) for i, n in enumerate(ndiv))
    keys = pack_keys(H, K, L)
    unique, inverse, pixels = np.unique(keys, return_inverse=True, return_counts=True)
    out = np.empty(unique.size, dtype=PARTIAL_DTYPE)
    out["key"] = unique
    out["pixels"] = pixels
    out["counts"] = np.bincount(inverse, weights=data[keep]).astype(np.int64)
    for name, values in (("phi", P), ("iy", Y), ("ix", X), ("seconds", T)):
        out[name] = np.bincount(inverse, weights=values[keep], minlength=unique.size)
    return out
