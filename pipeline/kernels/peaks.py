"""Peak search and peak masks as mdx2's ``find_peaks`` / ``mask_peaks``, in numpy (no scipy).

Everything here repeats mdx2's floating-point operations in mdx2's order, so results are the same
bits (see docs/PEAKS.md):

* :func:`threshold_pixels` -- ``Peaks.where(ims.data_masked > count_threshold, ...)`` on one storage
  chunk: pixels above the threshold, masked pixels (-1) excluded, in C order.
* :func:`interp_points` -- ``MillerIndex.interpolate`` at points, i.e. ``scipy.ndimage.map_coordinates``
  with ``order=1`` on fractional grid coordinates ``np.interp(x, axis, arange(n))``: spline weights
  ``w0 = 1 - t``, ``w1 = 1 - w0`` (``t = c - floor(c)``), the eight corners summed in C order, each as
  ``((v * w_phi) * w_y) * w_x`` added to a running total that starts at 0.0.
* :func:`fit_gaussian` -- ``GaussianPeak.fit_to_points``: mean, SVD of the centred points,
  ``sigma = V diag(s / sqrt(N))``, one round of outlier rejection at ``sigma_cutoff``, refit.
* :func:`peak_mask_block` -- one chunk of ``mask_peaks``: ``round`` of the regridded Miller indices,
  allowed reflections, and the quadratic form ``|inv(sigma) (r - r0)|^2 < cutoff^2`` evaluated with
  the same numpy expression on the same array shapes as mdx2 (the (3, 3) @ (3, N) product goes to
  BLAS in both).
* :func:`peak_mask_slab` -- the same mask, fast: one numba pass computes each pixel's Miller indices
  (the last interpolation step, the same operations as ``interpolate.miller_indices_dense``) and
  the quadratic form with a bound on its rounding error. Pixels clearly outside the contour are
  done; only the rest (a small fraction: the pixels near allowed reflections) go through
  :func:`peak_mask_block`'s numpy expressions (reflection conditions, and the quadratic form itself
  for pixels within ``band`` of the contour), so the mask is the same bits as mdx2's.

Oracles (``*_oracle``) compute the same quantities point by point in plain Python loops; the tests
compare them with the fast versions across uneven chunkings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from pipeline.kernels.interpolate import MillerBlock

__all__ = [
    "GaussianPeak",
    "fit_gaussian",
    "fit_gaussian_oracle",
    "grid_coordinate",
    "interp_points",
    "interp_points_oracle",
    "peak_mask_block",
    "peak_mask_block_oracle",
    "peak_mask_slab",
    "quadform",
    "threshold_pixels",
    "threshold_pixels_oracle",
]


@dataclass(frozen=True, eq=False)
class GaussianPeak:
    """mdx2's ``GaussianPeak``: centre ``r0`` (3,) and ``sigma`` (3, 3) in fractional Miller units."""

    r0: np.ndarray
    sigma: np.ndarray


# --- threshold -------------------------------------------------------------------------------------


def threshold_pixels(block: np.ndarray, count_threshold: float, masked_value: int = -1) -> np.ndarray:
    """Indices (n, 3) int64, C order, of the pixels of ``block`` above ``count_threshold`` that are not
    ``masked_value`` (mdx2's ``np.argwhere(np.ma.masked_equal(data, -1) > threshold)``)."""
    hot = block > count_threshold
    if count_threshold < masked_value:  # only then can a masked pixel pass the comparison
        hot &= block != masked_value
    return np.argwhere(hot).astype(np.int64, copy=False)


def threshold_pixels_oracle(block: np.ndarray, count_threshold: float, masked_value: int = -1) -> np.ndarray:
    out = []
    nphi, ny, nx = block.shape
    for i in range(nphi):
        for j in range(ny):
            for k in range(nx):
                v = block[i, j, k]
                if v != masked_value and float(v) > count_threshold:
                    out.append((i, j, k))
    return np.array(out, dtype=np.int64).reshape(-1, 3)


# --- interpolation at points (map_coordinates, order 1) -------------------------------------------


