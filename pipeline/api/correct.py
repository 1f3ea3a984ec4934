"""``correct``: mdx2.correct on the cluster or on threads (the library half of ``diffuse correct``)."""

from __future__ import annotations

import logging
import os

from pipeline.api.runlog import check_outputs, run_step
from pipeline.config import ClusterSpec, CorrectParams
from pipeline.io.lock import output_locks
from pipeline.progress import progress_bar

__all__ = ["correct"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


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
    cluster: ClusterSpec | str | None = None,
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
    check_outputs(params, log_file, performance_report)  # before the cluster starts or the log opens
    spec = ClusterSpec.of(cluster)
    if client is None and performance_report is None and spec.name == "local":
        # Row-wise numpy work that releases the GIL: threads in this process use every core
        # without starting worker processes (see pipeline.graph.correct).
        with (
            output_locks([params.outfile, params.parquet], what="correct"),
            progress_bar(quiet) as bar,
            run_step("correct", params, None, log_file, None) as step,
        ):
            step.result = run_correction(params, None, progress=bar, threads=spec.workers)
            return step.result
    from pipeline.cluster import connect  # imports distributed: only when a cluster is used

    with (
        output_locks([params.outfile, params.parquet], what="correct"),
        connect(spec, client=client) as c,
        progress_bar(quiet) as bar,
        run_step("correct", params, c, log_file, performance_report) as step,
    ):
        step.result = run_correction(params, c, progress=bar)
        return step.result
