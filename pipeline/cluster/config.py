"""Cluster configuration: which file a ``--cluster`` value names, and the settings it resolves to.

A cluster config (``cluster/configs/*.yaml``) is a plain dask config file: ``jobqueue.slurm.*`` for
dask-jobqueue, ``temporary-directory`` and ``distributed.*`` for dask, ``diffuse.cluster.*`` for us.
Precedence, lowest first:

1. package defaults (``pipeline/pipeline.yaml``, dask-jobqueue's ``jobqueue.yaml``);
2. the user's dask config (``~/.config/dask/*.yaml``, ``DASK_*`` environment variables);
3. the cluster config file, except its keys that are null ("keep what 1 and 2 say");
4. command-line flags: ``--workers``, ``--memory-limit``, ``--partition``, ``--account``, ``--walltime``.

:func:`apply_cluster_config` puts 3 into :mod:`dask.config` for the life of a cluster; then
:func:`resolve_local` or :func:`resolve_slurm` adds 4 and validates everything once, into a frozen
:class:`LocalSettings` or :class:`SlurmSettings`, the only thing the cluster code reads.

The shipped files live in ``pipeline/cluster/configs/`` (package data, so an installed package has
them too); ``cluster/configs/`` at the top of the source tree is a symbolic link to that directory.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.config import config_overrides, get_default
from pipeline.errors import ConfigError

__all__ = [
    "CONFIG_DIR",
    "SHIPPED_CONFIGS",
    "ClusterFile",
    "LocalSettings",
    "SlurmSettings",
    "apply_cluster_config",
    "default_workers",
    "describe_job",
    "describe_slurm",
    "find_cluster_config",
    "format_seconds",
    "import_jobqueue",
    "read_cluster_config",
    "resolve_local",
    "resolve_slurm",
    "walltime_seconds",
]

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).with_name("configs")
SHIPPED_CONFIGS = ("local", "slurm", "slurm-shared-scratch")
NAMED_SPECS = ("local", "slurm")  # what --cluster accepts by name; the other shipped files are examples
CLUSTER_TYPES = ("local", "slurm")


def default_workers() -> int:
    """One single-threaded worker process per CPU this process may use (HDF5 serialises threads)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def import_jobqueue():
    """Import dask_jobqueue (which registers the ``jobqueue.*`` defaults), keeping our SIGINT handler.

    dask_jobqueue's runner module makes SIGINT call ``sys.exit()`` on import: Ctrl-C would then end a
    run with exit status 0 instead of KeyboardInterrupt.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    import dask_jobqueue

    if main and previous is not None:
        signal.signal(signal.SIGINT, previous)
    return dask_jobqueue


def register_distributed_defaults() -> None:
    """Put distributed's default config under ``distributed.*`` without importing it (0.4 s).

    ``dask.config.set`` undoes a key it inserted by deleting it on exit. Were ``distributed`` first
    imported inside :func:`apply_cluster_config` (whose file sets ``distributed.*`` keys), its defaults
    would go into that inserted subtree and vanish with it, and the next cluster started in the
    process would fail (KeyError 'comm'). Registered before, they outlive the block; distributed's
    own import registers the same file again.
    """
    import importlib.util

    import dask.config

    if "distributed" in dask.config.config:
        return

    spec = importlib.util.find_spec("distributed")
    if spec is None or not spec.submodule_search_locations:
        return
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's: 2 ms instead of 14
    with open(Path(spec.submodule_search_locations[0]) / "distributed.yaml", encoding="utf-8") as f:
        dask.config.update_defaults(yaml.load(f, Loader=loader))  # a safe loader


# ---------------------------------------------------------------------------------------------- files


@dataclass(frozen=True)
class ClusterFile:
    """A cluster config file: its type (local or slurm) and its non-null keys as dotted names."""

    path: str
    type: str
    settings: dict = field(default_factory=dict)


def find_cluster_config(spec: str) -> Path:
    """The file ``spec`` names: ``local`` and ``slurm`` are the shipped files, anything else a path."""
    if spec in NAMED_SPECS:
        return CONFIG_DIR / f"{spec}.yaml"
    path = Path(os.path.expandvars(spec)).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(
            f"unknown cluster {spec!r}; expected local, slurm, a cluster config .yaml, tcp://host:port of a "
            "running scheduler, or a scheduler file .json"
        )
    if not path.is_file():
        raise ConfigError(
            f"cluster config {spec!r} not found; copy a shipped one: diffuse cluster-config slurm > my.yaml"
        )
    return path


def _flatten(mapping: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1, "c": None}}`` -> ``{"a.b": 1}``: leaves only, null leaves left out."""
    out = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        elif value is not None:
            out[name] = value
    return out


