"""Batch mode: one sbatch job runs the dask scheduler, the workers and a diffuse command, unattended.

``diffuse submit --nodes 2 -- integrate geometry.nxs data.nxs --subdivide 4 4 4`` writes a job script
(``--dry-run`` prints it) and submits it with sbatch. Inside the allocation::

    dask scheduler --scheduler-file S &      # first node, in the batch step
    srun dask worker --scheduler-file S &    # `processes` worker processes on every node
    python -m pipeline integrate ... --cluster S --workers N [--resume after a requeue]

The resources come from the same cluster config as interactive runs (``cluster/configs/slurm.yaml``),
read per node: ``cores`` CPUs, ``memory`` and ``processes`` worker processes. The scheduler and the
client run in the batch step on the first node and take no task slot. (``dask_jobqueue.SLURMRunner``
gives each of them a task of its own: two more slots, so on a node with as many CPUs as workers the
job only fits with ``--overcommit``; and it runs the whole diffuse command on every rank.)

``#SBATCH --requeue`` with ``--open-mode=append``: when SLURM requeues the job (node failure,
preemption, ``scontrol requeue``), it runs again with ``SLURM_RESTART_COUNT`` > 0, and the script then
adds ``--resume`` to commands that have it, so integrate reuses the map tasks that had finished.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import shlex
import string
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.cluster.buffers import malloc_exports
from pipeline.cluster.config import SlurmSettings, describe_job
from pipeline.cluster.slurm import sbatch_message
from pipeline.errors import ConfigError
from pipeline.io.atomic import write_text_atomic

__all__ = ["BatchJob", "batch_job", "submit_batch_job"]


class _Script(string.Template):
    delimiter = "@"  # bash owns $; "@@" is a literal @


SCRIPT = _Script("""\
#!/usr/bin/env bash
# Written by `diffuse submit` on @{date} from @{source}:
#   diffuse @{command}
# on @{nodes} node(s) x @{processes} dask worker(s). Submit it again with: sbatch THIS_FILE
@{directives}
set -uo pipefail
@{prologue}
PYTHON=@{python}
SCHEDULER_FILE=@{logs}/diffuse-scheduler-"$SLURM_JOB_ID".json
echo "diffuse: job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST at $(date)"
export DASK_LOGGING__DISTRIBUTED=warning   # dask's own messages: warnings and errors only
rm -f "$SCHEDULER_FILE"
"$PYTHON" -m distributed.cli.dask_scheduler --scheduler-file "$SCHEDULER_FILE" --port 0 \\
    @{listen} --dashboard-address @{dashboard} &
SCHEDULER_PID=$!
srun --quiet --ntasks-per-node=@{processes} --cpus-per-task=@{threads} \\
    "$PYTHON" -m distributed.cli.dask_worker --scheduler-file "$SCHEDULER_FILE" \\
    @{listen} --nthreads @{threads} --memory-limit @{worker_memory} --death-timeout @{death_timeout}@{local} &
WORKERS_PID=$!
RESUME=()
@{resume}
"$PYTHON" -m pipeline @{args} \\
    --cluster "$SCHEDULER_FILE" --workers @{workers} "${RESUME[@@]}"
