"""Linear interpolation on mdx2's coarse grids, with mdx2's exact floating-point operations.

Voxel assignment is ``round(h * ndiv)``: a difference in the last bit of h moves a pixel to another
voxel when h * ndiv lies next to a half-integer. So the Miller indices of pixels are computed with
the same operations, in the same order, as ``mdx2.utils.interp_g2g_trilinear``:

1. fractional grid coordinate ``f = np.interp(x, grid_axis, arange(n))``, base ``b = int(f)``,
   weight ``w = f - b``;
2. the three axes are interpolated one after the other, shortest target axis first (``np.argsort``
   of the target lengths), each step as ``lo * (1 - w) + hi * w``.

The first two steps touch only small arrays (target length x grid length); the last step, one value
per pixel, is done inside the binning kernel from :func:`prepare_miller_block`'s output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates

__all__ = [
    "MillerBlock",
    "grid_fraction",
    "interp_points_2d",
    "interp_points_3d",
    "miller_indices_dense",
    "prepare_miller_block",
]


def grid_fraction(x: np.ndarray, axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Base index and weight of ``x`` on a grid axis: ``f = interp(x, axis, arange(n))``, ``b = int(f)``."""
    f = np.interp(np.asarray(x).astype(float), np.asarray(axis).astype(float), np.arange(axis.size))
    b = f.astype(int)
    return b, f - b


@dataclass(frozen=True)
class MillerBlock:
    """Miller indices of a block of pixels, interpolated along two axes; the third is left to the kernel.

    ``partial`` has the block's axis order (phi, iy, ix) and a trailing axis of length 3 (h, k, l).
    Along ``final_axis`` it holds grid points, not pixels: the pixel at coordinate ``j`` on that axis
    lies between grid points ``base[j]`` and ``base[j] + 1`` with weight ``weight[j]``::

        hkl = partial[..., base[j], ...] * (1 - weight[j]) + partial[..., base[j] + 1, ...] * weight[j]
    """

    partial: np.ndarray
    final_axis: int
    base: np.ndarray
    weight: np.ndarray


def prepare_miller_block(grid_axes, grid_hkl: np.ndarray, phi, iy, ix) -> MillerBlock:
    """Do the first two of mdx2's three interpolation steps for the block spanned by ``phi, iy, ix``.

    ``grid_axes`` are the Miller grid's (phi, iy, ix) axes, ``grid_hkl`` its (nphi, ny, nx, 3) values.
    """
    targets = (np.asarray(phi), np.asarray(iy), np.asarray(ix))
    fractions = [grid_fraction(t, a) for t, a in zip(targets, grid_axes, strict=True)]
    # mdx2 sorts the axes by target length (np.argsort, as there) and interpolates the shortest first.
    order = np.argsort([t.size for t in targets])
    values = np.transpose(grid_hkl, (*order, 3))
    (b0, w0), (b1, w1), (b2, w2) = (fractions[i] for i in order)
    # Keep only the grid points the block needs, then index relative to them (as mdx2 does).
    values = values[b0[0] : b0[-1] + 2, b1[0] : b1[-1] + 2, b2[0] : b2[-1] + 2]
    b0, b1, b2 = b0 - b0[0], b1 - b1[0], b2 - b2[0]
    w0 = w0[:, None, None, None]
    step1 = values[b0] * (1 - w0) + values[b0 + 1] * w0  # (n0, G1, G2, 3)
    w1 = w1[None, :, None, None]
    step2 = step1[:, b1] * (1 - w1) + step1[:, b1 + 1] * w1  # (n0, n1, G2, 3)
    inverse = np.argsort(order)
    partial = np.ascontiguousarray(np.transpose(step2, (*inverse, 3)))
    return MillerBlock(partial, int(order[2]), b2.astype(np.int64), w2.astype(np.float64))


def miller_indices_dense(block: MillerBlock, shape: tuple[int, int, int]) -> np.ndarray:
    """The last interpolation step for every pixel of the block: (nphi, ny, nx, 3) float64 (the oracle)."""
    axis = block.final_axis
    lo = np.take(block.partial, block.base, axis=axis)
    hi = np.take(block.partial, block.base + 1, axis=axis)
    w_shape = [1, 1, 1, 1]
    w_shape[axis] = -1
    w = block.weight.reshape(w_shape)
    out = lo * (1 - w) + hi * w
    assert out.shape[:3] == tuple(shape)
    return out


def interp_points_2d(axes, values: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a 2-D grid at points, as mdx2's ``interp2`` (map_coordinates, order 1)."""
    fy = np.interp(np.asarray(y).astype(float), axes[0].astype(float), np.arange(axes[0].size))
    fx = np.interp(np.asarray(x).astype(float), axes[1].astype(float), np.arange(axes[1].size))
    return map_coordinates(values, np.stack((fy, fx)), order=1)


def interp_points_3d(axes, values: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of a 3-D grid at points, as mdx2's ``interp3`` (map_coordinates, order 1)."""
    f = [
        np.interp(np.asarray(c).astype(float), a.astype(float), np.arange(a.size))
        for c, a in zip((z, y, x), axes, strict=True)
    ]
    return map_coordinates(values, np.stack(f), order=1)
