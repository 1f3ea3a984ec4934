"""Write geometry.nxs in mdx2 1.0.5's layout (what ``mdx2.import_geometry`` saves through nexusformat).

/entry/crystal           NXsample  ub_matrix (3,3), unit_cell (6,), orientation_matrix (3,3),
                                   space_group (str)
/entry/symmetry          group     space_group_number, space_group_symbol, crystal_system,
                                   space_group_operators (N,3,4), laue_group_number, laue_group_symbol,
                                   laue_group_operators (M,3,3), reciprocal_space_asu, reflection_conditions
/entry/corrections/<f>   NXdata    signal (ny, nx) on axes iy, ix, for the six factors
/entry/miller_index/<h>  NXdata    signal (nphi, ny, nx) on axes phi (units degree), iy, ix, for h, k, l

Every object group carries ``mdx2_module = mdx2.geometry`` and ``mdx2_class``; strings are
variable-length UTF-8 as nexusformat writes them, so ``mdx2.io.loadobj`` reads our file.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from pipeline.io.atomic import atomic_h5
from pipeline.io.nexus import create_nxdata, write_mdx2_root_attrs
from pipeline.model import CORRECTION_NAMES

__all__ = ["write_geometry"]

_STR = h5py.string_dtype("utf-8")


def _object_group(entry: h5py.Group, name: str, cls: str, nx_class: str | None = None) -> h5py.Group:
    group = entry.create_group(name)
    if nx_class:
        group.attrs["NX_class"] = nx_class
    group.attrs["mdx2_module"] = "mdx2.geometry"
    group.attrs["mdx2_class"] = cls
    return group


def _string(group: h5py.Group, name: str, value: str) -> None:
    group.create_dataset(name, data=value, dtype=_STR)


def _nxdata(group: h5py.Group, name: str, signal: np.ndarray, axes: dict[str, np.ndarray]) -> None:
    data = create_nxdata(group, name, axes=list(axes), mdx2_module=None, mdx2_class=None)
    data.create_dataset("signal", data=np.asarray(signal, dtype=np.float64))
    for axis, values in axes.items():
        ds = data.create_dataset(axis, data=np.asarray(values, dtype=np.float64))
        if axis == "phi":
            ds.attrs["units"] = "degree"


def write_geometry(
    path: str | os.PathLike,
    *,
    crystal: dict,
    symmetry,
    corrections: dict[str, np.ndarray],
    correction_axes: tuple[np.ndarray, np.ndarray],
    miller_index: np.ndarray,
    miller_axes: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> Path:
    """Write all four objects to ``path`` atomically (temporary name, then rename).

    ``crystal`` holds ub_matrix, unit_cell, orientation_matrix and space_group; ``symmetry`` is a
    :class:`pipeline.symmetry.spacegroup.SymmetryInfo`; ``miller_index`` is (3, nphi, ny, nx).
    """
    path = Path(path)
    with atomic_h5(path) as f:
        entry = write_mdx2_root_attrs(f)
        group = _object_group(entry, "crystal", "Crystal", "NXsample")
        for name in ("ub_matrix", "unit_cell", "orientation_matrix"):
            group.create_dataset(name, data=np.asarray(crystal[name], dtype=np.float64))
        _string(group, "space_group", crystal["space_group"])

        group = _object_group(entry, "symmetry", "Symmetry")
        group.create_dataset("space_group_number", data=np.int64(symmetry.space_group_number))
        _string(group, "space_group_symbol", symmetry.space_group_symbol)
        _string(group, "crystal_system", symmetry.crystal_system)
        group.create_dataset("space_group_operators", data=symmetry.space_group_operators)
        group.create_dataset("laue_group_number", data=np.int64(symmetry.laue_group_number))
        _string(group, "laue_group_symbol", symmetry.laue_group_symbol)
        group.create_dataset("laue_group_operators", data=symmetry.laue_group_operators)
        _string(group, "reciprocal_space_asu", symmetry.reciprocal_space_asu)
        _string(group, "reflection_conditions", symmetry.reflection_conditions)

        group = _object_group(entry, "corrections", "Corrections")
        iy, ix = correction_axes
        for name in CORRECTION_NAMES:
            _nxdata(group, name, corrections[name], {"iy": iy, "ix": ix})

        group = _object_group(entry, "miller_index", "MillerIndex")
        phi, iy, ix = miller_axes
        for name, values in zip("hkl", miller_index, strict=True):
            _nxdata(group, name, values, {"phi": phi, "iy": iy, "ix": ix})
    return path
