"""``diffuse run``: integrate, QC, correct, QC, and optionally scale, merge, reintegrate and map, in
one command on one cluster (for a batch job).

Layout of ``outdir``::

    integrated.nxs  integrated.parquet/     the integrated table (NeXus for mdx2, parquet for us)
    corrected.nxs   corrected.parquet/      the corrected table
    qc/integrated/qc.html, qc.json, *.png   QC of the integrated table (written before correct, so a
                                            run that stops at correct, e.g. on zero exposure times,
                                            still says why)
    qc/corrected/...                        QC of the corrected table
    scales.nxs                              (fit_scales) mdx2.scale's default model, by ``diffuse scale``
    merged.nxs                              (merge, implied by scale, fit_scales and map_limits) mdx2.merge
    reintegrated.nxs                        (reintegrate = (H, K, L)) mdx2.reintegrate --output intensity
                                            at that finer subdivision, with the scales
    map.nxs, map.png                        (map_limits) mdx2.map of reintegrated.nxs if made, else of
                                            merged.nxs, and a PNG of its central slice
    run.log                                 parameters, versions, timings and peak memory of each step
    performance-report.html                 (with performance_report) dask's report of the whole run
    .diffuse-run.json                       the steps finished, for ``resume`` (:mod:`pipeline.api.runstate`)

The cluster is connected once and every step gets the same client; on a local cluster of threads
(this process), integrate and correct use threads of their own, as their commands do. With
``resume`` the steps that a previous run finished here with the same inputs and options are skipped,
and the step it was in goes on from its finished tasks (integrate, merge, reintegrate).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.api.runlog import RunLog, jsonable, performance_report
from pipeline.api.runstate import RunState
from pipeline.cluster import connect, in_process_cluster
from pipeline.config import ClusterSpec
from pipeline.errors import ConfigError, PipelineError
from pipeline.io.atomic import check_output_path
from pipeline.io.images import reads_release_the_gil

__all__ = ["RunResult", "run_pipeline"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


@dataclass(frozen=True)
class AfterCorrect:
    """The optional steps after correct: which run, and with what (validated before any work)."""

    scale: str | None = None  # a scales.nxs to use
    fit_scales: bool = False  # fit one with diffuse scale
    merge: bool = False
    reintegrate: tuple[int, int, int] | None = None
    map_limits: tuple[float, ...] | None = None
    map_signal: str = "intensity"

    def __post_init__(self):
        if self.scale is not None and self.fit_scales:
            raise ConfigError("give either scale (a scales.nxs to use) or fit_scales, not both")
        if self.reintegrate is not None:
            if self.scale is None and not self.fit_scales:
                raise ConfigError("reintegrate needs scales: pass scale=FILE or fit_scales=True")
            if len(self.reintegrate) != 3 or min(self.reintegrate) < 1:
                raise ConfigError(
                    f"reintegrate must be three positive integers H K L, got {self.reintegrate!r}"
                )
            object.__setattr__(self, "reintegrate", tuple(int(n) for n in self.reintegrate))
        if self.map_limits is not None:
            if len(self.map_limits) != 6:
                raise ConfigError(
                    f"map_limits must be hmin hmax kmin kmax lmin lmax (6 numbers), got {self.map_limits!r}"
                )
            object.__setattr__(self, "map_limits", tuple(float(x) for x in self.map_limits))

    @property
    def merges(self) -> bool:
        return self.merge or self.scale is not None or self.fit_scales or self.map_limits is not None

    def outputs(self) -> list[str]:
        names = ["scales.nxs"] if self.fit_scales else []
        names += ["merged.nxs"] if self.merges else []
        names += ["reintegrated.nxs"] if self.reintegrate else []
        names += ["map.nxs", "map.png"] if self.map_limits is not None else []
        return names


@dataclass
class RunResult:
    outdir: str
    integrate: object = None
    correct: object = None
    scale: object = None
    merge: object = None
    reintegrate: object = None
    map: object = None
    outputs: list[str] = field(default_factory=list)  # the optional steps' files, by name in outdir
    qc: dict[str, dict] = field(default_factory=dict)  # table kind -> qc summary
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # steps done before (resume)

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
    chunks: Sequence[int] | None = None,
    p1: bool = False,
    lorentz: bool = False,
    overwrite: bool = False,
    scan_images: bool | None = None,
    performance_report_file: PathLike | None = None,
    scale: PathLike | None = None,
    fit_scales: bool = False,
    merge: bool = False,
    reintegrate: Sequence[int] | None = None,
    map_limits: Sequence[float] | None = None,
    map_signal: str = "intensity",
    cluster: ClusterSpec | str | None = None,
    client=None,
    resume: bool = False,
    quiet: bool = True,
) -> RunResult:
    """Run integrate -> qc -> correct -> qc into ``outdir`` on one cluster (see the module docstring),
    then the optional steps: ``fit_scales`` (``diffuse scale``, default model) or ``scale`` (a
    scales.nxs to use); ``merge`` (implied by either and by ``map_limits``); ``reintegrate`` at a finer
    subdivision (H, K, L) with the scales; ``map_limits`` (hmin hmax kmin kmax lmin lmax) maps
    ``map_signal`` of reintegrated.nxs if made, else of merged.nxs.

    ``cluster`` (a :class:`~pipeline.config.ClusterSpec` or its name) goes to
    :func:`pipeline.cluster.connect`. A failing correct (e.g. seconds == 0) is re-raised after the
    integrated table's QC report has been written. ``resume``: skip the steps a previous run finished
    in ``outdir`` with the same inputs and options (:mod:`pipeline.api.runstate`); the others replace
    what that run left, and integrate, merge and reintegrate reuse their finished tasks.
    """
    from pipeline.api.correct import correct
    from pipeline.api.integrate import integrate
    from pipeline.graph.correct import CorrectResult
    from pipeline.graph.integrate import IntegrateResult

    t0 = time.perf_counter()
    after = AfterCorrect(
        scale=None if scale is None else os.fspath(scale),
        fit_scales=fit_scales,
        merge=merge,
        reintegrate=None if reintegrate is None else tuple(reintegrate),
        map_limits=None if map_limits is None else tuple(map_limits),
        map_signal=map_signal,
    )
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        name: out / name
        for name in (
            "integrated.nxs",
            "integrated.parquet",
            "corrected.nxs",
            "corrected.parquet",
            *after.outputs(),
        )
    }
    state = RunState(out, resume)
    replace = overwrite or state.has_record  # resuming: the unfinished steps replace what they left
    for name, path in paths.items():  # before the cluster starts or run.log is opened
        check_output_path(path, replace, is_dir=name.endswith(".parquet"))
    result = RunResult(str(out), outputs=after.outputs())
    common = {"overwrite": replace, "quiet": quiet}
    masks = [mask] if isinstance(mask, str | os.PathLike) else list(mask or [])
    with contextlib.ExitStack() as stack:
        runlog = stack.enter_context(RunLog(out / "run.log", atomic=True))
        threads_ok = client is None and reads_release_the_gil(data, masks)
        c = stack.enter_context(connect(cluster, client=client, threads_ok=threads_ok))
        stack.enter_context(performance_report(performance_report_file))
        once = _Once(state, runlog, result)
        images = [geometry, data, *masks]
        # On this machine, integrate and correct run on threads of this process with no dask scheduler
        # between them and the data, as their own commands do (correct writes its rows in place
        # instead of through part files: 2-3x faster at fine subdivision); the other steps use ``c``.
        spec = ClusterSpec.of(cluster)
        local = client is None and performance_report_file is None and spec.name == "local"
        alone = local and in_process_cluster(c)
        own = {"cluster": spec} if alone else {"client": c}
        result.integrate = once(
            "integrate",
            lambda resume: integrate(
                geometry,
                data,
                mask,
                subdivide,
                max_spread,
                exposure_time=exposure_time,
                chunks=chunks,
                outfile=paths["integrated.nxs"],
                parquet=paths["integrated.parquet"],
                resume=resume,
                log_file=runlog,
                **own,
                **common,
            ),
            options={
                "subdivide": subdivide,
                "max_spread": max_spread,
                "exposure_time": exposure_time,
                "chunks": chunks,
            },
            inputs=images,
            outputs=[paths["integrated.nxs"], paths["integrated.parquet"]],
            saved=lambda d: IntegrateResult(**d),
        )
        pixels = (result.integrate.pixels_read, result.integrate.pixels_used)
        scan = functools.cache(lambda: _scan(data, mask, exposure_time, scan_images, c, quiet))
        qc_inputs = {
            "data": data,
            "mask": mask,
            "background": background,
            "scan_images_mode": False,
            "exposure_time": exposure_time,
        }
        qc_options = {"scan_images": scan_images, "exposure_time": exposure_time, "pixels": pixels}

        def qc(kind: str) -> dict:
            table, outdir = paths[f"{kind}.nxs"], out / "qc" / kind
            return once(
                f"qc_{kind}",
                lambda _: _qc_step(
                    runlog,
                    f"qc_{kind}",
                    c,
                    table=table,
                    outdir=outdir,
                    pixels=pixels,
                    image_scan=scan(),
                    quiet=quiet,
                    **qc_inputs,
                ),
                options=qc_options,
                inputs=[table, *images, background],
                outputs=[outdir],
                saved=lambda d: d,
            )

        result.qc["integrated"] = qc("integrated")
        try:
            result.correct = once(
                "correct",
                lambda _: correct(
                    geometry,
                    paths["integrated.parquet"],
                    background,
                    lorentz=lorentz,
                    p1=p1,
                    outfile=paths["corrected.nxs"],
                    parquet=paths["corrected.parquet"],
                    log_file=runlog,
                    **own,
                    **common,
                ),
                options={"lorentz": lorentz, "p1": p1},
                inputs=[geometry, paths["integrated.parquet"], background],
                outputs=[paths["corrected.nxs"], paths["corrected.parquet"]],
                saved=lambda d: CorrectResult(**d),
            )
        except PipelineError:
            log.error("correct failed; see the QC report %s", out / "qc" / "integrated" / "qc.html")
            raise
        result.qc["corrected"] = qc("corrected")
        reading = {"exposure_time": exposure_time, "chunks": chunks}  # how the images are read
        _after_correct(
            after, result, paths, geometry, data, mask, images, background, reading, c, once, runlog, common
        )
        result.seconds["total"] = round(time.perf_counter() - t0, 3)
        if result.skipped:
            runlog.record("run.skipped", result.skipped)
        runlog.record("run.verdict", result.verdict)
    return result


class _Once:
    """Runs a step of the pipeline unless the outdir's :class:`RunState` says it is done (resume)."""

    def __init__(self, state: RunState, runlog: RunLog, result: RunResult):
        self.state, self.runlog, self.result = state, runlog, result

    def __call__(self, name: str, call, *, options: dict, inputs, outputs, saved=None):
        """``call(resume)``, recorded in the state with its result's summary; or, when it finished
        before with the same ``options`` and ``inputs`` and its ``outputs`` are untouched, ``saved``
        of that summary (None without ``saved``). ``resume`` tells the step to reuse its work
        directory's finished tasks."""
        digest = RunState.digest(name, options, inputs)
        kept = self.state.done(name, digest, outputs)
        if kept is not None:
            log.info("%s: done before with the same inputs and options; skipped (--resume)", name)
            self.runlog.record(f"{name}.status", "done before: skipped (--resume)")
            self.result.skipped.append(name)
            return saved(kept) if saved else None
        resume = self.state.resumable(name, digest)  # before start() records this run's digest
        self.state.start(name, digest)
        value = call(resume)
        summary = None
        if saved is not None:
            summary = json.loads(json.dumps(value, default=jsonable))
        self.state.finish(name, digest, outputs, summary)
        return value


