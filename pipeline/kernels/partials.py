"""Reduce partial rows into per-voxel observations: mdx2's partial-observation split, then sums.

Input: partial rows (one per storage chunk and voxel, :data:`~pipeline.kernels.binning.PARTIAL_DTYPE`).
For each partial row ``m = phi_sum / pixels`` (its mean rotation angle). Within each voxel (H, K, L)::

    n = floor((m - min(m over the voxel)) / max_spread)

and all sums are added up by (H, K, L, n). Every row of a voxel must be present in the same call, so
the caller partitions by ranges of keys. Output rows are sorted by (H, K, L, n), as mdx2 writes them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.kernels.binning import PARTIAL_DTYPE
from pipeline.kernels.keys import unpack_keys

__all__ = ["OBSERVATION_DTYPE", "finalize", "reduce_partials", "reduce_partials_oracle"]

#: Sums per observation (voxel, n); the same columns as the partial rows plus ``n``.
OBSERVATION_DTYPE = np.dtype([*PARTIAL_DTYPE.descr, ("n", "<i8")])

_SUMMED = ("pixels", "counts", "phi", "iy", "ix", "seconds")


def _group_starts(*columns: np.ndarray) -> np.ndarray:
    """Indices where any of the (already sorted) columns changes value, starting with 0."""
    size = columns[0].size
    change = np.zeros(size, dtype=bool)
    if size:
        change[0] = True
    for c in columns:
        change[1:] |= c[1:] != c[:-1]
    return np.flatnonzero(change)


def reduce_partials(rows: np.ndarray, max_spread: float) -> np.ndarray:
    """Sum partial rows into observations (voxel, n); see the module docstring. Sorted by (key, n)."""
    if rows.dtype != PARTIAL_DTYPE:
        raise TypeError(f"expected partial rows of dtype {PARTIAL_DTYPE}, got {rows.dtype}")
    if rows.size == 0:
        return np.zeros(0, dtype=OBSERVATION_DTYPE)
    # 1. sort by voxel key (stable: keeps chunk order within a voxel)
    order = np.argsort(rows["key"], kind="stable")
    key = rows["key"][order]
    m = rows["phi"][order] / rows["pixels"][order]
    # 2. per-voxel minimum of the mean angle, and the split index n
    starts = _group_starts(key)
    lengths = np.diff(np.append(starts, key.size))
    voxel_min = np.repeat(np.minimum.reduceat(m, starts), lengths)
    n = np.floor((m - voxel_min) / max_spread).astype(np.int64)
    # 3. sort by (key, n) and sum each group
    order2 = np.lexsort((n, key))
    key, n, order = key[order2], n[order2], order[order2]
    starts = _group_starts(key, n)
    out = np.empty(starts.size, dtype=OBSERVATION_DTYPE)
    out["key"] = key[starts]
    out["n"] = n[starts]
    for name in _SUMMED:
        out[name] = np.add.reduceat(rows[name][order], starts)
    return out


def reduce_partials_oracle(rows: np.ndarray, max_spread: float) -> np.ndarray:
    """The same reduction in pandas, as mdx2.integrate writes it (groupby transform min, groupby sum)."""
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
