"""mdx2.merge's arithmetic on one partition of voxels (pure numpy), with slow oracles beside it.

mdx2 1.0.5 (``mdx2.command_line.merge`` with ``mdx2.scaling.ScaledData``) merges the whole table at
once; every statistic it computes is per voxel, so the same arithmetic on a partition holding *all*
rows of its voxels, in the table's order within each voxel, gives the same bits:

* ``np.bincount`` sums the weights of a voxel in row order, in float64: rows of a voxel are kept in
  their original order (inputs in command-line order, rows in file order), so the sums are equal;
* intensities are divided by their scale and offset in float32 (``ScaledData.scale`` is
  ``np.ones_like(intensity)``, float32, and the scales are assigned into it), weights ``1/sigma**2``
  are float32, and the final division and square root go through ``numpy.ma`` (masking zero divisors
  and non-finite results), as mdx2 does;
* the outlier test uses the float64 merged intensity and mdx2's one-sided residual; a masked
  residual's *data* still decides (``mask[isoutlier] = True`` with a masked boolean index), which we
  reproduce by running the same ``numpy.ma`` expression.

Only the random half-splits (``wrs`` in mdx2) are not per voxel: the jitter (one
``random_sample`` per row in table order), the flips (one ``randint(2)`` per voxel in voxel order)
and a running ``cumsum`` of the sorted weights over the *whole* table. Each partition sorts its rows
(:func:`split_order`); the running sums at the partitions' starts are chained in voxel order
(:func:`running_sum`, a cumsum per partition), and then every partition finishes on its own
(:func:`split_from_order`) with the global sums bit for bit; :mod:`pipeline.graph.merge` wires it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.kernels.keys import KEY_LIMIT, pack_keys, unpack_keys

__all__ = [
    "BatchModels",
    "MergeStats",
    "PartitionMerge",
    "RandomStream",
    "batch_scale_offset",
    "group_merge",
    "inversion_ops",
    "keys_to_hkl",
    "merge_partition",
    "merge_partition_oracle",
    "random_split",
    "random_split_oracle",
    "running_sum",
    "scaled_rows",
    "split_from_order",
    "split_order",
    "split_weights",
    "voxel_keys",
    "voxels",
    "wrs_global",
]


def voxel_keys(h, k, l, ndiv) -> tuple[np.ndarray, np.ndarray]:
    """Sortable int64 voxel keys of rows and their integer H, as mdx2's ``HKLTable.H/K/L``.

    mdx2 reads ``ndiv`` from the file as int64 numbers, so ``h * ndiv`` is computed in float64 and
    rounded half to even (``np.round``). Raises ValueError for indices the keys cannot hold.
    """
    idx = [
        np.round(np.asarray(c, dtype=np.float64) * np.int64(n)) for c, n in zip((h, k, l), ndiv, strict=True)
    ]
    for c in idx:
        if c.size and not (np.all(np.isfinite(c)) and np.max(np.abs(c)) <= KEY_LIMIT):
            raise ValueError(f"Miller indices x subdivision must be finite and within +-{KEY_LIMIT}")
    H, K, L = (c.astype(np.int64) for c in idx)
    return pack_keys(H, K, L), H


def voxels(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique keys of key-sorted rows and each row's voxel index (0-based, in key order)."""
    if keys.size == 0:
        return keys[:0], np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    ih = np.cumsum(np.concatenate(([False], keys[1:] != keys[:-1]))).astype(np.int64)
    return keys[starts], ih


def scaled_rows(intensity, sigma, scale=None, offset=None):
    """mdx2's ``ScaledData``: the mask of unusable rows and the scaled intensity and error (float32).

    ``scale``/``offset`` default to ones/zeros of the intensity's dtype (mdx2's ``np.ones_like``);
    given ones are cast to that dtype first (mdx2 assigns them into that array).
    """
    intensity = np.asarray(intensity)
    sigma = np.asarray(sigma)
    scale = np.ones_like(intensity) if scale is None else np.asarray(scale).astype(intensity.dtype)
    offset = np.zeros_like(intensity) if offset is None else np.asarray(offset).astype(intensity.dtype)
    mask = np.isnan(intensity) | np.isnan(sigma) | (sigma == 0) | np.isinf(sigma)
    with np.errstate(all="ignore"):
        I_s = intensity / scale - offset
        sigma_s = sigma / scale
    return mask, I_s, sigma_s, scale, offset


