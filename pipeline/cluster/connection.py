"""Where the work runs: a local cluster of worker processes by default, SLURM jobs, or a running scheduler.

``connect(spec)`` is the one entry point every computing command uses::

    with connect("local", workers=2) as client:
        ...

``spec`` is one of

- ``local`` (the default): worker processes on this machine (``cluster/configs/local.yaml``);
- ``slurm``: dask workers in SLURM jobs, this process runs the scheduler (``cluster/configs/slurm.yaml``);
- a path to a cluster config ``.yaml`` of either type (see ``cluster/configs/`` and
  :mod:`pipeline.cluster.config` for what overrides what);
- ``tcp://host:port`` of a running scheduler, or a scheduler file ``.json`` (``dask scheduler
  --scheduler-file``, as ``diffuse submit`` batch jobs use); with ``workers`` the client waits until
  that many workers have connected.

The scheduler and the dashboard listen on localhost unless a config says otherwise. Whatever was
started here is stopped on exit, also on errors, Ctrl-C and SIGTERM (SLURM jobs are cancelled).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.cluster.config import (
    apply_cluster_config,
    default_workers,
    read_cluster_config,
    resolve_local,
    resolve_slurm,
)
from pipeline.config import ClusterSpec, config_overrides, get_default
from pipeline.errors import ConfigError, PipelineError

__all__ = [
    "connect",
    "default_workdir",
    "default_workers",
    "in_process_cluster",
    "local_dashboard_link",
    "wait_for_workers",
]

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

SCHEDULER_PROTOCOLS = ("tcp://", "tls://", "ucx://", "inproc://")


@contextlib.contextmanager
def connect(
    cluster: ClusterSpec | str | os.PathLike | None = None,
    *,
    client: Client | None = None,
    threads_ok: bool = False,
    light: bool = False,
    local_directory: str | None = None,
    **options,
) -> Iterator[Client]:
    """Yield a :class:`distributed.Client` for ``cluster``; close what was started here on exit.

    ``cluster`` is a :class:`~pipeline.config.ClusterSpec` or just its ``cluster`` string; keyword
    ``options`` (``workers``, ``memory_limit``, ``partition``, ``account``, ``walltime``) fill in or
    replace its fields. ``workers`` counts worker processes (local), worker jobs (SLURM) or workers
    to wait for (a running scheduler); ``memory_limit`` is per worker process; the SLURM options
    override the SLURM config. An existing ``client`` is used as it is (and left open), for library
    callers and tests. ``threads_ok``: the work releases the GIL, so a local cluster with
    ``processes: auto`` runs as threads in this process (no worker start-up); with ``light`` too,
    those threads are a :class:`~pipeline.cluster.threads.ThreadClient` (no dask scheduler, no
    dashboard: about 0.9 s less per run).
    """
    spec_ = dataclasses.replace(ClusterSpec.of(cluster), **options)
    if client is not None:
        yield client
        return
    spec, workers, memory_limit = spec_.name, spec_.workers, spec_.memory_limit
    slurm_options = {"partition": spec_.partition, "account": spec_.account, "walltime": spec_.walltime}
    if spec.startswith(SCHEDULER_PROTOCOLS) or spec.endswith(".json"):
        _refuse(spec, "that scheduler runs with its own workers", memory_limit=memory_limit, **slurm_options)
        with _scheduler_client(spec, workers) as c:
            yield c
        return
    file = read_cluster_config(spec)
    if file.type == "local":
        _refuse(spec, "these options are for SLURM clusters", **slurm_options)
        with config_overrides(file.settings):  # the file's keys, without dask
            settings = resolve_local(
                file.path, workers=workers, memory_limit=memory_limit, threads_ok=threads_ok
            )
            if light and not settings.processes:  # threads of this process: no dask at all
                from pipeline.cluster.threads import ThreadClient

                with ThreadClient(settings.workers, _memory_bytes(settings.memory_limit)) as c:
                    log.info("local: %d threads in this process", settings.workers)
                    yield c
                return
        with apply_cluster_config(file), _local_client(settings, local_directory) as c:
            yield c
        return
    from pipeline.cluster.slurm import slurm_client

    with apply_cluster_config(file):
        settings = resolve_slurm(file.path, workers=workers, memory_limit=memory_limit, **slurm_options)
        with slurm_client(settings) as c:
            yield c


def _refuse(spec: str, why: str, **options) -> None:
    """Options that mean nothing for this kind of cluster are an error, not silently ignored."""
    given = [f"--{name.replace('_', '-')}" for name, value in options.items() if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} cannot be used with --cluster {spec}: {why}")


def _memory_bytes(limit) -> int | None:
    """A memory limit (bytes, "4GB", or "auto" = None: the machine's RAM) in bytes."""
    if limit in (None, "auto"):
        return None
    from dask.utils import parse_bytes

    return int(parse_bytes(limit)) if isinstance(limit, str) else int(limit)


@contextlib.contextmanager
def _local_client(settings, local_directory: str | None) -> Iterator[Client]:
    from distributed import Client, LocalCluster

    processes = settings.processes
    cluster = LocalCluster(
        n_workers=settings.workers if processes else 1,
        threads_per_worker=1 if processes else settings.workers,
        processes=processes,
        host="127.0.0.1" if processes else None,  # threads talk in-process (inproc://), not over TCP
        dashboard_address=settings.dashboard_address,
        worker_dashboard_address="127.0.0.1:0",  # an in-process worker's own page would listen on 0.0.0.0
        memory_limit=settings.memory_limit,
        local_directory=local_directory,
    )
    with cluster, Client(cluster) as c:
        kind = "worker processes" if processes else "threads in this process"
        link = c.dashboard_link if processes else local_dashboard_link(cluster)
        log.info("local cluster: %d %s, dashboard %s", settings.workers, kind, link)
        yield c


def in_process_cluster(client) -> bool:
    """True for a client of a dask cluster of threads in this process (its scheduler is inproc://)."""
    return str(getattr(client.scheduler, "address", "")).startswith("inproc://")


def local_dashboard_link(cluster) -> str:
    """The dashboard URL of an in-process cluster (its link names the host's address instead of the
    127.0.0.1 the dashboard listens on)."""
    port = cluster.scheduler.http_server.port
    return f"http://127.0.0.1:{port}/status"


@contextlib.contextmanager
def _scheduler_client(spec: str, workers: int | None) -> Iterator[Client]:
    """A client of a running scheduler (address or scheduler file); the scheduler is left running."""
    from distributed import Client

    timeout = float(get_default("cluster.wait-timeout"))
    try:
        if spec.endswith(".json"):
            _wait_for_file(Path(spec), timeout)
            c = Client(scheduler_file=spec, timeout="30s")
        else:
            c = Client(spec, timeout="30s")
    except OSError as exc:  # includes TimeoutError
        raise PipelineError(f"cannot reach the dask scheduler {spec}: {exc}") from None
    with c:
        log.info("connected to scheduler %s", c.scheduler.address)
        if workers:
            wait_for_workers(c, workers, timeout)
        yield c


def _wait_for_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise PipelineError(f"scheduler file {str(path)!r} did not appear within {timeout:g} s")
        time.sleep(0.2)


def wait_for_workers(client: Client, n: int, timeout: float) -> int:
    """Wait until ``n`` workers have connected; after ``timeout`` s go on with fewer (a warning) or fail."""
    try:
        client.wait_for_workers(n, timeout=timeout)
    except TimeoutError:
        connected = len(client.nthreads())
        if not connected:
            raise PipelineError(
                f"no dask worker connected to {client.scheduler.address} within {timeout:g} s"
            ) from None
        log.warning("only %d of %d workers connected within %g s; going on with them", connected, n, timeout)
        return connected
    return len(client.nthreads())


def default_workdir(output: str | os.PathLike) -> str | None:
    """Integrate's work directory under ``diffuse.cluster.workdir-root``, or None (next to the output).

    One directory per output file (its name plus a hash of its absolute path), so runs writing
    different outputs never share one, and a rerun (``--resume``) finds its own.
    """
    root = get_default("cluster.workdir-root")
    if root is None:
        return None
    output = Path(output).absolute()
    digest = hashlib.sha256(str(output).encode()).hexdigest()[:10]
    root = Path(os.path.expandvars(str(root))).expanduser()
    return str(root / f"{output.name}-{digest}.work")