def grid_coordinate(x: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """mdx2's ``_fraction``: ``np.interp(x, axis, arange(n))`` (clamped to [0, n - 1])."""
    return np.interp(np.asarray(x).astype(float), np.asarray(axis).astype(float), np.arange(axis.size))


def interp_points(axes, values: np.ndarray, phi, iy, ix) -> np.ndarray:
    """Trilinear interpolation of ``values`` (nphi, ny, nx[, ncol]) at points, as mdx2's ``interp3``.

    Returns (npoints,) or (npoints, ncol). Bit-identical to ``scipy.ndimage.map_coordinates(v,
    coords, order=1)``: each column through :func:`pipeline.kernels.reintegrate.interp_scipy`, the one
    implementation of that arithmetic.
    """
    from pipeline.kernels.reintegrate import interp_scipy

    values = np.asarray(values, dtype=np.float64)
    points = (phi, iy, ix)
    if values.ndim == 3:
        return interp_scipy(values, axes, points)
    columns = [interp_scipy(values[..., j], axes, points) for j in range(values.shape[3])]
    return np.stack(columns, axis=1)


def interp_points_oracle(axes, values: np.ndarray, phi, iy, ix) -> np.ndarray:
    """Point by point, in Python floats (same operations)."""
    import math

    values = np.asarray(values, dtype=np.float64)
    coords = [grid_coordinate(c, a) for c, a in zip((phi, iy, ix), axes, strict=True)]
    n = values.shape[:3]
    extra = values.shape[3:]
    out = np.zeros((coords[0].size, *extra))
    for p in range(coords[0].size):
        idx, wts = [], []
        for d in range(3):
            c = float(coords[d][p])
            fl = math.floor(c)
            w0 = 1.0 - (c - fl)
            idx.append((fl, min(fl + 1, n[d] - 1)))
            wts.append((w0, 1.0 - w0))
        acc = np.zeros(extra)
        for a in (0, 1):
            for b in (0, 1):
                for c in (0, 1):
                    v = values[idx[0][a], idx[1][b], idx[2][c]]
                    acc = acc + ((v * wts[0][a]) * wts[1][b]) * wts[2][c]
        out[p] = acc
    return out


# --- Gaussian model ---------------------------------------------------------------------------------


def _fit(x, y, z) -> GaussianPeak:
    r = np.stack((x, y, z)).T
    r0 = np.mean(r, axis=0)
    u, s, vh = np.linalg.svd(r - r0, full_matrices=False)
    v = vh.T
    sigma = v @ np.diag(s / np.sqrt(u.shape[0]))
    return GaussianPeak(r0, sigma)


def quadform(gp: GaussianPeak, x, y, z) -> np.ndarray:
    """mdx2's ``GaussianPeak.quadform_at_points``: ``|inv(sigma) @ (r - r0)|^2``, shape of ``x``."""
    r = np.stack((x, y, z)).reshape(3, -1)
    d = np.linalg.inv(gp.sigma) @ (r - gp.r0[:, np.newaxis])
    return np.sum(d * d, axis=0).reshape(np.shape(x))


def fit_gaussian(dh, dk, dl, sigma_cutoff: float) -> tuple[GaussianPeak, np.ndarray]:
    """Fit, reject points with quadratic form > ``sigma_cutoff**2``, refit: (model, is_outlier)."""
    gp = _fit(dh, dk, dl)
    is_outlier = quadform(gp, dh, dk, dl) > sigma_cutoff**2
    keep = ~is_outlier
    return _fit(dh[keep], dk[keep], dl[keep]), is_outlier


def fit_gaussian_oracle(dh, dk, dl, sigma_cutoff: float) -> tuple[GaussianPeak, np.ndarray]:
    """The same model from the covariance matrix by eigen-decomposition (agrees to rounding)."""

    def fit(x, y, z):
        r = np.stack((x, y, z), axis=1)
        r0 = r.sum(axis=0) / len(r)
        c = (r - r0).T @ (r - r0) / len(r)
        evals, evecs = np.linalg.eigh(c)
        return r0, evecs @ np.diag(np.sqrt(np.clip(evals, 0, None)))

    r0, sigma = fit(dh, dk, dl)
    sinv = np.linalg.inv(sigma)
    d2 = np.array([float(np.sum((sinv @ (np.array(p) - r0)) ** 2)) for p in zip(dh, dk, dl, strict=True)])
    is_outlier = d2 > sigma_cutoff**2
    r0, sigma = fit(dh[~is_outlier], dk[~is_outlier], dl[~is_outlier])
    return GaussianPeak(r0, sigma), is_outlier


# --- mask ------------------------------------------------------------------------------------------


def peak_mask_block(hkl: np.ndarray, gp: GaussianPeak, sigma_cutoff: float, is_reflection) -> np.ndarray:
    """One chunk of mdx2's ``mask_peaks`` before the threshold peaks are added.

    ``hkl`` is the chunk's regridded Miller indices (nphi, ny, nx, 3) (``MillerIndex.regrid``);
    ``is_reflection(H, K, L)`` evaluates the space group's reflection conditions. True = masked.
    """
    h, k, l = hkl[..., 0], hkl[..., 1], hkl[..., 2]
    H = np.round(h)
    K = np.round(k)
    L = np.round(l)
    isrefl = is_reflection(H.astype(int), K.astype(int), L.astype(int))
    return isrefl & (quadform(gp, h - H, k - K, l - L) < sigma_cutoff**2)


def peak_mask_block_oracle(
    hkl: np.ndarray, gp: GaussianPeak, sigma_cutoff: float, is_reflection
) -> np.ndarray:
    """Pixel by pixel (agrees with :func:`peak_mask_block` except within rounding of the contour)."""
    sinv = np.linalg.inv(gp.sigma)
    out = np.zeros(hkl.shape[:3], dtype=bool)
    for idx in np.ndindex(*hkl.shape[:3]):
        v = hkl[idx]
        r = np.round(v)
        if not bool(is_reflection(*(np.array([int(x)]) for x in r))[0]):
            continue
        d = sinv @ (v - r - gp.r0)
        out[idx] = float(d @ d) < sigma_cutoff**2
    return out


# a pixel whose fast quadratic form lies within BAND * (its terms' scale) of the contour is decided by
# mdx2's numpy expression; the fast form's rounding error is below ~10 * 2**-52 of that scale
BAND = 1e-9


@numba.njit(nogil=True, cache=True)
def _candidates(partial, axis, base, weight, sinv, r0, c2, band, shape, index, hkl, near):
    """The pixels of the slab (C order over ``shape``) that are not clearly outside the contour ``c2``:
    their flat ``index``, Miller indices ``hkl`` (the last interpolation step along ``axis``) and
    whether they are ``near`` it (within ``band`` of the contour, or not finite); returns their count.
    """
    n0, n1, n2 = shape
    i = 0
    m = 0
    for a in range(n0):
        for b in range(n1):
            for c in range(n2):
                if axis == 0:
                    j = a
                    i0, i1, i2 = base[j], b, c
                    k0, k1, k2 = i0 + 1, i1, i2
                elif axis == 1:
                    j = b
                    i0, i1, i2 = a, base[j], c
                    k0, k1, k2 = i0, i1 + 1, i2
                else:
                    j = c
                    i0, i1, i2 = a, b, base[j]
                    k0, k1, k2 = i0, i1, i2 + 1
                w = weight[j]
                h = partial[i0, i1, i2, 0] * (1.0 - w) + partial[k0, k1, k2, 0] * w
                k = partial[i0, i1, i2, 1] * (1.0 - w) + partial[k0, k1, k2, 1] * w
                l = partial[i0, i1, i2, 2] * (1.0 - w) + partial[k0, k1, k2, 2] * w
                t0 = (h - np.rint(h)) - r0[0]
                t1 = (k - np.rint(k)) - r0[1]
                t2 = (l - np.rint(l)) - r0[2]
                q = 0.0
                scale = 0.0
                for r in range(3):
                    u0, u1, u2 = sinv[r, 0] * t0, sinv[r, 1] * t1, sinv[r, 2] * t2
                    e = u0 + u1 + u2
                    size = abs(u0) + abs(u1) + abs(u2)
                    q += e * e
                    scale += size * size
                margin = band * scale
                if not q > c2 + margin:  # inside, near, or NaN
                    index[m] = i
                    hkl[m, 0] = h
                    hkl[m, 1] = k
                    hkl[m, 2] = l
                    near[m] = not q < c2 - margin
                    m += 1
                i += 1
    return m


def peak_mask_slab(
    block: MillerBlock,
    shape: tuple[int, int, int],
    gp: GaussianPeak,
    sigma_cutoff: float,
    is_reflection,
    band: float = BAND,
) -> np.ndarray:
    """``peak_mask_block(miller_indices_dense(block, shape), ...)``, the same bits, in one fast pass
    (see the module docstring); ``band`` (tests): 0 decides every pixel by the fast form, ``inf``
    sends every pixel not clearly outside through mdx2's expressions."""
    axis = block.final_axis
    c2 = sigma_cutoff**2
    n = int(np.prod(shape))
    # sized for every pixel, but only the candidates' rows are ever written (pages never touched cost
    # no memory)
    index, hkl, near = np.empty(n, dtype=np.int64), np.empty((n, 3)), np.empty(n, dtype=np.bool_)
    base, weight = block.base[axis].astype(np.int64), np.asarray(block.weight[axis], dtype=np.float64)
    sinv, r0 = np.ascontiguousarray(np.linalg.inv(gp.sigma)), np.asarray(gp.r0, dtype=np.float64)
    shape = tuple(int(x) for x in shape)
    m = _candidates(block.step2(), axis, base, weight, sinv, r0, c2, band, shape, index, hkl, near)
    mask = np.zeros(n, dtype=bool)
    if m:
        index, near = index[:m], near[:m]
        h, k, l = hkl[:m, 0], hkl[:m, 1], hkl[:m, 2]
        H, K, L = np.round(h), np.round(k), np.round(l)
        inside = ~near
        if near.any():  # mdx2's own expression for the pixels next to the contour
            inside[near] = quadform(gp, h[near] - H[near], k[near] - K[near], l[near] - L[near]) < c2
        keep = np.flatnonzero(inside)
        if keep.size:
            mask[index[keep]] = is_reflection(H[keep].astype(int), K[keep].astype(int), L[keep].astype(int))
    return mask.reshape(shape)