def _after_correct(
    after: AfterCorrect,
    result,
    paths,
    geometry,
    data,
    mask,
    images,
    background,
    reading,
    c,
    once,
    runlog,
    common,
):
    """scale -> merge -> reintegrate -> map, as ``after`` asks, on the run's client (``images``: the
    geometry, data and mask files, for the resume record)."""
    corrected = paths["corrected.parquet"]
    scales = after.scale
    if after.fit_scales:
        from pipeline.api.scale import scale

        result.scale = once(
            "scale",
            lambda _: scale(corrected, outfile=paths["scales.nxs"], client=c, log_file=runlog, **common),
            options={},
            inputs=[corrected],
            outputs=[paths["scales.nxs"]],
        )
        scales = paths["scales.nxs"]
    if after.merges:
        from pipeline.api.merge import merge

        result.merge = once(
            "merge",
            lambda resume: merge(
                corrected,
                scales,
                outfile=paths["merged.nxs"],
                resume=resume,
                client=c,
                log_file=runlog,
                **common,
            ),
            options={},
            inputs=[corrected, scales],
            outputs=[paths["merged.nxs"]],
        )
    if after.reintegrate:
        from pipeline.api.reintegrate import reintegrate

        result.reintegrate = once(
            "reintegrate",
            lambda resume: reintegrate(
                geometry,
                data,
                mask,
                after.reintegrate,
                scale=scales,
                background=background,
                output="intensity",
                **reading,
                outfile=paths["reintegrated.nxs"],
                resume=resume,
                client=c,
                log_file=runlog,
                **common,
            ),
            options={"subdivide": after.reintegrate, **reading},
            inputs=[*images, scales, background],
            outputs=[paths["reintegrated.nxs"]],
        )
    if after.map_limits is not None:
        from pipeline.api.map import make_map

        source = paths["reintegrated.nxs"] if after.reintegrate else paths["merged.nxs"]
        result.map = once(
            "map",
            lambda _: make_map(
                geometry,
                source,
                limits=after.map_limits,
                signal=after.map_signal,
                outfile=paths["map.nxs"],
                png=paths["map.png"],
                client=c,
                log_file=runlog,
                **common,
            ),
            options={"limits": after.map_limits, "signal": after.map_signal},
            inputs=[geometry, source],
            outputs=[paths["map.nxs"], paths["map.png"]],
        )
