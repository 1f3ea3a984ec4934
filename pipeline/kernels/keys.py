"""Voxel keys: integer (H, K, L) = round((h, k, l) * ndiv) packed into one sortable int64.

Each index gets 21 bits after adding an offset of 2**20, so |H|, |K|, |L| < 2**20 = 1,048,576 and
integer order of keys is lexicographic (H, K, L) order.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KEY_LIMIT", "KEY_OFFSET", "pack_keys", "unpack_keys"]

KEY_BITS = 21
KEY_OFFSET = 1 << (KEY_BITS - 1)
KEY_LIMIT = KEY_OFFSET - 1  # largest |H| a key can hold
_FIELD = (1 << KEY_BITS) - 1


def pack_keys(H, K, L) -> np.ndarray:
    """Pack integer Miller indices (arrays of equal shape) into int64 keys sorted like (H, K, L)."""
    H, K, L = (np.asarray(a, dtype=np.int64) for a in (H, K, L))
    return ((H + KEY_OFFSET) << (2 * KEY_BITS)) | ((K + KEY_OFFSET) << KEY_BITS) | (L + KEY_OFFSET)


def unpack_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_keys`."""
    keys = np.asarray(keys, dtype=np.int64)
    H = (keys >> (2 * KEY_BITS)) - KEY_OFFSET
    K = ((keys >> KEY_BITS) & _FIELD) - KEY_OFFSET
    L = (keys & _FIELD) - KEY_OFFSET
    return H, K, L
