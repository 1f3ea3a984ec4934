"""``scale``: mdx2.scale's models fitted on the cluster or on threads (library half of ``diffuse scale``)."""

from __future__ import annotations

import logging
import os

from pipeline.api.runlog import RunLog, run_step
from pipeline.config import (
    AbsorptionOptions,
    ClusterSpec,
    DetectorOptions,
    OffsetOptions,
    PrescaleOptions,
    ScaleParams,
    ScalingOptions,
)
from pipeline.io.atomic import check_output_path
from pipeline.io.lock import output_locks
from pipeline.progress import progress_bar

__all__ = ["scale"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def _options(cls, value):
    if value is None:
        return cls()
    if isinstance(value, dict):
        return cls(**value)
    return value


def scale(
    corrected: PathLike | list[PathLike],
    *,
    outfile: PathLike | list[PathLike] | None = None,
    mca2020: bool = False,
    scaling: ScalingOptions | dict | None = None,
    offset: OffsetOptions | dict | None = None,
    detector: DetectorOptions | dict | None = None,
    absorption: AbsorptionOptions | dict | None = None,
    prescale: PrescaleOptions | dict | None = None,
    report: PathLike | None = None,
    overwrite: bool = False,
    cluster: ClusterSpec | str | None = None,
    log_file: PathLike | None = None,
    performance_report: PathLike | None = None,
    client=None,
    quiet: bool = True,
):
    """Fit mdx2.scale's models to corrected tables (one batch per table) and write ``scales.nxs`` files.

    ``scaling``/``offset``/``detector``/``absorption`` take mdx2.scale's options of each model (a dict
    or the options dataclass); ``mca2020`` enables all four;
    ``prescale`` takes mdx2.scale's ``--prescale.*`` options. ``outfile``: one per table (default: mdx2's
    names, ``scales.nxs`` beside each table). ``report``: also write a PNG/HTML report of the models.
    Returns a :class:`~pipeline.graph.scale.ScaleResult` (with ``outfiles``).
    """
    from pipeline.graph.scale import fit_scales, write_outputs

    tables = [corrected] if isinstance(corrected, str | os.PathLike) else list(corrected)
    params = ScaleParams(
        hkl=tuple(os.fspath(t) for t in tables),
        outfile=None if outfile is None else outfile,
        scaling=_options(ScalingOptions, scaling),
        offset=_options(OffsetOptions, offset),
        detector=_options(DetectorOptions, detector),
        absorption=_options(AbsorptionOptions, absorption),
        prescale=_options(PrescaleOptions, prescale),
        mca2020=mca2020,
        overwrite=overwrite,
    )
    for out in params.outfile:  # before the cluster starts or the log opens
        check_output_path(out, params.overwrite)
    if report is not None:
        check_output_path(report, True)
    for extra in (log_file, performance_report):
        if extra is not None and not isinstance(extra, RunLog):  # a RunLog: a step of `diffuse run`
            check_output_path(extra, True)
    spec = ClusterSpec.of(cluster)
    outputs = list(params.outfile)

    def finish(result):
        result.outfiles = write_outputs(params, result)
        if report is not None:
            from pipeline.qc.scale_report import write_scale_report

            result.report = write_scale_report(result.models, report)
        return result

    if client is None and performance_report is None and spec.name == "local":
        with (
            output_locks(outputs, what="scale"),
            progress_bar(quiet) as bar,
            run_step("scale", params, None, log_file, None) as step,
        ):
            step.result = finish(fit_scales(params.hkl, params, None, threads=spec.workers, progress=bar))
            return step.result
    from pipeline.cluster import connect  # imports distributed: only when a cluster is used

    with (
        output_locks(outputs, what="scale"),
        connect(spec, client=client) as c,
        progress_bar(quiet) as bar,
        run_step("scale", params, c, log_file, performance_report) as step,
    ):
        step.result = finish(fit_scales(params.hkl, params, c, progress=bar))
        return step.result
