"""The Python API: ``integrate``, ``correct`` and ``read_table``, with the same parameters as the CLI."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

from pipeline.config import CorrectParams, IntegrateParams
from pipeline.io.tables import read_table
from pipeline.progress import progress_bar
from pipeline.runlog import run_step

__all__ = ["correct", "integrate", "read_table"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def integrate(
    geometry: PathLike,
    data: PathLike,
    mask: PathLike | Sequence[PathLike] | None = None,
    subdivide: Sequence[int] | int = (1, 1, 1),
    max_spread: float = 1.0,
    *,
    exposure_time: float | None = None,
    outfile: PathLike | None = "integrated.nxs",
    parquet: PathLike | None = None,
    overwrite: bool = False,
    workdir: PathLike | None = None,
    resume: bool = False,
    keep_workdir: bool = False,
    cluster: str | None = None,
    workers: int | None = None,
    memory_limit: str | int | None = None,
    partition: str | None = None,
    account: str | None = None,
    walltime: str | None = None,
    log_file: PathLike | None = None,
    performance_report: PathLike | None = None,
    client=None,
    quiet: bool = True,
):
    """Integrate counts of ``data`` on the Miller-index grid of ``geometry``, as ``mdx2.integrate``.

    Writes ``outfile`` (NeXus ``/entry/hkl_table``, loadable by ``mdx2.io.loadobj``) and/or a parquet
    dataset ``parquet``; returns an :class:`~pipeline.graph.integrate.IntegrateResult`. ``mask`` may
    be one mask file or several (their union is excluded). ``exposure_time`` (seconds) replaces the
    exposure time of every frame. Runs on ``client``, else on the cluster ``cluster`` (default: a
    local cluster of ``workers`` processes; :func:`pipeline.cluster.connect` explains the others and
    ``partition``, ``account``, ``walltime``). ``log_file``: write a run log there (parameters,
    versions, timings, peak memory; :mod:`pipeline.runlog`); ``performance_report``: dask's HTML
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
        outfile=None if outfile is None else os.fspath(outfile),
        parquet=None if parquet is None else os.fspath(parquet),
        overwrite=overwrite,
        workdir=None if workdir is None else os.fspath(workdir),
        resume=resume,
        keep_workdir=keep_workdir,
    )
    from pipeline.io.images import reads_release_the_gil  # here: correct need not import numba

    slurm = {"partition": partition, "account": account, "walltime": walltime}
    threads_ok = client is None and reads_release_the_gil(params.data, params.mask)
    with (
        connect(
            cluster, workers=workers, memory_limit=memory_limit, client=client, threads_ok=threads_ok, **slurm
        ) as c,
        progress_bar(quiet) as bar,
        run_step("integrate", params, c, log_file, performance_report) as step,
    ):
        if params.workdir is None and (shared := default_workdir(params.outfile or params.parquet)):
            params = dataclasses.replace(params, workdir=shared)  # the cluster config's workdir-root
        step.result = run_integration(params, c, progress=bar)
        return step.result


def correct(
    geometry: PathLike,
    integrated: PathLike,
    background: PathLike | None = None,
    *,
    attenuation: bool = True,
    efficiency: bool = True,
    polarization: bool = True,
    lorentz: bool = False,
    p1: bool = False,
    outfile: PathLike | None = "corrected.nxs",
    parquet: PathLike | None = None,
    overwrite: bool = False,
    cluster: str | None = None,
    workers: int | None = None,
    memory_limit: str | int | None = None,
    partition: str | None = None,
    account: str | None = None,
    walltime: str | None = None,
    log_file: PathLike | None = None,
    performance_report: PathLike | None = None,
    client=None,
    quiet: bool = True,
):
    """Apply mdx2's corrections to an integrated table (NeXus or parquet), as ``mdx2.correct``.

    Maps Miller indices to the asymmetric unit (or to P1 with ``p1``), subtracts the background
    count rate if given, divides by solid angle x attenuation x efficiency x polarization (each
    unless disabled), optionally multiplies by the Lorentz factor, and writes ``outfile`` and/or
    ``parquet`` with mdx2's corrected columns. Returns a :class:`~pipeline.graph.correct.CorrectResult`.
    ``log_file`` and ``performance_report`` as for :func:`integrate`.
    """
    from pipeline.graph.correct import run_correction

    params = CorrectParams(
        geometry=geometry,
        integrated=integrated,
        background=None if background is None else os.fspath(background),
        attenuation=attenuation,
        efficiency=efficiency,
        polarization=polarization,
        lorentz=lorentz,
        p1=p1,
        outfile=None if outfile is None else os.fspath(outfile),
        parquet=None if parquet is None else os.fspath(parquet),
        overwrite=overwrite,
    )
    slurm = {"partition": partition, "account": account, "walltime": walltime}
    if cluster is None and client is None and performance_report is None:
        # Row-wise numpy work that releases the GIL: threads in this process use every core
        # without starting worker processes (see pipeline.graph.correct).
        with progress_bar(quiet) as bar, run_step("correct", params, None, log_file, None) as step:
            step.result = run_correction(params, None, progress=bar, threads=workers)
            return step.result
    from pipeline.cluster import connect  # imports distributed: only when a cluster is used

    with (
        connect(cluster, workers=workers, memory_limit=memory_limit, client=client, **slurm) as c,
        progress_bar(quiet) as bar,
        run_step("correct", params, c, log_file, performance_report) as step,
    ):
        step.result = run_correction(params, c, progress=bar)
        return step.result