STATUS=$?
echo "diffuse: stopping the dask workers (SLURM reports their step as cancelled)"
kill "$WORKERS_PID" 2>/dev/null   # srun passes SIGTERM on: the workers close cleanly
for _ in $(seq 60); do kill -0 "$WORKERS_PID" 2>/dev/null || break; sleep 0.5; done
kill "$SCHEDULER_PID" 2>/dev/null
wait
rm -f "$SCHEDULER_FILE"
echo "diffuse: exit status $STATUS at $(date)"
exit "$STATUS"
""")


RESUME_LINE = '[ "${{SLURM_RESTART_COUNT:-0}}" -gt 0 ] && RESUME=({args})   # requeued: reuse finished work'
NO_RESUME_LINE = "# (this command has no --resume: a requeued job runs it afresh)"


@dataclass(frozen=True)
class BatchJob:
    """A job script and where it, its log and the scheduler file go."""

    name: str
    script: str
    script_path: Path
    log_pattern: Path  # with SLURM's %j for the job id
    nodes: int
    workers: int
    resources: str  # one node's share, for messages

    def log_path(self, job_id: str) -> Path:
        return Path(str(self.log_pattern).replace("%j", job_id))


def _dq(text: str) -> str:
    """Double-quote for bash, leaving ``$VARIABLES`` to expand when the job runs (on the node)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`") + '"'


def batch_job(
    command: Sequence[str],
    settings: SlurmSettings,
    *,
    nodes: int = 1,
    resume_args: Sequence[str] = (),
    workdir: str | None = None,
) -> BatchJob:
    """The job that runs ``diffuse <command>`` on ``nodes`` nodes (see the module docstring).

    ``resume_args`` are added to the command when the job runs again after a requeue; ``workdir``
    (``--workdir``) when the cluster config puts work directories on shared scratch.
    """
    if nodes < 1:
        raise ConfigError(f"--nodes must be >= 1, got {nodes!r}")
    if nodes > 1 and settings.interface is None:
        raise ConfigError(
            f"--nodes {nodes} needs jobqueue.slurm.interface in {settings.source} (e.g. ib0 or eth0): "
            "without it the scheduler listens on 127.0.0.1, which workers on other nodes cannot reach"
        )
    now = datetime.datetime.now()
    name = f"diffuse-{command[0]}"
    logs = Path(settings.log_directory)
    job = BatchJob(
        name=name,
        script="",
        script_path=logs / f"{name}-{now:%Y%m%d-%H%M%S}.sbatch",
        log_pattern=logs / f"{name}-%j.log",
        nodes=nodes,
        workers=nodes * settings.processes,
        resources=describe_job(settings),
    )
    threads = max(1, settings.cores // settings.processes)
    listen = f"--interface {shlex.quote(settings.interface)}" if settings.interface else "--host 127.0.0.1"
    resume = shlex.join(resume_args)
    script = SCRIPT.substitute(
        date=f"{now:%Y-%m-%d %H:%M}",
        source=settings.source,
        command=shlex.join(command),
        nodes=nodes,
        processes=settings.processes,
        directives="\n".join(f"#SBATCH {d}" for d in _directives(job, settings)),
        prologue="\n".join([*malloc_exports(), *settings.job_script_prologue]),
        python=_dq(settings.python),
        logs=shlex.quote(str(logs)),
        listen=listen,
        dashboard=shlex.quote(settings.dashboard_address),
        threads=threads,
        worker_memory=settings.worker_memory,
        death_timeout=f"{settings.death_timeout:g}",
        local=f" --local-directory {_dq(settings.local_directory)}" if settings.local_directory else "",
        resume=RESUME_LINE.format(args=resume) if resume else NO_RESUME_LINE,
        args=shlex.join([*command, *(["--workdir", workdir] if workdir else [])]),
        workers=job.workers,
    )
    return dataclasses.replace(job, script=script)


def _directives(job: BatchJob, settings: SlurmSettings) -> list[str]:
    """The #SBATCH options: one node's resources from the cluster config, log, requeue."""
    directives = [
        f"--job-name={job.name}",
        f"--nodes={job.nodes}",
        f"--ntasks-per-node={settings.processes}",
        f"--cpus-per-task={max(1, settings.cores // settings.processes)}",
        f"--mem={math.ceil(settings.memory / 2**20)}M",
    ]
    if settings.walltime:
        directives.append(f"--time={settings.walltime}")
    if settings.queue:
        directives.append(f"--partition={settings.queue}")
    if settings.account:
        directives.append(f"--account={settings.account}")
    return [
        *directives,
        f"--output={job.log_pattern}",
        "--open-mode=append",  # a requeued run adds to the same log
        "--requeue",
        f"--chdir={os.getcwd()}",
        *settings.job_extra_directives,
    ]


def submit_batch_job(job: BatchJob) -> str:
    """Write the script next to the logs and submit it; return SLURM's job id."""
    job.script_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(job.script_path, job.script)
    try:
        out = subprocess.run(
            ["sbatch", "--parsable", str(job.script_path)], capture_output=True, text=True, timeout=120
        )
    except FileNotFoundError:
        raise ConfigError("sbatch not found: submit from a machine where SLURM's commands work") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(
            "sbatch did not answer within 120 s; is the SLURM controller up? (try sinfo)"
        ) from None
    if out.returncode != 0:
        message = sbatch_message(out.stderr) or out.stderr.strip() or f"exit status {out.returncode}"
        raise ConfigError(
            f"sbatch refused the batch job [{job.nodes} node(s), each {job.resources}]: {message}"
        )
    return out.stdout.strip().split(";")[0]
