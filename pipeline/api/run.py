"""``diffuse run``: integrate, QC, correct, QC in one command on one cluster (for a batch job).

Layout of ``outdir``::

    integrated.nxs  integrated.parquet/     the integrated table (NeXus for mdx2, parquet for us)
    corrected.nxs   corrected.parquet/      the corrected table
    qc/integrated/qc.html, qc.json, *.png   QC of the integrated table (written before correct, so a
                                            run that stops at correct, e.g. on zero exposure times,
                                            still says why)
    qc/corrected/...                        QC of the corrected table
    run.log                                 parameters, versions, timings and peak memory of each step
    performance-report.html                 (with performance_report) dask's report of the whole run

The cluster is connected once and every step gets the same client.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.api.runlog import RunLog, performance_report
from pipeline.cluster import connect
from pipeline.config import ClusterSpec
from pipeline.errors import PipelineError
from pipeline.io.atomic import check_output_path
from pipeline.io.images import reads_release_the_gil

__all__ = ["RunResult", "run_pipeline"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


@dataclass
class RunResult:
    outdir: str
    integrate: object = None
    correct: object = None
    qc: dict[str, dict] = field(default_factory=dict)  # table kind -> qc summary
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        order = ("PASS", "WARN", "FAIL")
        return max((q["verdict"] for q in self.qc.values()), key=order.index, default="PASS")


def _qc_step(runlog: RunLog, name: str, client, **kwargs) -> dict:
    from pipeline.qc import qc_table

    with runlog.step(name, None, client) as step:
        summary = qc_table(client=client, **kwargs)
        step.result = {
            "verdict": summary["verdict"],
            "report": str(Path(kwargs["outdir"]) / "qc.html"),
            "checks": {c["name"]: c["verdict"] for c in summary["checks"]},
        }
    return summary


def _scan(data, mask, exposure_time, wanted: bool | None, client, quiet: bool):
    """The hot-pixel scan of the images, once for both QC reports (when wanted, or small if None)."""
    from pipeline.io.images import open_image_stack, open_masks
    from pipeline.progress import progress_bar
    from pipeline.qc.api import mask_paths
    from pipeline.qc.hotscan import LOCAL_MAX_PIXELS, scan_images

    stack = open_image_stack(data, exposure_time=exposure_time)
    if wanted is False or (wanted is None and stack.n_pixels > LOCAL_MAX_PIXELS):
        log.info("images not scanned for hot pixels (%d pixels; pass --scan-images)", stack.n_pixels)
        return None
    with progress_bar(quiet) as bar:
        return scan_images(stack, open_masks(mask_paths(mask), stack.shape), client=client, progress=bar)


def run_pipeline(
    geometry: PathLike,
    data: PathLike,
    outdir: PathLike,
    *,
    mask: PathLike | Sequence[PathLike] | None = None,
    background: PathLike | None = None,
    subdivide: Sequence[int] | int | None = None,
    max_spread: float | None = None,
    exposure_time: float | None = None,
    p1: bool = False,
    lorentz: bool = False,
    overwrite: bool = False,
    scan_images: bool | None = None,
    performance_report_file: PathLike | None = None,
    cluster: ClusterSpec | str | None = None,
    client=None,
    quiet: bool = True,
) -> RunResult:
    """Run integrate -> qc -> correct -> qc into ``outdir`` on one cluster (see the module docstring).

    ``cluster`` (a :class:`~pipeline.config.ClusterSpec` or its name) goes to
    :func:`pipeline.cluster.connect`. A failing correct (e.g. seconds == 0) is re-raised after the
    integrated table's QC report has been written.
    """
    from pipeline.api.correct import correct
    from pipeline.api.integrate import integrate

    t0 = time.perf_counter()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        name: out / name
        for name in ("integrated.nxs", "integrated.parquet", "corrected.nxs", "corrected.parquet")
    }
    for name, path in paths.items():  # before the cluster starts or run.log is opened
        check_output_path(path, overwrite, is_dir=name.endswith(".parquet"))
    result = RunResult(str(out))
    common = {"overwrite": overwrite, "quiet": quiet}
    with contextlib.ExitStack() as stack:
        runlog = stack.enter_context(RunLog(out / "run.log", atomic=True))
        masks = [mask] if isinstance(mask, str | os.PathLike) else list(mask or [])
        threads_ok = client is None and reads_release_the_gil(data, masks)
        c = stack.enter_context(connect(cluster, client=client, threads_ok=threads_ok))
        stack.enter_context(performance_report(performance_report_file))
        result.integrate = integrate(
            geometry,
            data,
            mask,
            subdivide,
            max_spread,
            exposure_time=exposure_time,
            outfile=paths["integrated.nxs"],
            parquet=paths["integrated.parquet"],
            client=c,
            log_file=runlog,
            **common,
        )
        pixels = (result.integrate.pixels_read, result.integrate.pixels_used)
        scan = _scan(data, mask, exposure_time, scan_images, c, quiet)
        qc_inputs = {
            "data": data,
            "mask": mask,
            "background": background,
            "image_scan": scan,
            "scan_images_mode": False,
            "exposure_time": exposure_time,
        }
        result.qc["integrated"] = _qc_step(
            runlog,
            "qc_integrated",
            c,
            table=paths["integrated.nxs"],
            outdir=out / "qc" / "integrated",
            pixels=pixels,
            quiet=quiet,
            **qc_inputs,
        )
        try:
            result.correct = correct(
                geometry,
                paths["integrated.parquet"],
                background,
                lorentz=lorentz,
                p1=p1,
                outfile=paths["corrected.nxs"],
                parquet=paths["corrected.parquet"],
                client=c,
                log_file=runlog,
                **common,
            )
        except PipelineError:
            log.error("correct failed; see the QC report %s", out / "qc" / "integrated" / "qc.html")
            raise
        result.qc["corrected"] = _qc_step(
            runlog,
            "qc_corrected",
            c,
            table=paths["corrected.nxs"],
            outdir=out / "qc" / "corrected",
            pixels=pixels,
            quiet=quiet,
            **qc_inputs,
        )
        result.seconds["total"] = round(time.perf_counter() - t0, 3)
        runlog.record("run.verdict", result.verdict)
    return result
