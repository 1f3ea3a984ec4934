"""``merge``: mdx2.merge on the cluster or on threads (the library half of ``diffuse merge``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from pipeline.api.runlog import check_outputs, run_step
from pipeline.config import ClusterSpec, MergeParams
from pipeline.io.lock import output_locks
from pipeline.progress import progress_bar

__all__ = ["merge"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def merge(
    tables: PathLike | Sequence[PathLike],
    scales: PathLike | Sequence[PathLike] | None = None,
    *,
    outlier: float | None = None,
    split: str | None = None,
    geometry: PathLike | None = None,
    seed: int | None = None,
    scaling: bool = True,
    offset: bool = True,
    absorption: bool = True,
    detector: bool = True,
    outfile: PathLike = "merged.nxs",
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
    """Merge corrected tables as ``mdx2.merge``: one row per voxel with the weighted mean intensity.

    ``tables`` are corrected tables (NeXus or parquet), one batch each; ``scales`` the ``scales.nxs``
    of each (``mdx2.scale`` output; ``None``: no scaling, as mdx2 with every ``--no-*`` flag), whose
    models are applied unless ``scaling``/``offset``/``absorption``/``detector`` is False. ``outlier``
    rejects rows more than that many sigma above the merged value and merges again. ``split``
    (``randomHalf``, ``weightedRandomHalf``, ``Friedel``; the last needs ``geometry``) adds
    ``group_0_*``/``group_1_*`` columns; the random splits use numpy's legacy stream seeded with
    ``seed`` (random if None; the seed is logged and returned), as ``mdx2.merge`` after
    ``np.random.seed(seed)``. Returns a :class:`~pipeline.graph.merge.MergeResult`.

    ``workdir`` (default ``.<outfile>.work`` next to the output) holds the spilled rows and merged
    parts; it is kept when a run is interrupted or fails on anything but bad input, and ``resume``
    then redoes only the unfinished map tasks and partitions (a work directory of other inputs or
    options is refused). ``keep_workdir`` keeps it after success too.
    """
    from pipeline.graph.merge import run_merge

    params = MergeParams(
        tables=tables,
        scales=() if scales is None else scales,
        outlier=outlier,
        split=split,
        geometry=geometry,
        seed=seed,
        scaling=scaling,
        offset=offset,
        absorption=absorption,
        detector=detector,
        outfile=outfile,
        overwrite=overwrite,
        workdir=None if workdir is None else os.fspath(workdir),
        resume=resume,
        keep_workdir=keep_workdir,
    )
    check_outputs(params, log_file, performance_report)
    spec = ClusterSpec.of(cluster)
    if client is None and performance_report is None and spec.name == "local":
        # per-partition numpy work: threads of this process, no worker processes to start
        with (
            output_locks([params.outfile, params.workdir], what="merge"),
            progress_bar(quiet) as bar,
            run_step("merge", params, None, log_file, None) as step,
        ):
            step.result = run_merge(params, None, progress=bar, threads=spec.workers)
            return step.result
    from pipeline.cluster import connect  # imports distributed: only when a cluster is used

    with (
        output_locks([params.outfile, params.workdir], what="merge"),
        connect(spec, client=client) as c,
        progress_bar(quiet) as bar,
        run_step("merge", params, c, log_file, performance_report) as step,
    ):
        step.result = run_merge(params, c, progress=bar)
        return step.result
