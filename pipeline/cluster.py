"""Where the work runs: a local cluster of worker processes by default, or a running scheduler.

``connect(spec)`` is the one entry point every computing command uses::

    with connect("local", workers=2) as client:
        ...

``spec`` is ``local``, ``tcp://host:port`` (an existing scheduler), ``slurm`` or a path to a
cluster config YAML (see ``cluster_configs/``). The scheduler and dashboard listen on localhost
unless a config says otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from distributed import Client, LocalCluster

from pipeline.config import get_default
from pipeline.errors import ConfigError

__all__ = ["connect", "default_workers"]

log = logging.getLogger(__name__)


def default_workers() -> int:
    """One single-threaded worker process per CPU this process may use (HDF5 serialises threads)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def connect(
    spec: str | None = None,
    *,
    workers: int | None = None,
    memory_limit: str | int | None = None,
    local_directory: str | None = None,
    client: Client | None = None,
) -> Iterator[Client]:
    """Yield a :class:`distributed.Client` for ``spec``; close what was started here on exit.

    An existing ``client`` is used as it is (and left open), for library callers and tests.
    """
    if client is not None:
        yield client
        return
    spec = spec or get_default("cluster.default")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers!r}")
    if spec.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        with Client(spec, timeout="30s") as c:
            log.info("connected to scheduler %s", spec)
            yield c
        return
    if spec == "local":
        n = workers or default_workers()
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit=memory_limit if memory_limit is not None else "auto",
            local_directory=local_directory,
        )
        with cluster, Client(cluster) as c:
            log.info("local cluster: %d worker processes, dashboard %s", n, c.dashboard_link)
            yield c
        return
    raise ConfigError(
        f"unknown cluster {spec!r}; expected 'local', 'slurm', a cluster config .yaml or tcp://host:port"
    )
