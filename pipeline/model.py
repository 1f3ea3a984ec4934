"""Plain containers for what geometry.nxs and the background file hold (no I/O, no numerics)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CORRECTION_NAMES", "BackgroundGrid", "CorrectionGrid", "Crystal", "MillerGrid", "Symmetry"]

#: Correction factors on the detector grid, in the order mdx2 stores them.
CORRECTION_NAMES = ("solid_angle", "efficiency", "attenuation", "polarization", "inverse_lorentz", "d3s")


@dataclass(frozen=True, eq=False)
class MillerGrid:
    """Miller indices h, k, l (float64, shape (nphi, ny, nx)) sampled at grid points ``phi``, ``iy``, ``ix``.

    The grid spans the edges of the scan and detector; pixel and frame centres lie strictly inside it.
    """

    phi: np.ndarray
    iy: np.ndarray
    ix: np.ndarray
    h: np.ndarray
    k: np.ndarray
    l: np.ndarray

    @property
    def hkl(self) -> np.ndarray:
        """The three index grids stacked along a last axis of length 3, as mdx2 interpolates them."""
        return np.stack((self.h, self.k, self.l), axis=3)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.h.shape


@dataclass(frozen=True, eq=False)
class CorrectionGrid:
    """Correction factors (each float64, shape (ny, nx)) sampled at detector grid points ``iy``, ``ix``."""

    iy: np.ndarray
    ix: np.ndarray
    factors: dict[str, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.factors[name]


@dataclass(frozen=True, eq=False)
class Crystal:
    """The crystal: ``ub_matrix`` maps (h, k, l) to s in 1/Angstrom; cell in Angstrom and degrees."""

    ub_matrix: np.ndarray
    unit_cell: np.ndarray
    orientation_matrix: np.ndarray
    space_group: str


@dataclass(frozen=True, eq=False)
class Symmetry:
    """Laue-group operators (N, 3, 3) and the reciprocal-space ASU as a boolean expression in h, k, l."""

    laue_group_operators: np.ndarray
    reciprocal_space_asu: str
    reflection_conditions: str = ""
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class BackgroundGrid:
    """A binned background count *rate* (counts/s per pixel, float64, may hold NaN) on a coarse grid."""

    phi: np.ndarray
    iy: np.ndarray
    ix: np.ndarray
    rate: np.ndarray