@dataclass(frozen=True)
class BatchModels:
    """The scaling models applied to one input table (mdx2's batch); None = not applied."""

    scaling: object = None
    absorption: object = None
    detector: object = None
    offset: object = None

    @property
    def empty(self) -> bool:
        return all(m is None for m in (self.scaling, self.absorption, self.detector, self.offset))


def _interp(value, like: np.ndarray):
    # mdx2's InterpLin*.interp writes into np.zeros_like(x): the values take the coordinates' dtype
    return np.asarray(value).astype(like.dtype, copy=False)


def batch_scale_offset(models: BatchModels | None, rows: dict, dtype) -> tuple[np.ndarray, np.ndarray]:
    """mdx2's ``CombinedModelRefiner.calc_scale_offset`` for rows of one batch, cast to ``dtype``.

    ``scale = 1 * (a * b * d)``, ``offset = 0 + c / b`` with a absorption(ix, iy, phi), b scaling(phi),
    c offset(s, phi), d detector(ix, iy), each model's values in the coordinates' dtype (float32) and an
    absent model the Python number 1.0 (0.0 for the offset); mdx2 stores both in float32 arrays.
    """
    n = len(rows["intensity"])
    if models is None or models.empty:
        return np.ones(n, dtype), np.zeros(n, dtype)
    phi, ix, iy, s = (np.asarray(rows[c]) for c in ("phi", "ix", "iy", "s"))
    a = 1.0 if models.absorption is None else _interp(models.absorption.interp(ix, iy, phi), ix)
    b = 1.0 if models.scaling is None else _interp(models.scaling.interp(phi), phi)
    c = 0.0 if models.offset is None else _interp(models.offset.interp(s, phi), s)
    d = 1.0 if models.detector is None else _interp(models.detector.interp(ix, iy), ix)
    scale = np.ones(n, dtype=np.float64)
    offset = np.zeros_like(scale)
    with np.errstate(all="ignore"):
        scale *= a * b * d
        offset += c / b
    return scale.astype(dtype), offset.astype(dtype)


def inversion_ops(laue_ops) -> np.ndarray:
    """Which Laue operators have determinant < 0 (mdx2's Friedel split puts their rows in group 1)."""
    return np.array([np.linalg.det(o) for o in laue_ops]) < 0


