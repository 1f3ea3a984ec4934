"""Interactive SLURM: this process runs the scheduler and the client, the workers run as SLURM jobs.

:func:`slurm_client` is what ``connect("slurm")`` uses::

    with slurm_client(settings) as client:   # sbatch x settings.jobs, wait for the workers
        ...                                  # compute
                                             # scancel every job of this run, even on Ctrl-C or SIGTERM

Every worker job of one run carries the same unique SLURM job name, so the jobs are found and cancelled
by name (``scancel --name``) whatever happened to the cluster object. When sbatch refuses a job (no such
partition, more memory than a node has), or SLURM says it can never start it, the run stops at once
with SLURM's own message as a :class:`~pipeline.errors.ConfigError`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from distributed import Client

from pipeline.cluster.buffers import malloc_exports
from pipeline.cluster.config import SlurmSettings, describe_job, describe_slurm, import_jobqueue
from pipeline.errors import ConfigError, PipelineError

__all__ = ["queued_jobs", "sbatch_error", "sbatch_message", "slurm_client", "terminate_gracefully"]

log = logging.getLogger(__name__)

# Pending reasons after which SLURM will never start the job as submitted.
NEVER_STARTS = {
    "PartitionConfig": "the job asks for more than any node of the partition has (CPUs, memory or nodes)",
    "PartitionNodeLimit": "the job asks for more nodes than the partition allows",
    "PartitionTimeLimit": "the walltime is longer than the partition allows",
    "InvalidAccount": "the account is not valid",
    "InvalidQOS": "the QOS is not valid",
    "BadConstraints": "no node has the requested features",
}


def _job_class():
    """A SLURM worker job that keeps sbatch's refusal instead of raising it in the event loop.

    dask-jobqueue submits jobs in a background task, where an sbatch failure only becomes a logged
    traceback; this job records the message (``submit_error``) for :func:`slurm_client` to report.
    """
    from distributed.core import Status

    SLURMJob = import_jobqueue().slurm.SLURMJob

    class RecordingSLURMJob(SLURMJob):
        submit_error: str | None = None

        async def start(self):
            try:
                await super().start()
            except (RuntimeError, OSError) as exc:
                self.submit_error = sbatch_error(exc) or str(exc)
                log.debug("sbatch refused a worker job: %s", self.submit_error)
                self.status = Status.running  # nothing to wait for; close() skips a job without id

    return RecordingSLURMJob


def sbatch_message(stderr: str) -> str:
    """sbatch's error lines without their ``sbatch: error:`` prefix, joined into one line."""
    lines = [line.strip() for line in stderr.splitlines()]
    return "; ".join(
        line.removeprefix("sbatch: error: ") for line in lines if line.startswith("sbatch: error:")
    )


def sbatch_error(exc: BaseException) -> str | None:
    """SLURM's words from a failed sbatch that dask-jobqueue raised, or None if it was no sbatch failure."""
    text = str(exc)
    if "sbatch" not in text:
        return None
    return sbatch_message(text) or text.strip().splitlines()[-1]


