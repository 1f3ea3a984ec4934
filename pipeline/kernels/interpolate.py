"""Linear interpolation on mdx2's coarse grids, with mdx2's exact floating-point operations.

Voxel assignment is ``round(h * ndiv)``: a difference in the last bit of h moves a pixel to another
voxel when h * ndiv lies next to a half-integer. So the Miller indices of pixels are computed with
the same operations, in the same order, as ``mdx2.utils.interp_g2g_trilinear``:

1. fractional grid coordinate ``f = np.interp(x, grid_axis, arange(n))``, base ``b = int(f)``,
   weight ``w = f - b``;
2. the three axes are interpolated one after the other, shortest target axis first (``np.argsort``
   of the target lengths), each step as ``lo * (1 - w) + hi * w``.

The first step touches only small arrays (target length x grid lengths); the second and third are
fused into the binning kernel, from :func:`prepare_miller_block`'s output, so no per-pixel arrays
of Miller indices are ever materialised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    """Miller indices of a block of pixels after the first of mdx2's three interpolation steps.

    ``order`` is mdx2's axis order (shortest target axis first). ``step1`` holds the grid values
    interpolated along ``order[0]`` only, shape (n_order0, G_order1, G_order2, 3) with trailing h, k, l;
    ``base``/``weight`` give, per block axis (phi, iy, ix), each target's grid base and weight. The
    remaining two steps, for a pixel with coordinates j1, j2 along ``order[1]``, ``order[2]``, are::

        row = step1[j0, b1[j1]] * (1 - w1[j1]) + step1[j0, b1[j1] + 1] * w1[j1]
        hkl = row[b2[j2]] * (1 - w2[j2]) + row[b2[j2] + 1] * w2[j2]
    """

    order: tuple[int, int, int]
    step1: np.ndarray
    base: tuple[np.ndarray, np.ndarray, np.ndarray]
    weight: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def final_axis(self) -> int:
        return self.order[2]

    def step2(self) -> np.ndarray:
        """The second step for the whole block, in the block's axis order with grid points along
        ``final_axis``: shape e.g. (nphi, ny, G_ix, 3) when ``order == (0, 1, 2)``."""
        o1 = self.order[1]
        b1, w1 = self.base[o1], self.weight[o1][None, :, None, None]
        step2 = self.step1[:, b1] * (1 - w1) + self.step1[:, b1 + 1] * w1
        return np.ascontiguousarray(np.transpose(step2, (*np.argsort(self.order), 3)))


def prepare_miller_block(grid_axes, grid_hkl: np.ndarray, phi, iy, ix) -> MillerBlock:
    """Do the first of mdx2's three interpolation steps for the block spanned by ``phi, iy, ix``.

    ``grid_axes`` are the Miller grid's (phi, iy, ix) axes, ``grid_hkl`` its (nphi, ny, nx, 3) values.
    """
    targets = (np.asarray(phi), np.asarray(iy), np.asarray(ix))
    fractions = [grid_fraction(t, a) for t, a in zip(targets, grid_axes, strict=True)]
    # mdx2 sorts the axes by target length (np.argsort, as there) and interpolates the shortest first.
    order = tuple(int(i) for i in np.argsort([t.size for t in targets]))
    values = np.transpose(grid_hkl, (*order, 3))
    # Keep only the grid points the block needs, then index relative to them (as mdx2 does).
    bases = [fractions[i][0] for i in order]
    values = values[tuple(slice(b[0], b[-1] + 2) for b in bases)]
    base = [b - b[0] for b in (f[0] for f in fractions)]
    weight = [f[1].astype(np.float64) for f in fractions]
    b0, w0 = base[order[0]], weight[order[0]][:, None, None, None]
    step1 = np.ascontiguousarray(values[b0] * (1 - w0) + values[b0 + 1] * w0)
    return MillerBlock(order, step1, tuple(b.astype(np.int64) for b in base), tuple(weight))


def miller_indices_dense(block: MillerBlock, shape: tuple[int, int, int]) -> np.ndarray:
    """All three steps for every pixel of the block, in numpy: (nphi, ny, nx, 3) float64 (the oracle)."""
    axis = block.final_axis
    partial = block.step2()
    lo = np.take(partial, block.base[axis], axis=axis)
    hi = np.take(partial, block.base[axis] + 1, axis=axis)
    w_shape = [1, 1, 1, 1]
    w_shape[axis] = -1
    w = block.weight[axis].reshape(w_shape)
    out = lo * (1 - w) + hi * w
    assert out.shape[:3] == tuple(shape)
    return out


def interp_points_2d(axes, values: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a 2-D grid at points, as mdx2's ``interp2`` (map_coordinates, order 1)."""
    from scipy.ndimage import map_coordinates

    fy = np.interp(np.asarray(y).astype(float), axes[0].astype(float), np.arange(axes[0].size))
    fx = np.interp(np.asarray(x).astype(float), axes[1].astype(float), np.arange(axes[1].size))
    return map_coordinates(values, np.stack((fy, fx)), order=1)


def interp_points_3d(axes, values: np.ndarray, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of a 3-D grid at points, as mdx2's ``interp3`` (map_coordinates, order 1)."""
    from scipy.ndimage import map_coordinates

    f = [
        np.interp(np.asarray(c).astype(float), a.astype(float), np.arange(a.size))
        for c, a in zip((z, y, x), axes, strict=True)
    ]
    return map_coordinates(values, np.stack(f), order=1)
