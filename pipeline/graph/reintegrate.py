"""Wire ``reintegrate`` on integrate's machinery (map -> partition -> reduce -> export).

mdx2.reintegrate bins each storage chunk as mdx2.integrate does, then corrects, scales and maps
the chunk's voxel rows to the asymmetric unit and adds them into dense grids over the whole ASU.
Here the same per-chunk rows are spilled instead, keyed by their ASU voxel (map tasks, with
:class:`ReintegrateSteps` as integrate's :class:`~pipeline.graph.tasks.RowSteps`), partitioned by
ranges of ASU H and summed per voxel in the reduce tasks, in chunk order as mdx2 adds them
(:mod:`pipeline.kernels.reintegrate`). Memory is bounded as integrate's; no ASU grid exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from distributed import Client

from pipeline.config import ReintegrateParams
from pipeline.graph.integrate import IntegrateResult, run_integration
from pipeline.graph.workdir import fingerprint_files
from pipeline.io.geometry import (
    read_background,
    read_corrections,
    read_crystal,
    read_miller_grid,
    read_symmetry,
)
from pipeline.io.tables import REINTEGRATED_INTENSITY_SCHEMA, REINTEGRATED_SCHEMA
from pipeline.kernels.reintegrate import (
    REINTEGRATE_DTYPE,
    ReintegrateModel,
    accumulate_pieces,
    accumulate_sorted,
    asu_grid_range,
    finish_rows,
    reintegrate_rows,
)
from pipeline.symmetry.expressions import parse_miller_expression

__all__ = ["ReintegrateSteps", "build_model", "run_reintegration"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ReintegrateSteps:
    """Reintegrate's steps in integrate's map and reduce tasks (a :class:`~pipeline.graph.tasks.RowSteps`)."""

    model: ReintegrateModel
    output: str
    fingerprint: dict
    name = "reintegrate"
    kind = "reintegrated"
    dtype = REINTEGRATE_DTYPE
    runs_by_h = True  # the reduction adds rows into a dense block of H planes: no key order needed
    # one chunk a run: a run's arrays stay below glibc's mmap threshold (32 MB), so they reuse the
    # heap instead of being mapped (and zeroed by the kernel) afresh
    max_run_rows = 1

    @property
    def schema(self) -> dict[str, np.dtype]:
        return REINTEGRATED_INTENSITY_SCHEMA if self.output == "intensity" else REINTEGRATED_SCHEMA

    @property
    def h_range(self) -> tuple[int, int]:
        return self.model.asu_range[0]

    def after_binning(self, rows: np.ndarray) -> np.ndarray:
        return reintegrate_rows(rows, self.model)

    def reduce(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return finish_rows(accumulate_sorted(rows), self.model.ndiv, self.model.asu_range, self.output)

    def reduce_pieces(self, pieces: list[np.ndarray]) -> dict[str, np.ndarray]:
        sums = accumulate_pieces(pieces, self.model.asu_range)
        return finish_rows(sums, self.model.ndiv, self.model.asu_range, self.output)


def build_model(params: ReintegrateParams) -> ReintegrateModel:
    """Read everything the per-chunk step needs: geometry (crystal, symmetry, corrections, the Miller
    grid for mdx2's output grid), the background and the scales."""
    crystal = read_crystal(params.geometry)
    symmetry = read_symmetry(params.geometry)
    ops = symmetry.laue_group_operators
    asu = parse_miller_expression(symmetry.reciprocal_space_asu)
    grid = read_miller_grid(params.geometry)
    scales = None
    if params.scale:
        from pipeline.io.images import open_image_stack
        from pipeline.io.scales import check_scales_cover, read_scales

        scales = read_scales(params.scale)
        stack = open_image_stack(params.data, exposure_time=params.exposure_time)
        check_scales_cover(scales, params.scale, stack.phi, stack.shape[1:])
    asu_range = asu_grid_range(grid.h, grid.k, grid.l, params.subdivide, ops, asu)
    log.info("ASU grid of mdx2: H %s, K %s, L %s", *asu_range)
    return ReintegrateModel(
        ub_matrix=crystal.ub_matrix,
        ops=ops,
        asu=asu,
        corrections=read_corrections(params.geometry),
        background=read_background(params.background) if params.background else None,
        scales=scales,
        ndiv=params.subdivide,
        asu_range=asu_range,
    )


def run_reintegration(
    params: ReintegrateParams, client: Client, progress=None, model: ReintegrateModel | None = None
) -> IntegrateResult:
    """Run a whole reintegration on ``client``'s cluster (see the module docstring); ``model``: what
    :func:`build_model` read from ``params``' files, if the caller has it already."""
    model = model or build_model(params)
    files = [p for p in (params.scale, params.background) if p]
    steps = ReintegrateSteps(
        model, params.output, {"files": fingerprint_files(files), "output": params.output, "runs": "by-h"}
    )
    return run_integration(params, client, progress=progress, steps=steps)
