"""``make_map``: mdx2.map on threads or the cluster (the library half of ``diffuse map``)."""

from __future__ import annotations

import logging
import os

from pipeline.api.runlog import check_outputs, run_step
from pipeline.config import ClusterSpec, MapParams
from pipeline.io.lock import output_locks
from pipeline.progress import progress_bar

__all__ = ["make_map"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def make_map(
    geometry: PathLike,
    merged: PathLike,
    *,
    limits=(0, 10, 0, 10, 0, 10),
    signal: str = "intensity",
    symmetry: bool = True,
    outfile: PathLike = "map.nxs",
    png: bool | PathLike = True,
    overwrite: bool = False,
    cluster: ClusterSpec | str | None = None,
    log_file: PathLike | None = None,
    performance_report: PathLike | None = None,
    client=None,
    quiet: bool = True,
):
    """The map of column ``signal`` of a merged table on the (h, k, l) grid of ``limits``
    (hmin, hmax, kmin, kmax, lmin, lmax; steps of 1/ndiv), as ``mdx2.map``.

    With ``symmetry`` every grid point takes the value of its image in the asymmetric unit (the Laue
    operators and ASU of ``geometry``); points without data are NaN. Writes ``outfile`` (mdx2's
    GridData layout: ``mdx2.io.loadobj(outfile, signal)`` loads it) and, unless ``png`` is False, a
    PNG of a 2-D slice (``png=True``: beside ``outfile``). Returns a
    :class:`~pipeline.graph.map.MapResult`. ``log_file`` and ``performance_report`` as for
    :func:`integrate`.
    """
    from pipeline.graph.map import run_map

    params = MapParams(
        geometry=geometry,
        merged=merged,
        limits=tuple(limits),
        signal=signal,
        symmetry=symmetry,
        outfile=os.fspath(outfile),
        png=png if isinstance(png, bool) else os.fspath(png),
        overwrite=overwrite,
    )
    check_outputs(params, log_file, performance_report)  # before the cluster starts or the log opens
    outputs = [params.outfile, params.png_path]
    spec = ClusterSpec.of(cluster)
    if client is None and performance_report is None and spec.name == "local":
        # numpy work that releases the GIL: threads in this process, the table index shared
        with (
            output_locks(outputs, what="map"),
            progress_bar(quiet) as bar,
            run_step("map", params, None, log_file, None) as step,
        ):
            step.result = run_map(params, None, progress=bar, threads=spec.workers)
            return step.result
    from pipeline.cluster import connect  # imports distributed: only when a cluster is used

    with (
        output_locks(outputs, what="map"),
        connect(spec, client=client) as c,
        progress_bar(quiet) as bar,
        run_step("map", params, c, log_file, performance_report) as step,
    ):
        step.result = run_map(params, c, progress=bar)
        return step.result