def queued_jobs(job_name: str) -> dict[str, tuple[str, str]] | None:
    """``{job id: (state, reason)}`` of the jobs called ``job_name`` in squeue; None if squeue fails."""
    try:
        out = subprocess.run(
            ["squeue", "--noheader", f"--name={job_name}", "--format=%i %T %r"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    jobs = {}
    for line in out.stdout.splitlines():
        job_id, state, reason = [*line.split(None, 2), "", ""][:3]
        jobs[job_id] = (state, reason.strip())
    return jobs


def _cancel_by_name(job_name: str) -> None:
    """Cancel every job called ``job_name`` (the jobs of one run), whatever state it is in."""
    try:
        subprocess.run(["scancel", f"--name={job_name}"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:  # pragma: no cover - scancel missing or hung
        log.warning(
            "could not cancel the worker jobs %s: %s; check squeue --name=%s", job_name, exc, job_name
        )


@contextlib.contextmanager
def terminate_gracefully() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into ``SystemExit(128 + signal)`` so that ``finally`` blocks still run.

    (Python's default for SIGTERM is to die on the spot, leaving the worker jobs queued.) Later
    signals are ignored while the first one's cleanup runs. Only in the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []

    def handler(signum, frame):
        if caught:
            return
        caught.append(signum)
        log.warning("%s received: cancelling the worker jobs", signal.Signals(signum).name)
        raise SystemExit(128 + signum)

    signals = (signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _uninterruptible() -> Iterator[None]:
    """Ignore Ctrl-C, SIGTERM and SIGHUP while the worker jobs are cancelled (or jobs could stay behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def slurm_client(settings: SlurmSettings) -> Iterator[Client]:
    """Start ``settings.jobs`` worker jobs, wait for their workers, yield a client; cancel the jobs after."""
    if shutil.which("sbatch") is None:
        raise ConfigError("sbatch not found: --cluster slurm runs where SLURM's commands work (a login node)")
    job_name = f"{settings.job_name}-{secrets.token_hex(4)}"
    with terminate_gracefully():
        cluster = _make_cluster(settings, job_name)
        try:
            with contextlib.ExitStack() as stack:
                _submit(cluster, settings, stack)
                client = stack.enter_context(Client(cluster))
                log.info(
                    "SLURM: %s; jobs %s; dashboard %s; logs in %s",
                    describe_slurm(settings),
                    ", ".join(_job_ids(cluster)),
                    client.dashboard_link,
                    settings.log_directory,
                )
                _wait_for_workers(client, cluster, settings, job_name)
                if settings.adapt_maximum is not None or _has_lifetime(settings):
                    # Adaptive replaces workers that retire at --lifetime (and adds jobs under load).
                    cluster.adapt(
                        minimum_jobs=settings.jobs, maximum_jobs=settings.adapt_maximum or settings.jobs
                    )
                yield client
        finally:
            with _uninterruptible():
                _cancel_by_name(job_name)
                cluster.close(timeout=30)
            log.debug("SLURM: cancelled the jobs called %s", job_name)


def _has_lifetime(settings: SlurmSettings) -> bool:
    return any(a == "--lifetime" or a.startswith("--lifetime=") for a in settings.worker_extra_args)


def _make_cluster(settings: SlurmSettings, job_name: str):
    SLURMCluster = import_jobqueue().SLURMCluster
    scheduler_options = dict(settings.scheduler_options)
    scheduler_options.setdefault("dashboard_address", settings.dashboard_address)
    interface = settings.interface
    if interface is None and not {"host", "interface"} & set(scheduler_options):
        interface = "lo"  # nothing configured: scheduler and workers on 127.0.0.1 only
    Path(settings.log_directory).mkdir(parents=True, exist_ok=True)
    return SLURMCluster(
        cores=settings.cores,
        processes=settings.processes,
        memory=f"{settings.memory}B",
        walltime=settings.walltime,
        queue=settings.queue,
        account=settings.account,
        interface=interface,
        local_directory=settings.local_directory,
        log_directory=settings.log_directory,
        death_timeout=settings.death_timeout,
        worker_extra_args=list(settings.worker_extra_args),
        job_script_prologue=[*malloc_exports(), *settings.job_script_prologue],
        job_extra_directives=list(settings.job_extra_directives),
        python=settings.python,
        job_name=job_name,
        scheduler_options=scheduler_options,
        job_cls=_job_class(),
    )


def _submit(cluster, settings: SlurmSettings, stack: contextlib.ExitStack) -> None:
    """sbatch every worker job now (not in the background), so that a refusal surfaces here."""
    log.debug("worker job script:\n%s", cluster.job_script())
    cluster.scale(jobs=settings.jobs)
    stack.enter_context(cluster)  # entering a SpecCluster waits until its jobs are submitted
    _raise_submit_errors(cluster, settings)


def _raise_submit_errors(cluster, settings: SlurmSettings) -> None:
    refused = [job.submit_error for job in cluster.workers.values() if getattr(job, "submit_error", None)]
    if refused:
        raise ConfigError(f"sbatch refused the worker job [{describe_job(settings)}]: {refused[0]}")


def _job_ids(cluster) -> list[str]:
    return sorted((str(job.job_id) for job in cluster.workers.values() if job.job_id), key=int)


def _wait_for_workers(client: Client, cluster, settings: SlurmSettings, job_name: str) -> None:
    """Wait until every requested worker has connected; fail fast when SLURM cannot start the jobs.

    After ``wait_timeout`` seconds the run goes on with the workers it has (a warning), or stops if
    there is none.
    """
    expected = settings.workers
    deadline = time.monotonic() + settings.wait_timeout
    while True:
        connected = len(client.nthreads())
        if connected >= expected:
            log.info("SLURM: %d workers connected", connected)
            return
        _raise_submit_errors(cluster, settings)
        jobs = queued_jobs(job_name)
        if jobs is not None:
            _check_jobs(jobs, connected, settings, job_name)
        if time.monotonic() > deadline:
            states = (
                ", ".join(f"job {i} {s} ({r})" for i, (s, r) in sorted((jobs or {}).items())) or "none queued"
            )
            if connected:
                log.warning(
                    "SLURM: only %d of %d workers connected within %g s (%s); going on with them",
                    connected,
                    expected,
                    settings.wait_timeout,
                    states,
                )
                return
            raise PipelineError(
                f"no dask worker connected within {settings.wait_timeout:g} s; worker jobs: {states}. "
                "Wait longer (diffuse.cluster.wait-timeout) or ask for a smaller job"
            )
        time.sleep(1.0)


def _check_jobs(jobs: dict, connected: int, settings: SlurmSettings, job_name: str) -> None:
    """Raise if SLURM will never start a worker job, or if every job ended before any worker connected."""
    for job_id, (state, reason) in sorted(jobs.items()):
        if state == "PENDING" and reason in NEVER_STARTS:
            raise ConfigError(
                f"SLURM will never start worker job {job_id} [{describe_job(settings)}]: {reason}, "
                f"{NEVER_STARTS[reason]}"
            )
    if not jobs and not connected:
        logs = sorted(Path(settings.log_directory).glob(f"{job_name}-*.err"))
        last = _last_line(logs[-1]) if logs else ""
        where = logs[-1] if logs else settings.log_directory
        raise PipelineError(
            f"the worker jobs ended before any dask worker connected; see {where}"
            + (f" (last line: {last})" if last else "")
        )


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""