def read_cluster_config(spec: str) -> ClusterFile:
    """Read and check the cluster config ``spec`` names (see :func:`find_cluster_config`)."""
    path = find_cluster_config(spec)
    try:
        with open(path) as f:
            content = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        # one line; safe_load builds plain data only: python tags (!!python/object ...) are errors here
        detail = " ".join(str(exc).split())
        raise ConfigError(
            f"cluster config {str(path)!r} is not valid YAML (or uses tags): {detail}"
        ) from None
    if content is None:
        content = {}
    if not isinstance(content, dict):
        raise ConfigError(
            f"cluster config {str(path)!r} must be a mapping of dask config keys, got {content!r}"
        )
    settings = _flatten(content)
    kind = settings.pop("diffuse.cluster.type", "slurm" if "jobqueue" in content else "local")
    if kind not in CLUSTER_TYPES:
        raise ConfigError(
            f"cluster config {str(path)!r}: diffuse.cluster.type must be one of {CLUSTER_TYPES}, got {kind!r}"
        )
    return ClusterFile(os.path.abspath(path), kind, settings)


@contextlib.contextmanager
def apply_cluster_config(file: ClusterFile) -> Iterator[ClusterFile]:
    """Put the file's keys into :mod:`dask.config` (and its ``diffuse.*`` keys before the package's,
    :func:`~pipeline.config.config_overrides`) until the block ends."""
    import dask.config

    if file.type == "slurm":
        import_jobqueue()  # register dask-jobqueue's defaults first, so the file's keys override them
    if any(key.split(".")[0] == "distributed" for key in file.settings):
        register_distributed_defaults()
    log.debug("cluster config %s: %s", file.path, file.settings)
    with dask.config.set(file.settings), config_overrides(file.settings):
        yield file


# ---------------------------------------------------------------------------------------------- values


def _positive_int(value, name: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r} ({source})")
    return int(value)


def _bytes(value, name: str, source: str) -> int:
    from dask.utils import parse_bytes

    try:
        n = parse_bytes(value) if isinstance(value, str) else int(value)
    except (ValueError, TypeError):
        n = -1
    if n <= 0:
        raise ConfigError(f"{name} must be an amount of memory such as 4GB, got {value!r} ({source})")
    return n


_WALLTIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")


def walltime_seconds(text: str) -> int:
    """Seconds in a SLURM time limit: M, M:S, H:M:S, D-H, D-H:M or D-H:M:S (as sbatch --time reads it)."""
    m = _WALLTIME.match(str(text).strip())
    if not m:
        raise ConfigError(f"walltime must look like 01:30:00 or 2-00:00:00 (SLURM's --time), got {text!r}")
    d, a, b, c = (int(g) if g is not None else None for g in m.group("d", "a", "b", "c"))
    if d is None:  # M | M:S | H:M:S
        h, mi, s = (a, b, c) if c is not None else (0, a, b or 0)
    else:  # D-H | D-H:M | D-H:M:S
        h, mi, s = a, b or 0, c or 0
    seconds = (d or 0) * 86400 + h * 3600 + mi * 60 + s
    if seconds <= 0:
        raise ConfigError(f"walltime must be longer than 0, got {text!r}")
    return seconds


def _lifetime_seconds(args: tuple[str, ...]) -> float:
    """``--lifetime`` + ``--lifetime-stagger`` of dask worker arguments, in seconds (0 when not set)."""
    from dask.utils import parse_timedelta

    total = 0.0
    for flag in ("--lifetime", "--lifetime-stagger"):
        for i, arg in enumerate(args):
            value = arg.split("=", 1)[1] if arg.startswith(flag + "=") else None
            if arg == flag and i + 1 < len(args):
                value = args[i + 1]
            if value is not None:
                total += parse_timedelta(value)
    return total


