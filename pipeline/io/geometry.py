"""Read geometry.nxs (Miller-index grid, corrections, crystal, symmetry) and binned background files.

Layouts follow mdx2 1.0.5 (see docs/SPEC.md): every grid is an NXdata group whose ``signal``
attribute names the data and whose ``axes`` attribute names the axis datasets.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from pipeline.errors import InputError
from pipeline.io.inputs import check_finite
from pipeline.io.nexus import decode_str, open_nexus, read_array, require
from pipeline.model import (
    CORRECTION_NAMES,
    BackgroundGrid,
    CorrectionGrid,
    Crystal,
    MillerGrid,
    Symmetry,
)

__all__ = ["read_background", "read_corrections", "read_crystal", "read_miller_grid", "read_symmetry"]


def _read_nxdata(
    group: h5py.Group, axes: tuple[str, ...], min_points: int = 2, finite: bool = True
) -> tuple[list[np.ndarray], np.ndarray]:
    """Return the axis arrays and the signal of an NXdata group, checking their shapes agree."""
    signal_name = decode_str(group.attrs.get("signal", "signal"))
    signal = np.asarray(read_array(group, signal_name, "grid values"), dtype=np.float64)
    axis_values = [np.asarray(read_array(group, name, f"axis {name}"), dtype=np.float64) for name in axes]
    for name, a in zip(axes, axis_values, strict=True):
        check_finite(a, group.file.filename, f"{group.name}/{name}", what="axis values")
    if finite:
        check_finite(signal, group.file.filename, f"{group.name}/{signal_name}")
    expected = tuple(a.size for a in axis_values)
    if signal.shape != expected:
        raise InputError(
            f"{group.file.filename!r}: {group.name}/{signal_name} has shape {signal.shape}, "
            f"but its axes {axes} have lengths {expected}"
        )
    for name, a in zip(axes, axis_values, strict=True):
        if a.size < min_points or not np.all(np.diff(a) > 0):
            raise InputError(
                f"{group.file.filename!r}: axis {group.name}/{name} must be increasing with >= {min_points} "
                f"points, got {a.size} points"
            )
    return axis_values, signal


def read_miller_grid(path: str | os.PathLike) -> MillerGrid:
    """Read ``/entry/miller_index/{h,k,l}`` from geometry.nxs."""
    with open_nexus(path, "geometry file") as f:
        group = require(f, "/entry/miller_index", "Miller-index grid written by import_geometry")
        grids = {}
        axes = None
        for name in "hkl":
            axis_values, grids[name] = _read_nxdata(require(group, name), ("phi", "iy", "ix"))
            if axes is None:
                axes = axis_values
            elif not all(np.array_equal(a, b) for a, b in zip(axes, axis_values, strict=True)):
                raise InputError(f"{str(path)!r}: miller_index/{name} has other axes than miller_index/h")
    return MillerGrid(*axes, grids["h"], grids["k"], grids["l"])


def read_corrections(path: str | os.PathLike) -> CorrectionGrid:
    """Read ``/entry/corrections/<factor>`` (solid angle, efficiency, ...) from geometry.nxs."""
    with open_nexus(path, "geometry file") as f:
        group = require(f, "/entry/corrections", "correction factors written by import_geometry")
        factors = {}
        axes = None
        for name in CORRECTION_NAMES:
            axis_values, factors[name] = _read_nxdata(require(group, name), ("iy", "ix"))
            axes = axes or axis_values
    return CorrectionGrid(axes[0], axes[1], factors)


def read_crystal(path: str | os.PathLike) -> Crystal:
    """Read ``/entry/crystal`` (UB matrix, cell, orientation, space group) from geometry.nxs."""
    with open_nexus(path, "geometry file") as f:
        group = require(f, "/entry/crystal", "crystal written by import_geometry")
        ub = np.asarray(read_array(group, "ub_matrix"), dtype=np.float64)
        if ub.shape != (3, 3) or not np.all(np.isfinite(ub)) or abs(np.linalg.det(ub)) == 0:
            raise InputError(
                f"{str(path)!r}: /entry/crystal/ub_matrix must be a finite, invertible 3x3 matrix"
            )
        return Crystal(
            ub_matrix=ub,
            unit_cell=np.asarray(read_array(group, "unit_cell"), dtype=np.float64),
            orientation_matrix=np.asarray(read_array(group, "orientation_matrix"), dtype=np.float64),
            space_group=decode_str(read_array(group, "space_group")),
        )


def read_symmetry(path: str | os.PathLike) -> Symmetry:
    """Read ``/entry/symmetry`` (Laue operators, reciprocal-space ASU expression) from geometry.nxs."""
    with open_nexus(path, "geometry file") as f:
        group = require(f, "/entry/symmetry", "symmetry written by import_geometry")
        ops = np.asarray(read_array(group, "laue_group_operators"), dtype=np.float64)
        if ops.ndim != 3 or ops.shape[1:] != (3, 3) or ops.shape[0] < 1:
            raise InputError(
                f"{str(path)!r}: /entry/symmetry/laue_group_operators has shape {ops.shape}, "
                "expected (N, 3, 3)"
            )
        asu = decode_str(read_array(group, "reciprocal_space_asu"))
        conditions = (
            decode_str(read_array(group, "reflection_conditions")) if "reflection_conditions" in group else ""
        )
        extra = {}
        for key in group:
            if key not in ("laue_group_operators", "reciprocal_space_asu", "reflection_conditions"):
                value = group[key][()]
                extra[key] = decode_str(value) if isinstance(value, bytes | np.bytes_ | str) else value
    return Symmetry(ops, asu, conditions, extra)


def read_background(path: str | os.PathLike) -> BackgroundGrid:
    """Read a binned background count rate ``/entry/binned_image_series`` (mdx2.bin_image_series output)."""
    with open_nexus(path, "background file") as f:
        group = require(f, "/entry/binned_image_series", "binned background written by mdx2.bin_image_series")
        # NaN rate = an empty bin (mdx2's convention), so the signal may hold NaN
        (phi, iy, ix), rate = _read_nxdata(group, ("phi", "iy", "ix"), min_points=1, finite=False)
    return BackgroundGrid(phi, iy, ix, rate)