@dataclass
class MergeStats:
    """Per-voxel sums of one merge: ``Im``/``sigmam`` are masked arrays as mdx2's ``merge()`` returns."""

    Im: np.ma.MaskedArray
    sigmam: np.ma.MaskedArray
    counts: np.ndarray

    def columns(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {
            f"{prefix}intensity": self.Im.filled(fill_value=np.nan).astype(np.float32),
            f"{prefix}intensity_error": self.sigmam.filled(fill_value=np.nan).astype(np.float32),
            f"{prefix}count": self.counts.astype(np.int32),
        }


def _merge(ih, n, I_s, sigma_s, mask) -> MergeStats:
    """``ScaledData.merge`` with voxel indices ``ih`` (rows of a voxel in table order)."""
    keep = ~mask
    with np.errstate(all="ignore"):
        w = 1 / sigma_s[keep] ** 2
        Iw = I_s[keep] * w
    ind = ih[keep]
    counts = np.bincount(ind, minlength=n)
    wm = np.bincount(ind, weights=w, minlength=n)
    Im = np.bincount(ind, weights=Iw, minlength=n)
    wm = np.ma.masked_where(counts == 0, wm, copy=False)
    Im = np.ma.masked_where(counts == 0, Im, copy=False)
    with np.errstate(all="ignore"):
        Im = Im / wm
        sigmam = 1 / np.sqrt(wm)
    return MergeStats(Im, sigmam, counts)


def _mask_outliers(ih, Im, nsigma, intensity, sigma, scale, offset, mask) -> int:
    """``ScaledData.mask_outliers``: mask rows whose residual exceeds ``nsigma`` (in place)."""
    with np.errstate(all="ignore"):
        resid = (scale * (Im[ih] + offset) - intensity) / sigma
        isoutlier = (resid > nsigma) & ~mask
    mask[isoutlier] = True
    return int(np.ma.filled(isoutlier.sum(), 0))  # the count mdx2 logs (unmasked outliers)


@dataclass
class PartitionMerge:
    """A merged partition: unique keys, the rows' voxel index and final mask, and the columns."""

    keys: np.ndarray
    ih: np.ndarray
    mask: np.ndarray
    I_s: np.ndarray
    sigma_s: np.ndarray
    columns: dict[str, np.ndarray]
    outliers: int


def merge_partition(
    keys, intensity, sigma, scale=None, offset=None, outlier: float | None = None
) -> PartitionMerge:
    """Merge the rows of whole voxels, sorted by key with each voxel's rows in table order.

    Returns mdx2's ``intensity``, ``intensity_error`` and ``count`` columns per unique key, after
    outlier rejection at ``outlier`` sigma if given (then merged again, as mdx2).
    """
    ukeys, ih = voxels(keys)
    n = len(ukeys)
    mask, I_s, sigma_s, scale, offset = scaled_rows(intensity, sigma, scale, offset)
    stats = _merge(ih, n, I_s, sigma_s, mask)
    nout = 0
    if outlier is not None:
        nout = _mask_outliers(
            ih, stats.Im, outlier, np.asarray(intensity), np.asarray(sigma), scale, offset, mask
        )
        stats = _merge(ih, n, I_s, sigma_s, mask)
    return PartitionMerge(ukeys, ih, mask, I_s, sigma_s, stats.columns(), nout)


def group_merge(part: PartitionMerge, in_group: np.ndarray, j: int) -> dict[str, np.ndarray]:
    """mdx2's per-group merge (``G.mask = G.mask | ~g``): columns ``group_<j>_*``."""
    stats = _merge(part.ih, len(part.keys), part.I_s, part.sigma_s, part.mask | ~in_group)
    return stats.columns(f"group_{j}_")


def split_weights(part: PartitionMerge, split: str) -> np.ndarray:
    """The weights ``wrs`` splits by: ``1/sigma**2`` of unmasked rows (0 for masked), or ones (int64).

    mdx2 computes ``1 / MR.data.sigma**2`` on a masked array: ``numpy.ma.power`` takes the exponent
    as a 0-d int64 array, which promotes float32 to float64, so these weights (and the running sum
    over them) are float64, unlike the float32 weights of the merge itself.
    """
    if split == "randomHalf":
        return np.ones_like(part.ih)
    with np.errstate(all="ignore"):
        w = 1 / np.ma.MaskedArray(part.sigma_s, mask=part.mask.copy()) ** 2
    return w.filled(fill_value=0)


def split_order(ih, jitter) -> np.ndarray:
    """The order ``wrs`` visits a partition's rows in: by voxel, then by jitter.

    mdx2 sorts the float64 keys ``voxel + jitter``; rounding is monotonic, so this is the same order
    except where two jitters of one voxel round to the same key (mdx2's unstable sort then orders
    them arbitrarily; here the smaller jitter comes first). Needs no global voxel offset, so each
    partition sorts on its own.
    """
    return np.lexsort((jitter, ih))


def running_sum(sorted_w, carry):
    """The global running sum after a partition's sorted weights, from ``carry`` before it (in order)."""
    if len(sorted_w) == 0:
        return carry
    return np.cumsum(np.concatenate((np.asarray([carry], dtype=sorted_w.dtype), sorted_w)))[-1]


def split_from_order(ih, order, sorted_w, flips, carry) -> np.ndarray:
    """``wrs``'s group 0 of a partition, given :func:`split_order`, the weights in that order, the
    partition's flips and the global running sum before it."""
    n_rows = len(ih)
    isgrp1 = np.zeros(n_rows, dtype=bool)
    if n_rows == 0:
        return isgrp1
    sorted_ih = ih[order]
    starts = np.flatnonzero(np.concatenate(([True], np.diff(sorted_ih) != 0)))
    stops = np.concatenate((starts[1:], [n_rows]))
    cs = np.cumsum(np.concatenate((np.asarray([carry], dtype=sorted_w.dtype), sorted_w)))[1:]
    dcs = cs - cs[starts][sorted_ih]
    isincl = dcs > 0.5 * dcs[stops - 1][sorted_ih]
    isincl = np.logical_xor(np.asarray(flips)[sorted_ih], isincl)
    isgrp1[order[isincl]] = True
    return isgrp1


def random_split(ih, jitter, w, flips, carry):
    """mdx2's ``wrs`` on a partition holding whole voxels (``ih`` local, from 0).

    ``jitter``: the rows' ``random_sample() * 0.2``; ``flips``: ``randint(2)`` of the partition's
    voxels; ``carry``: the global running sum of sorted weights before this partition (``w.dtype``).
    Returns (is in group 0, running sum after the partition).
    """
    order = split_order(ih, jitter)
    sorted_w = w[order]
    return split_from_order(ih, order, sorted_w, flips, carry), running_sum(sorted_w, carry)


def wrs_global(index_map, w, jitter, flips):
    """mdx2's ``wrs`` verbatim on a whole table, with its random draws given (the split's oracle)."""
    sort_order = np.argsort(index_map + jitter)
    sorted_ind_map = index_map[sort_order]
    sorted_w = w[sort_order]
    breakpoints = [0, *list(np.nonzero(np.diff(sorted_ind_map))[0] + 1), len(sorted_ind_map)]
    starts = np.array(breakpoints[:-1])
    stops = np.array(breakpoints[1:])
    isgrp1 = np.full_like(index_map, False, dtype=bool)
    cs = np.cumsum(sorted_w)
    dcs = cs - cs[starts][sorted_ind_map]
    isincl = dcs > 0.5 * dcs[stops - 1][sorted_ind_map]
    isincl = np.logical_xor(flips[sorted_ind_map], isincl)
    isgrp1[sort_order[isincl]] = True
    return isgrp1


random_split_oracle = wrs_global


class RandomStream:
    """numpy's legacy global stream as mdx2's ``wrs`` draws it, seeked to any row or voxel.

    ``np.random.seed(seed)`` then ``random_sample(n_rows)`` (2 words per row) and
    ``randint(2, size=n_voxels)`` (1 word per voxel): :meth:`jitter_states` gives the generator state
    at given row offsets (by drawing and discarding, in bounded blocks) and :meth:`flip_states` the
    states at given voxel offsets after all rows.
    """

    BLOCK = 1 << 20

    def __init__(self, seed: int):
        self.seed = int(seed)

    def _skip(self, rs: np.random.RandomState, n: int, kind: str) -> None:
        while n > 0:
            m = min(n, self.BLOCK)
            if kind == "rows":
                rs.random_sample(m)
            else:
                rs.randint(2, size=m)
            n -= m

    def jitter_states(self, row_offsets) -> tuple[list, object]:
        """States at the (increasing) row offsets, and the state after the last offset."""
        rs = np.random.RandomState(self.seed)
        states, at = [], 0
        for off in row_offsets:
            self._skip(rs, int(off) - at, "rows")
            at = int(off)
            states.append(rs.get_state())
        return states, rs

    def flip_states(self, n_rows: int, voxel_offsets) -> list:
        rs = np.random.RandomState(self.seed)
        self._skip(rs, int(n_rows), "rows")
        states, at = [], 0
        for off in voxel_offsets:
            self._skip(rs, int(off) - at, "voxels")
            at = int(off)
            states.append(rs.get_state())
        return states

    @staticmethod
    def jitter(state, n: int) -> np.ndarray:
        rs = np.random.RandomState()
        rs.set_state(state)
        return rs.random_sample(n) * 0.2

    @staticmethod
    def flips(state, n: int) -> np.ndarray:
        rs = np.random.RandomState()
        rs.set_state(state)
        return rs.randint(2, size=n)


# ---------------------------------------------------------------------------------------------------
# slow oracle: one voxel at a time, plain loops


def _ratio(num: float, den: float) -> float:
    """``numpy.ma`` true division of scalars as mdx2's masked arrays do it (NaN where masked)."""
    tiny = np.finfo(np.float64).tiny
    if not abs(den) > abs(num) * tiny and not (np.isnan(num) or np.isnan(den)):
        return np.nan
    with np.errstate(all="ignore"):
        r = np.float64(num) / np.float64(den)
    return float(r) if np.isfinite(r) else np.nan


def merge_partition_oracle(keys, intensity, sigma, scale=None, offset=None, outlier=None) -> dict:
    """The same as :func:`merge_partition` with loops per voxel and row (rows in any key order)."""
    keys = np.asarray(keys)
    n = len(keys)
    f32 = np.float32
    intensity = np.asarray(intensity, dtype=f32)
    sigma = np.asarray(sigma, dtype=f32)
    scale = np.ones(n, f32) if scale is None else np.asarray(scale).astype(f32)
    offset = np.zeros(n, f32) if offset is None else np.asarray(offset).astype(f32)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(int(keys[i]), []).append(i)
    out_keys = sorted(groups)
    bad = [
        bool(np.isnan(intensity[i]) or np.isnan(sigma[i]) or sigma[i] == 0 or np.isinf(sigma[i]))
        for i in range(n)
    ]

    def merge_one(rows):
        wsum = isum = 0.0
        count = 0
        for i in rows:
            if bad[i]:
                continue
            with np.errstate(all="ignore"):
                s = f32(sigma[i] / scale[i])
                w = f32(f32(1) / f32(s * s))
                iw = f32(f32(f32(intensity[i] / scale[i]) - offset[i]) * w)
            wsum += float(w)
            isum += float(iw)
            count += 1
        if count == 0:
            return np.nan, np.nan, 0
        im = _ratio(isum, wsum)
        with np.errstate(all="ignore"):
            root = np.sqrt(np.float64(wsum))
        err = _ratio(1.0, float(root)) if np.isfinite(root) and wsum >= 0 else np.nan
        return im, err, count

    result = {"keys": np.array(out_keys, dtype=np.int64), "intensity": [], "intensity_error": [], "count": []}
    for key in out_keys:
        rows = groups[key]
        im, err, count = merge_one(rows)
        if outlier is not None:
            for i in rows:
                if bad[i]:
                    continue
                with np.errstate(all="ignore"):
                    pred = float(scale[i]) * (im + float(offset[i]))
                    resid = (pred - float(intensity[i])) / float(sigma[i])
                # numpy.ma keeps a masked result's first operand as its data, and mdx2 indexes with
                # that data: a masked residual counts as True if its first operand is non-zero
                if np.isnan(im):  # a masked merged intensity: the residual's data is the row's scale
                    flag = bool(scale[i] != 0)
                elif np.isfinite(resid):
                    flag = resid > outlier
                else:
                    flag = bool(pred - float(intensity[i]) != 0)
                if flag:
                    bad[i] = True
            im, err, count = merge_one(rows)
        result["intensity"].append(im)
        result["intensity_error"].append(err)
        result["count"].append(count)
    return {
        "keys": result["keys"],
        "intensity": np.array(result["intensity"], dtype=np.float32),
        "intensity_error": np.array(result["intensity_error"], dtype=np.float32),
        "count": np.array(result["count"], dtype=np.int32),
    }


def keys_to_hkl(keys: np.ndarray, ndiv) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merged rows' h, k, l as mdx2 writes them: integer index / ndiv in float64."""
    H, K, L = unpack_keys(keys)
    return tuple(c / np.int64(n) for c, n in zip((H, K, L), ndiv, strict=True))