def _path(value) -> str | None:
    """A directory from the config with ~ and $VARIABLES expanded here, made absolute."""
    if value is None:
        return None
    return os.path.abspath(os.path.expanduser(os.path.expandvars(str(value))))


def _strings(value, name: str, source: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not all(isinstance(v, str | int | float) for v in value):
        raise ConfigError(f"{name} must be a list of strings, got {value!r} ({source})")
    return tuple(str(v) for v in value)


# ---------------------------------------------------------------------------------------------- local


@dataclass(frozen=True)
class LocalSettings:
    """A local cluster: ``workers`` single-threaded processes on this machine, or (``processes``
    false) one worker inside this process with ``workers`` threads."""

    workers: int
    memory_limit: str | int
    dashboard_address: str
    source: str
    processes: bool = True


def resolve_local(
    source: str, *, workers: int | None = None, memory_limit=None, threads_ok: bool = False
) -> LocalSettings:
    """Local settings from :mod:`dask.config` (with the cluster config applied) and the flags.

    ``processes: auto`` means threads when ``threads_ok`` (the caller knows its reads release the
    GIL, see :func:`pipeline.io.images.reads_release_the_gil`), processes otherwise."""
    n = workers if workers is not None else get_default("cluster.workers")
    n = default_workers() if n is None else _positive_int(n, "workers", source)
    limit = memory_limit if memory_limit is not None else get_default("cluster.memory-limit")
    if limit is None:
        limit = "auto"
    if limit != "auto":
        _bytes(limit, "memory-limit", source)
    processes = get_default("cluster.processes")
    if processes is None or processes == "auto":
        processes = not threads_ok
    elif not isinstance(processes, bool):
        raise ConfigError(
            f"{source}: diffuse.cluster.processes must be true, false or auto, got {processes!r}"
        )
    return LocalSettings(n, limit, str(get_default("cluster.dashboard-address")), source, processes)


# ---------------------------------------------------------------------------------------------- slurm


@dataclass(frozen=True)
class SlurmSettings:
    """SLURM jobs of dask workers: ``jobs`` jobs of ``processes`` single-node worker processes each."""

    jobs: int
    cores: int
    processes: int
    memory: int  # bytes per job (sbatch --mem)
    walltime: str | None
    queue: str | None
    account: str | None
    interface: str | None  # None: scheduler and workers on 127.0.0.1 (one node)
    local_directory: str | None  # expanded on the node ($TMPDIR)
    log_directory: str
    death_timeout: float
    worker_extra_args: tuple[str, ...]
    job_script_prologue: tuple[str, ...]
    job_extra_directives: tuple[str, ...]
    python: str
    job_name: str
    adapt_maximum: int | None
    wait_timeout: float
    dashboard_address: str
    scheduler_options: dict
    source: str

    @property
    def workers(self) -> int:
        """Worker processes in all jobs."""
        return self.jobs * self.processes

    @property
    def worker_memory(self) -> int:
        """Memory limit of one worker process, bytes."""
        return self.memory // self.processes


def resolve_slurm(
    source: str,
    *,
    workers: int | None = None,
    memory_limit=None,
    partition: str | None = None,
    account: str | None = None,
    walltime: str | None = None,
) -> SlurmSettings:
    """SLURM settings from :mod:`dask.config` (with the cluster config applied) and the flags.

    ``workers`` is the number of jobs; ``memory_limit`` is per worker process, so a job asks for
    ``memory_limit x processes``.
    """
    import dask.config
    from dask.utils import parse_timedelta

    import_jobqueue()  # dask-jobqueue's defaults sit below the cluster config

    def jq(key):
        return dask.config.get(f"jobqueue.slurm.{key}", None)

    cores, processes, memory = _job_size(jq, memory_limit, source)
    walltime = walltime if walltime is not None else jq("walltime")
    if walltime is not None:
        walltime_seconds(walltime)
    jobs = workers if workers is not None else get_default("cluster.workers")
    jobs = 1 if jobs is None else _positive_int(jobs, "workers (SLURM jobs)", source)
    adapt_maximum = get_default("cluster.adapt-maximum")
    if adapt_maximum is not None:
        adapt_maximum = max(jobs, _positive_int(adapt_maximum, "diffuse.cluster.adapt-maximum", source))
    settings = SlurmSettings(
        jobs=jobs,
        cores=cores,
        processes=processes,
        memory=memory,
        walltime=None if walltime is None else str(walltime),
        queue=partition if partition is not None else jq("queue"),
        account=account if account is not None else jq("account"),
        interface=jq("interface"),
        local_directory=None if jq("local-directory") is None else str(jq("local-directory")),
        log_directory=_path(jq("log-directory")) or os.getcwd(),
        death_timeout=float(parse_timedelta(jq("death-timeout") or 60, default="s")),
        worker_extra_args=_strings(jq("worker-extra-args"), "jobqueue.slurm.worker-extra-args", source),
        job_script_prologue=_strings(jq("job-script-prologue"), "jobqueue.slurm.job-script-prologue", source),
        job_extra_directives=_strings(
            jq("job-extra-directives"), "jobqueue.slurm.job-extra-directives", source
        ),
        python=os.path.expandvars(jq("python") or sys.executable),
        job_name=str(jq("name") or "diffuse-worker"),
        adapt_maximum=adapt_maximum,
        wait_timeout=float(parse_timedelta(get_default("cluster.wait-timeout"), default="s")),
        dashboard_address=str(get_default("cluster.dashboard-address")),
        scheduler_options=dict(jq("scheduler-options") or {}),
        source=source,
    )
    _warn_lifetime(settings)
    log.debug("SLURM settings: %s", settings)
    return settings


def _job_size(jq, memory_limit, source: str) -> tuple[int, int, int]:
    """CPUs, worker processes and memory (bytes) of one job; ``memory_limit`` is per process."""
    cores = _positive_int(jq("cores") or 0, "jobqueue.slurm.cores", source)
    processes = _positive_int(jq("processes") or cores, "jobqueue.slurm.processes", source)
    if processes > cores:
        raise ConfigError(
            f"jobqueue.slurm.processes ({processes}) must not exceed cores ({cores}) ({source})"
        )
    if memory_limit is not None:
        return cores, processes, _bytes(memory_limit, "--memory-limit", source) * processes
    return cores, processes, _bytes(jq("memory") or 0, "jobqueue.slurm.memory", source)


def _warn_lifetime(settings: SlurmSettings) -> None:
    """Workers should retire (``--lifetime``) before SLURM kills their job at the walltime."""
    lifetime = _lifetime_seconds(settings.worker_extra_args)
    if not lifetime or settings.walltime is None:
        return
    limit = walltime_seconds(settings.walltime)
    if lifetime >= limit:
        log.warning(
            "worker --lifetime + --lifetime-stagger (%s) is not shorter than the walltime %s: SLURM will "
            "kill workers before they retire (their tasks run again elsewhere); lower --lifetime in %s",
            format_seconds(lifetime),
            settings.walltime,
            settings.source,
        )


def format_seconds(seconds: float) -> str:
    """``3300`` -> ``55m``; ``5400`` -> ``1h30m``."""
    minutes = math.ceil(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def describe_job(settings: SlurmSettings) -> str:
    """What one job asks for: ``1 CPU, 3.73 GiB, walltime 01:00:00, partition debug``."""
    from dask.utils import format_bytes

    parts = [f"{settings.cores} CPU{'s' * (settings.cores != 1)}", format_bytes(settings.memory)]
    if settings.walltime:
        parts.append(f"walltime {settings.walltime}")
    parts.append(f"partition {settings.queue}" if settings.queue else "default partition")
    if settings.account:
        parts.append(f"account {settings.account}")
    return ", ".join(parts)


def describe_slurm(settings: SlurmSettings) -> str:
    """For logs: ``2 jobs of 1 worker, each 1 CPU, 3.73 GiB, walltime 01:00:00, default partition``."""
    jobs = f"{settings.jobs} job{'s' * (settings.jobs != 1)}"
    workers = f"{settings.processes} worker{'s' * (settings.processes != 1)}"
    return f"{jobs} of {workers}, each {describe_job(settings)}"
