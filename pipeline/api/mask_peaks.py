"""``mask_peaks()`` (``diffuse mask-peaks``): the Bragg-peak mask of mdx2.mask_peaks, written in mdx2's
mask layout (see docs/PEAKS.md)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from pipeline.api.find_peaks import local_threads, maybe_cluster
from pipeline.api.runlog import check_outputs, run_step
from pipeline.config import ClusterSpec, MaskPeaksParams
from pipeline.errors import InputError
from pipeline.graph.plan import open_binned_stack
from pipeline.io.geometry import read_miller_grid, read_symmetry
from pipeline.io.peaks import read_peaks, write_mask
from pipeline.progress import progress_bar
from pipeline.symmetry.expressions import parse_miller_expression

__all__ = ["MaskResult", "mask_peaks", "peak_indices"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


@dataclass(frozen=True)
class MaskResult:
    outfile: str | None
    shape: tuple[int, int, int]
    masked: int
    seconds: float

    @property
    def fraction(self) -> float:
        return self.masked / max(1, int(np.prod(self.shape)))


def peak_indices(table, axes) -> np.ndarray:
    """Grid indices of the threshold peaks, as mdx2's ``Peaks.to_mask``: round(interp(x, axis, arange))."""
    cols = [
        np.round(np.interp(v, a, np.arange(a.size))).astype(int)
        for v, a in zip((table.phi, table.iy, table.ix), axes, strict=True)
    ]
    return np.stack(cols, axis=1).astype(np.int64).reshape(-1, 3)


def mask_peaks(
    geometry: PathLike,
    data: PathLike,
    peaks: PathLike,
    *,
    sigma_cutoff: float = 3.0,
    bragg: bool = False,
    chunks: tuple[int, int, int] | None = None,
    outfile: PathLike = "mask.nxs",
    overwrite: bool = False,
    cluster: ClusterSpec | str | None = None,
    log_file: PathLike | None = None,
    client=None,
    quiet: bool = True,
) -> MaskResult:
    """Mask every pixel within ``sigma_cutoff`` of the peak model around an allowed reflection, plus
    the threshold peaks of ``peaks`` (with ``bragg``: keep the Bragg peaks, mask everything else).

    Same mask as ``mdx2.mask_peaks GEOM DATA PEAKS --sigma_cutoff S [--bragg]``, bit for bit; written
    to ``outfile`` as ``/entry/mask`` (for ``integrate --mask`` here and in mdx2). ``data`` and
    ``chunks`` as for :func:`~pipeline.api.find_peaks.find_peaks`: mdx2 computes the mask per chunk
    of its data.nxs, so pass that data.nxs's chunks when ``data`` is the detector's own files.
    ``log_file``: write a run log there (:mod:`pipeline.api.runlog`).
    """
    params = MaskPeaksParams(
        sigma_cutoff=sigma_cutoff,
        bragg=bragg,
        chunks=chunks,
        geometry=geometry,
        data=data,
        peaks=peaks,
        outfile=outfile,
        overwrite=overwrite,
    )
    check_outputs(params, log_file)
    with run_step("mask_peaks", params, client, log_file) as step:
        step.result = _mask_peaks(params, client, cluster, quiet)
        return step.result


def _mask_peaks(params: MaskPeaksParams, client, cluster, quiet: bool) -> MaskResult:
    from pipeline.graph.peaks import mask_chunks, plan_mask, run_local_or_cluster, run_mask_task

    geometry, data, peaks, outfile, overwrite = (
        params.geometry, params.data, params.peaks, params.outfile, params.overwrite,
    )  # fmt: skip
    grid = read_miller_grid(geometry)
    symmetry = read_symmetry(geometry)
    if not symmetry.reflection_conditions:
        raise InputError(
            f"{os.fspath(geometry)!r}: /entry/symmetry/reflection_conditions is missing "
            "(a geometry file from mdx2 before 1.0 or not from import_geometry); re-import the geometry"
        )
    is_reflection = parse_miller_expression(symmetry.reflection_conditions)
    stack = open_binned_stack(data, params.chunks)
    table = read_peaks(peaks)
    axes = (stack.phi, stack.iy, stack.ix)
    index = None if params.bragg else peak_indices(table, axes)
    tasks = plan_mask(stack, index)
    out_chunks = mask_chunks(stack)
    t0 = time.perf_counter()
    parts = []
    masked = 0
    with maybe_cluster(client, cluster) as c, progress_bar(quiet) as progress:
        bar = progress("mask peaks", len(tasks))
        with run_local_or_cluster(
            c,
            local_threads(cluster),
            run_mask_task,
            tasks,
            name="mask-peaks",
            bar=bar,
            grid_axes=(grid.phi, grid.iy, grid.ix),
            grid_hkl=grid.hkl,
            axes=axes,
            model=table.model,
            sigma_cutoff=params.sigma_cutoff,
            is_reflection=is_reflection,
            bragg=params.bragg,
            out_chunks=out_chunks,
        ) as results:
            for _, chunk_parts, n in results:
                parts.extend(chunk_parts)
                masked += n
    write_mask(outfile, axes, out_chunks, parts, overwrite=overwrite)
    seconds = time.perf_counter() - t0
    log.info(
        "masked %d of %d pixels (%.2f%%) in %.1f s",
        masked,
        stack.n_pixels,
        100 * masked / stack.n_pixels,
        seconds,
    )
    return MaskResult(os.fspath(outfile), tuple(stack.shape), masked, seconds)
