"""Map integer Miller indices to the reciprocal-space asymmetric unit, as mdx2's ``Symmetry.to_asu``.

For each Laue operator ``op[i]`` in *reverse* order ``i = N-1 ... 0``: ``hkl_i = op[i].T @ (H, K, L)``;
where ``asu(hkl_i)`` holds, set ``op = i`` and ``hkl = hkl_i``; so the lowest matching index wins.
With P1 (``ops is None``): ``op = (L < 0)`` and ``L = |L|``.
"""

from __future__ import annotations

import numpy as np

from pipeline.geometry.expressions import MillerExpression

__all__ = ["to_asu", "to_asu_oracle"]


def to_asu(H, K, L, ops: np.ndarray | None, asu: MillerExpression | None):
    """Integer (H, K, L) in the asymmetric unit and the index of the operator that maps them there."""
    H, K, L = (np.asarray(a, dtype=np.int64) for a in (H, K, L))
    if ops is None:
        return H, K, np.abs(L), (L < 0).astype(np.int64)
    hkl_in = np.stack((H, K, L))
    hkl_out = np.empty_like(hkl_in)
    op_index = np.full(H.shape, -1, dtype=np.int64)
    for i in reversed(range(ops.shape[0])):
        # mdx2 computes op.T @ hkl in float64 and stores it into the integer array (truncation)
        hkl_i = np.tensordot(ops[i].T, hkl_in, axes=1)
        hit = asu(hkl_i[0], hkl_i[1], hkl_i[2])
        op_index[hit] = i
        hkl_out[:, hit] = hkl_i[:, hit]
    if np.any(op_index < 0):
        bad = np.flatnonzero(op_index < 0)[0]
        raise ValueError(
            f"no Laue operator maps ({H.flat[bad]}, {K.flat[bad]}, {L.flat[bad]}) into the asymmetric unit "
            f"{asu.text!r}; the symmetry in geometry.nxs is inconsistent"
        )
    return hkl_out[0], hkl_out[1], hkl_out[2], op_index


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
