"""Reintegrate: one storage chunk's voxel sums -> corrected, scaled rows in the asymmetric unit, and
their sums per ASU voxel, as ``mdx2.reintegrate`` (mdx2 1.0.5).

Per storage chunk, mdx2 bins the pixels by voxel (the same partial sums as ``integrate``: pixels,
counts, and sums of phi, iy, ix and exposure seconds), then per voxel row, in float64::

    h, k, l     = H / ndiv, ...                     phi, iy, ix = sums / pixels
    s           = |UB @ (h, k, l)|
    solid_angle = solid_angle * attenuation * polarization * efficiency    (at iy, ix)
    multiplicity      = pixels * d3s * prod(ndiv) / det(UB)
    scale             = seconds * solid_angle * a * b * d
    background_counts = seconds * (bg_rate + c * a * d * solid_angle)

with the models of scales.nxs ``b = scaling(phi)``, ``a = absorption(ix, iy, phi)``, ``d =
detector(ix, iy)``, ``c = offset(s, phi)`` (1, 1, 1, 0 when absent) and ``bg_rate`` the binned
background at (phi, iy, ix) (0 without one). Rows are mapped to the asymmetric unit and added into
float32 grids (uint32 for counts) with ``np.add.at``, chunk after chunk: each addition is
``float32(float64(sum) + value)``, in chunk order and, within a chunk, in (H, K, L) order of the
original voxel. Voxels outside the grid mdx2 allocates (the ASU images of the Miller grid's points,
with 0 included) are dropped, as ``accumulate(resize=False)`` drops them.

Grids are interpolated as ``scipy.ndimage.map_coordinates(order=1)`` does it, operation for
operation (see :func:`interp_scipy`), so values are bit-identical to mdx2's.

:func:`reintegrate_rows` does the per-chunk part, :func:`accumulate_sorted` the sums per ASU voxel,
:func:`finish_rows` mdx2's output columns. :func:`reintegrate_oracle` is the plain transcription
of mdx2 (numpy, scipy, a dense grid) the tests compare with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from pipeline.kernels.asu import asu_images
from pipeline.kernels.binning import PARTIAL_DTYPE
from pipeline.kernels.keys import pack_keys, unpack_keys
from pipeline.model import BackgroundGrid, CorrectionGrid
from pipeline.symmetry.expressions import MillerExpression

__all__ = [
    "REINTEGRATE_DTYPE",
    "ReintegrateModel",
    "accumulate_sorted",
    "asu_grid_range",
    "finish_rows",
    "interp_scipy",
    "reintegrate_oracle",
    "reintegrate_rows",
]

#: One row per (storage chunk, original voxel), keyed by its ASU voxel: mdx2's four grid columns.
REINTEGRATE_DTYPE = np.dtype(
    [
        ("key", "<i8"),
        ("counts", "<f8"),
        ("background_counts", "<f8"),
        ("scale", "<f8"),
        ("multiplicity", "<f8"),
    ]
)
SUMS = ("counts", "background_counts", "scale", "multiplicity")


@dataclass(frozen=True, eq=False)
class ReintegrateModel:
    """What :func:`reintegrate_rows` needs besides the rows (small; shipped once to each worker).

    ``scales``: an object with ``scaling``, ``absorption``, ``detector``, ``offset`` models (each
    with mdx2's ``interp``, or None), or None. ``asu_range``: ((Hlo, Hhi), (Klo, Khi), (Llo, Lhi)),
    the ASU grid mdx2 allocates (:func:`asu_grid_range`).
    """

    ub_matrix: np.ndarray
    ops: np.ndarray | None  # Laue operators (N, 3, 3); None = P1
    asu: MillerExpression | None
    corrections: CorrectionGrid
    background: BackgroundGrid | None
    scales: object | None
    ndiv: tuple[int, int, int]
    asu_range: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def asu_grid_range(h, k, l, ndiv, ops, asu) -> tuple[tuple[int, int], ...]:
    """mdx2's output grid: ``round(h * ndiv)`` of every Miller grid point, mapped to the ASU; per
    axis ``(min(lowest, 0), highest)``."""
    hkl = np.empty((3, np.size(h)), dtype=np.int32)
    for i, (a, n) in enumerate(zip((h, k, l), ndiv, strict=True)):
        hkl[i] = np.round(np.ravel(a) * n)
    image, _ = asu_images(hkl, ops, asu)
    return tuple((min(int(image[i].min()), 0), int(image[i].max())) for i in range(3))


# -- interpolation, as scipy.ndimage.map_coordinates(order=1, mode="constant") -----------------------


def _fractions(x: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """mdx2's fractional grid coordinate ``f = np.interp(x, axis, arange(n))`` (within [0, n-1])."""
    n = np.size(axis)
    return np.interp(np.asarray(x, dtype=np.float64), np.asarray(axis, dtype=np.float64), np.arange(n))


@numba.njit(nogil=True, cache=True, inline="always")
def _cell(f, n):
    """scipy's order-1 spline cell: ``start = floor(f)``, ``w0 = 1 - (f - start)``, ``w1 = 1 - w0``
    (the last weight is 1 minus the others, not ``f - start``); at ``f == n - 1`` the second index
    lies past the grid and scipy mirrors it to ``n - 2`` (weight 0, but a NaN there gives NaN)."""
    start = np.floor(f)
    w0 = 1.0 - (f - start)
    w1 = 1.0 - w0
    i0 = np.int64(start)
    i1 = i0 + 1
    if i1 >= n:
        i1 = 0 if n == 1 else n - 2
    return i0, i1, w0, w1


@numba.njit(nogil=True, cache=True)
def _interp2(fy, fx, ny, nx, grids, out):
    """Each grid of ``grids`` (k, ny * nx) at the points: corners in C order, ``(v * wy) * wx``
    added to 0.0 in turn, as map_coordinates."""
    for i in range(fy.size):
        y0, y1, wy0, wy1 = _cell(fy[i], ny)
        x0, x1, wx0, wx1 = _cell(fx[i], nx)
        for g in range(grids.shape[0]):
            t = 0.0
            t += grids[g, y0 * nx + x0] * wy0 * wx0
            t += grids[g, y0 * nx + x1] * wy0 * wx1
            t += grids[g, y1 * nx + x0] * wy1 * wx0
            t += grids[g, y1 * nx + x1] * wy1 * wx1
            out[g, i] = t


@numba.njit(nogil=True, cache=True)
def _interp3(fz, fy, fx, nz, ny, nx, grid, out):
    """``grid`` (nz * ny * nx) at the points: corners in C order, ``((v * wz) * wy) * wx``."""
    for i in range(fz.size):
        z0, z1, wz0, wz1 = _cell(fz[i], nz)
        y0, y1, wy0, wy1 = _cell(fy[i], ny)
        x0, x1, wx0, wx1 = _cell(fx[i], nx)
        t = 0.0
        for zc in range(2):
            z = z0 if zc == 0 else z1
            wz = wz0 if zc == 0 else wz1
            for yc in range(2):
                y = y0 if yc == 0 else y1
                wy = wy0 if yc == 0 else wy1
                base = (z * ny + y) * nx
                t += grid[base + x0] * wz * wy * wx0
                t += grid[base + x1] * wz * wy * wx1
        out[i] = t


def interp_scipy(values: np.ndarray, axes, points) -> np.ndarray:
    """Linear interpolation of a 2-D grid, a stack of 2-D grids (k, ny, nx) or a 3-D grid (with
    ``len(axes) == 3``), float64, at ``points`` (one array per axis), bit for bit as mdx2's
    ``interp2``/``interp3`` (``map_coordinates(order=1)``): the corners in C order, each
    ``value * w_axis0 * w_axis1 [* w_axis2]`` left to right, added to 0.0 in turn."""
    values = np.asarray(values, dtype=np.float64)
    f = [_fractions(x, a) for x, a in zip(points, axes, strict=True)]
    shape = tuple(np.size(a) for a in axes)
    if len(axes) == 3:
        if values.shape != shape:
            raise ValueError(f"grid of shape {values.shape}, expected {shape}")
        out = np.empty(f[0].size)
        _interp3(*f, *shape, np.ascontiguousarray(values).ravel(), out)
        return out
    if values.shape[-2:] != shape or values.ndim not in (2, 3):
        raise ValueError(f"grid(s) of shape {values.shape}, expected {shape} or (k, *{shape})")
    stack = np.ascontiguousarray(values.reshape(-1, shape[0] * shape[1]))
    out = np.empty((stack.shape[0], f[0].size))
    _interp2(*f, *shape, stack, out)
    return out[0] if values.ndim == 2 else out


# -- one chunk ----------------------------------------------------------------------------------------


def _row_values(rows: np.ndarray, model: ReintegrateModel) -> dict[str, np.ndarray]:
    """mdx2's ``calc_corrections`` on one chunk's binned rows (sorted by key): float64 columns."""
    H, K, L = unpack_keys(rows["key"])
    ndiv = model.ndiv
    pixels = rows["pixels"]
    phi = rows["phi"] / pixels
    iy = rows["iy"] / pixels
    ix = rows["ix"] / pixels
    seconds = rows["seconds"]
    ub = np.asarray(model.ub_matrix, dtype=np.float64)
    grid = model.corrections
    names = ("solid_angle", "attenuation", "polarization", "efficiency", "d3s")
    factors = interp_scipy(np.stack([grid[n] for n in names]), (grid.iy, grid.ix), (iy, ix))
    sa = factors[0]
    sa *= factors[1]
    sa *= factors[2]
    sa *= factors[3]
    d3s = factors[4]
    multiplicity = pixels * d3s * np.prod(ndiv) / np.linalg.det(ub)
    scales = model.scales
    scaling = getattr(scales, "scaling", None)
    absorption = getattr(scales, "absorption", None)
    detector = getattr(scales, "detector", None)
    offset = getattr(scales, "offset", None)
    b = scaling.interp(phi) if scaling else 1.0
    a = absorption.interp(ix, iy, phi) if absorption else 1.0
    d = detector.interp(ix, iy) if detector else 1.0
    if offset:
        h, k, l = H / ndiv[0], K / ndiv[1], L / ndiv[2]
        s = ub @ np.stack((h, k, l))
        c = offset.interp(np.sqrt(np.sum(s * s, axis=0)), phi)
    else:
        c = 0.0
    bkg = model.background
    bg_rate = interp_scipy(bkg.rate, (bkg.phi, bkg.iy, bkg.ix), (phi, iy, ix)) if bkg is not None else 0.0
    return {
        "counts": rows["counts"].astype(np.float64),
        "background_counts": seconds * (bg_rate + c * a * d * sa),
        "scale": seconds * sa * a * b * d,
        "multiplicity": multiplicity,
    }


def reintegrate_rows(rows: np.ndarray, model: ReintegrateModel) -> np.ndarray:
    """One storage chunk's partial rows (``PARTIAL_DTYPE``, any order) -> ``REINTEGRATE_DTYPE`` rows
    keyed by their ASU voxel, in the order mdx2 adds them (original voxel order), without the rows
    outside mdx2's grid."""
    if rows.dtype != PARTIAL_DTYPE:
        raise TypeError(f"expected partial rows of dtype {PARTIAL_DTYPE}, got {rows.dtype}")
    rows = rows[np.argsort(rows["key"], kind="stable")]
    values = _row_values(rows, model) if rows.size else dict.fromkeys(SUMS, np.zeros(0))
    hkl = np.empty((3, rows.size), dtype=np.int32)
    for i, a in enumerate(unpack_keys(rows["key"])):
        hkl[i] = a
    image, _ = asu_images(hkl, model.ops, model.asu)
    inside = np.ones(rows.size, dtype=bool)
    for i, (lo, hi) in enumerate(model.asu_range):
        inside &= (image[i] >= lo) & (image[i] <= hi)
    out = np.empty(int(inside.sum()), dtype=REINTEGRATE_DTYPE)
    out["key"] = pack_keys(image[0][inside], image[1][inside], image[2][inside])
    for name in SUMS:
        out[name] = values[name][inside]
    return out


# -- sums per ASU voxel ------------------------------------------------------------------------------


@numba.njit(nogil=True, cache=True)
def _accumulate(order, key_, counts_, bkg_, scale_, mult_):
    size = order.size
    keys = np.empty(size, dtype=np.int64)
    counts = np.empty(size, dtype=np.uint32)
    sums = np.empty((size, 3), dtype=np.float32)
    total = 0
    a = 0
    while a < size:
        key = key_[order[a]]
        c = np.uint32(0)
        s0 = np.float32(0.0)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        b = a
        while b < size and key_[order[b]] == key:
            r = order[b]
            c = np.uint32(np.float64(c) + counts_[r])
            # np.add.at(float32 grid, index, float64 values): float32(float64(sum) + value)
            s0 = np.float32(np.float64(s0) + bkg_[r])
            s1 = np.float32(np.float64(s1) + scale_[r])
            s2 = np.float32(np.float64(s2) + mult_[r])
            b += 1
        keys[total] = key
        counts[total] = c
        sums[total, 0] = s0
        sums[total, 1] = s1
        sums[total, 2] = s2
        total += 1
        a = b
    return keys[:total], counts[:total], sums[:total]


def accumulate_sorted(rows: np.ndarray) -> dict[str, np.ndarray]:
    """Sum ``REINTEGRATE_DTYPE`` rows per key as mdx2's grid does: a stable sort by key keeps each
    voxel's rows in the order given (chunk order), then each voxel's sums are formed in that order
    (float32 accumulators, float64 additions; counts uint32). Returns key and the four sums, by key."""
    if rows.dtype != REINTEGRATE_DTYPE:
        raise TypeError(f"expected rows of dtype {REINTEGRATE_DTYPE}, got {rows.dtype}")
    order = np.argsort(rows["key"], kind="stable")
    keys, counts, sums = _accumulate(
        order, rows["key"], rows["counts"], rows["background_counts"], rows["scale"], rows["multiplicity"]
    )
    return {
        "key": keys,
        "counts": counts,
        "background_counts": sums[:, 0].copy(),
        "scale": sums[:, 1].copy(),
        "multiplicity": sums[:, 2].copy(),
    }


def finish_rows(
    sums: dict[str, np.ndarray], ndiv, asu_range, output: str = "counts"
) -> dict[str, np.ndarray]:
    """mdx2's output rows from the sums per ASU voxel: voxels whose four sums are all 0 dropped (as
    ``to_table(sparse=True)``), ``h = (H - lo) / ndiv + lo / ndiv`` (the grid's axes) in float32, and
    with ``output="intensity"``: ``intensity = (counts - background_counts) / scale``,
    ``intensity_error = sqrt(counts) / scale`` (float32) in place of counts, background and scale."""
    keep = ~(
        (sums["counts"] == 0)
        & (sums["background_counts"] == 0)
        & (sums["scale"] == 0)
        & (sums["multiplicity"] == 0)
    )
    out = {}
    for name, index, n, (lo, _) in zip("hkl", unpack_keys(sums["key"][keep]), ndiv, asu_range, strict=True):
        out[name] = ((index - lo) / n + np.int64(lo) / n).astype(np.float32)
    for name in SUMS:
        out[name] = sums[name][keep]
    if output == "intensity":
        counts, bkg, scale = out.pop("counts"), out.pop("background_counts"), out.pop("scale")
        with np.errstate(divide="ignore", invalid="ignore"):
            out["intensity"] = ((counts - bkg) / scale).astype(np.float32)
            out["intensity_error"] = (np.sqrt(counts) / scale).astype(np.float32)
    elif output != "counts":
        raise ValueError(f"output must be 'counts' or 'intensity', got {output!r}")
    return out


# -- the oracle ---------------------------------------------------------------------------------------


def reintegrate_oracle(chunks: list[np.ndarray], model: ReintegrateModel, output: str = "counts"):
    """mdx2.reintegrate transcribed: each chunk's binned rows (``PARTIAL_DTYPE``) corrected with
    scipy's ``map_coordinates``, mapped to the ASU and added with ``np.add.at`` into dense grids,
    chunk after chunk; then the non-zero cells in C order. Small inputs only (tests)."""
    from scipy.ndimage import map_coordinates

    def interp(values, axes, points):
        coords = [np.interp(p, a, np.arange(a.size)) for p, a in zip(points, axes, strict=True)]
        return map_coordinates(values, np.stack(coords), order=1)

    (hlo, hhi), (klo, khi), (llo, lhi) = model.asu_range
    shape = (hhi - hlo + 1, khi - klo + 1, lhi - llo + 1)
    grids = {name: np.zeros(shape, dtype=np.uint32 if name == "counts" else np.float32) for name in SUMS}
    grid = model.corrections
    for rows in chunks:
        rows = rows[np.argsort(rows["key"], kind="stable")]
        H, K, L = unpack_keys(rows["key"])
        pixels = rows["pixels"]
        phi, iy, ix = rows["phi"] / pixels, rows["iy"] / pixels, rows["ix"] / pixels
        sa = interp(grid["solid_angle"], (grid.iy, grid.ix), (iy, ix))
        for name in ("attenuation", "polarization", "efficiency"):
            sa *= interp(grid[name], (grid.iy, grid.ix), (iy, ix))
        d3s = interp(grid["d3s"], (grid.iy, grid.ix), (iy, ix))
        multiplicity = pixels * d3s * np.prod(model.ndiv) / np.linalg.det(model.ub_matrix)
        scales = model.scales
        models = {n: getattr(scales, n, None) for n in ("scaling", "absorption", "detector", "offset")}
        b = models["scaling"].interp(phi) if models["scaling"] else 1.0
        a = models["absorption"].interp(ix, iy, phi) if models["absorption"] else 1.0
        d = models["detector"].interp(ix, iy) if models["detector"] else 1.0
        if models["offset"]:
            s = model.ub_matrix @ np.stack((H / model.ndiv[0], K / model.ndiv[1], L / model.ndiv[2]))
            c = models["offset"].interp(np.sqrt(np.sum(s * s, axis=0)), phi)
        else:
            c = 0.0
        bkg = model.background
        bg_rate = interp(bkg.rate, (bkg.phi, bkg.iy, bkg.ix), (phi, iy, ix)) if bkg is not None else 0.0
        values = {
            "counts": rows["counts"].astype(np.float64),
            "background_counts": rows["seconds"] * (bg_rate + c * a * d * sa),
            "scale": rows["seconds"] * sa * a * b * d,
            "multiplicity": multiplicity,
        }
        hkl = np.stack((H, K, L)).astype(np.int32)
        image, _ = asu_images(hkl, model.ops, model.asu)
        index = (image[0] - hlo, image[1] - klo, image[2] - llo)
        inside = np.all([(i >= 0) & (i < n) for i, n in zip(index, shape, strict=True)], axis=0)
        index = tuple(i[inside] for i in index)
        for name in SUMS:
            np.add.at(grids[name], index, values[name][inside])
    nonzero = ~np.all([g == 0 for g in grids.values()], axis=0)
    cells = np.nonzero(nonzero)
    keys = pack_keys(cells[0] + hlo, cells[1] + klo, cells[2] + llo)
    sums = {"key": keys, **{name: g[cells] for name, g in grids.items()}}
    return finish_rows(sums, model.ndiv, model.asu_range, output)
