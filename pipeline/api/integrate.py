"""``integrate``: mdx2.integrate on the cluster (the library half of ``diffuse integrate``)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence

from pipeline.api.runlog import check_outputs, process_age, run_step
from pipeline.config import ClusterSpec, IntegrateParams
from pipeline.io.lock import output_locks
from pipeline.progress import progress_bar

__all__ = ["integrate"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def integrate(
    geometry: PathLike,
    data: PathLike,
    mask: PathLike | Sequence[PathLike] | None = None,
    subdivide: Sequence[int] | int | None = None,
    max_spread: float | None = None,
    *,
    exposure_time: float | None = None,
    chunks: Sequence[int] | None = None,
    outfile: PathLike | None = "integrated.nxs",
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
    """Integrate counts of ``data`` on the Miller-index grid of ``geometry``, as ``mdx2.integrate``.

    Writes ``outfile`` (NeXus ``/entry/hkl_table``, loadable by ``mdx2.io.loadobj``) and/or a parquet
    dataset ``parquet``; returns an :class:`~pipeline.graph.integrate.IntegrateResult`. ``mask`` may
    be one mask file or several (their union is excluded). ``exposure_time`` (seconds) replaces the
    exposure time of every frame. ``data`` may also be detector files (an NXmx/Eiger master file, CBF
    files, or the DIALS ``.expt`` naming them); ``chunks`` (frames, y, x) sets the binning grid that
    decides mdx2's partial-observation split (default: the data's storage chunks, or for detector
    files the chunks mdx2.import_data would write). Runs on ``client``, else on the cluster
    ``cluster`` (default: a local cluster; a :class:`~pipeline.config.ClusterSpec` or its name:
    :func:`pipeline.cluster.connect` explains them). ``log_file``: write a run log there (parameters,
    versions, timings, peak memory; :mod:`pipeline.api.runlog`); ``performance_report``: dask's HTML
    performance report.
    """
    from pipeline.cluster import connect, default_workdir
    from pipeline.graph.integrate import run_integration

    params = IntegrateParams(
        geometry=geometry,
        data=data,
        mask=mask,
        subdivide=subdivide,
        max_spread=max_spread,
        exposure_time=exposure_time,
        chunks=chunks,
        outfile=None if outfile is None else os.fspath(outfile),
        parquet=None if parquet is None else os.fspath(parquet),
        overwrite=overwrite,
        workdir=None if workdir is None else os.fspath(workdir),
        resume=resume,
        keep_workdir=keep_workdir,
    )
    check_outputs(params, log_file, performance_report)  # before the cluster starts or the log opens
    from pipeline.io.images import reads_release_the_gil  # here: correct need not import numba

    threads_ok = client is None and reads_release_the_gil(params.data, params.mask)
    started = time.perf_counter()
    with (
        output_locks([params.outfile, params.parquet, params.workdir], what="integrate"),
        connect(cluster, client=client, threads_ok=threads_ok, light=performance_report is None) as c,
        progress_bar(quiet) as bar,
        run_step("integrate", params, c, log_file, performance_report) as step,
    ):
        cluster_start = time.perf_counter() - started
        if params.workdir is None and (shared := default_workdir(params.outfile or params.parquet)):
            params = dataclasses.replace(params, workdir=shared)  # the cluster config's workdir-root
        result = run_integration(params, c, progress=bar)
        # the time budget: from process start to here (imports), the cluster's start, then the run's
        result.seconds = {
            "startup": process_age(started),
            "cluster": round(cluster_start, 3),
            **result.seconds,
        }
        step.result = result
        return step.result
