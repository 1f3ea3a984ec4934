"""``import_geometry``: a DIALS ``.expt`` file to geometry.nxs, as ``mdx2.import_geometry`` writes it.

Stages:
  1. validate parameters and the output path; read the experiment (:mod:`pipeline.io.expt`);
  2. symmetry from the crystal's Hall symbol (:mod:`pipeline.symmetry.spacegroup`);
  3. Miller indices on a grid spanning the scan and detector edges (:func:`dials.hkl_on_grid`);
  4. the six correction factors on the detector part of that grid (:mod:`pipeline.geometry.factors`);
  5. write everything atomically (:mod:`pipeline.io.geometry_writer`).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError, InputError
from pipeline.geometry import dials
from pipeline.geometry.factors import correction_factors
from pipeline.io.atomic import check_output_path
from pipeline.io.expt import read_expt
from pipeline.io.geometry_writer import write_geometry
from pipeline.symmetry.spacegroup import describe_space_group

__all__ = ["ImportGeometryParams", "import_geometry"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportGeometryParams:
    """Grid spacing (degrees, pixels, pixels) along (phi, iy, ix), as mdx2's ``--sample_spacing``."""

    sample_spacing: tuple[float, float, float] = (1, 10, 10)

    def __post_init__(self):
        try:
            values = tuple(self.sample_spacing)
        except TypeError:
            values = ()
        if len(values) != 3:
            raise ConfigError(f"sample_spacing must be 3 numbers (phi, y, x), got {self.sample_spacing!r}")
        for axis, v in zip(("phi", "y", "x"), values, strict=True):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"sample_spacing along {axis} must be a positive number, got {v!r}")
        object.__setattr__(self, "sample_spacing", values)


def import_geometry(
    expt: str | os.PathLike,
    outfile: str | os.PathLike = "geometry.nxs",
    sample_spacing=(1, 10, 10),
    overwrite: bool = False,
) -> Path:
    """Write geometry.nxs (Miller-index grid, corrections, crystal, symmetry) from a DIALS experiment.

    Returns the path written. Raises :class:`InputError` for an unreadable or unsupported ``.expt``
    file and for an existing ``outfile`` without ``overwrite``.
    """
    params = ImportGeometryParams(sample_spacing)
    outfile = check_output_path(outfile, overwrite)
    experiment = read_expt(expt)  # 1
    try:  # 2
        symmetry = describe_space_group(experiment.crystal.hall_symbol)
    except InputError as exc:
        raise InputError(f"{str(expt)!r}: crystal space group: {exc}") from None
    if symmetry.origin_shift:
        log.warning(
            "%s: the setting %r reaches its reference setting only with an origin shift; mdx2 cannot import "
            "it%s",
            expt,
            symmetry.hall_symbol,
            ""
            if symmetry.exact
            else ", and cctbx would orient the asymmetric unit by comparing origin shifts, "
            "which we do not reproduce (our ASU is valid but may be another choice)",
        )
    scan, panel = experiment.scan, experiment.panel
    phi, iy, ix = dials.scan_axes(
        scan.num_images, scan.phi0, scan.dphi, panel.image_size, params.sample_spacing
    )
    hkl = dials.hkl_on_grid(experiment, phi, iy, ix)  # 3
    xyz = dials.lab_coordinates(panel, iy, ix)  # 4
    factors = correction_factors(xyz, panel, experiment.beam, experiment.goniometer.rotation_axis, scan.dphi)
    a_matrix, u_matrix, _, cell = dials.crystal_u_b(experiment.crystal.real_space)
    crystal = {
        "ub_matrix": a_matrix,
        "unit_cell": cell,
        "orientation_matrix": u_matrix,
        "space_group": symmetry.space_group_symbol,
    }
    log.info(
        "%s: %s (No. %d), cell %s; Miller grid %s, corrections grid %s",
        expt,
        symmetry.space_group_symbol,
        symmetry.space_group_number,
        ", ".join(f"{x:.4g}" for x in cell),
        hkl.shape[1:],
        xyz.shape[:2],
    )
    return write_geometry(  # 5
        outfile,
        crystal=crystal,
        symmetry=symmetry,
        corrections=factors,
        correction_axes=(iy, ix),
        miller_index=hkl,
        miller_axes=(phi, iy, ix),
    )
