"""``reintegrate``: mdx2.reintegrate on the cluster (the library half of ``diffuse reintegrate``)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

from pipeline.api.runlog import check_outputs, run_step
from pipeline.config import ClusterSpec, ReintegrateParams
from pipeline.io.lock import output_locks
from pipeline.progress import progress_bar

__all__ = ["reintegrate"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def reintegrate(
    geometry: PathLike,
    data: PathLike,
    mask: PathLike | Sequence[PathLike] | None = None,
    subdivide: Sequence[int] | int | None = None,
    *,
    scale: PathLike | None = None,
    background: PathLike | None = None,
    output: str = "counts",
    exposure_time: float | None = None,
    chunks: Sequence[int] | None = None,
    outfile: PathLike | None = "reintegrated.nxs",
    parquet: PathLike | None = None,
    overwrite: bool = False,
    workdir: PathLike | None = None,
    resume: bool = False,
    keep_workdir: bool = False,
    cluster: ClusterSpec | str | None = None,
    log_file: PathLike | None = None,
    performance_report: PathLike | None = None,
    client=None,
    quiet: bool = True,
):
    """Integrate ``data`` again on the grid ``subdivide``, applying the corrections of ``geometry``, the
    models of ``scale`` (a scales.nxs from mdx2.scale) and the ``background``, and sum the
    observations per voxel of the asymmetric unit, as ``mdx2.reintegrate``.

    Writes ``outfile`` (NeXus ``/entry/hkl_table``: h k l counts background_counts scale
    multiplicity, or with ``output="intensity"`` h k l intensity intensity_error multiplicity) and/or
    a parquet dataset; returns an :class:`~pipeline.graph.integrate.IntegrateResult`. Other options
    as :func:`pipeline.integrate` (``chunks`` for detector files, ``workdir``, ``resume``, ``cluster``,
    ``log_file`` ...).
    """
    from pipeline.cluster import connect, default_workdir
    from pipeline.graph.reintegrate import build_model, run_reintegration

    params = ReintegrateParams(
        geometry=geometry,
        data=data,
        mask=mask,
        subdivide=subdivide,
        exposure_time=exposure_time,
        chunks=chunks,
        outfile=None if outfile is None else os.fspath(outfile),
        parquet=None if parquet is None else os.fspath(parquet),
        overwrite=overwrite,
        workdir=None if workdir is None else os.fspath(workdir),
        resume=resume,
        keep_workdir=keep_workdir,
        scale=None if scale is None else os.fspath(scale),
        background=None if background is None else os.fspath(background),
        output=output,
    )
    check_outputs(params, log_file, performance_report)  # before the cluster starts or the log opens
    model = build_model(params)  # geometry, scales and background read and checked before any work
    from pipeline.io.images import reads_release_the_gil

    threads_ok = client is None and reads_release_the_gil(params.data, params.mask)
    with (
        output_locks([params.outfile, params.parquet, params.workdir], what="reintegrate"),
        connect(cluster, client=client, threads_ok=threads_ok) as c,
        progress_bar(quiet) as bar,
        run_step("reintegrate", params, c, log_file, performance_report) as step,
    ):
        if params.workdir is None and (shared := default_workdir(params.outfile or params.parquet)):
            params = dataclasses.replace(params, workdir=shared)
        step.result = run_reintegration(params, c, progress=bar, model=model)
        return step.result
