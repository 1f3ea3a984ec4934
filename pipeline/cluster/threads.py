"""A light in-process executor with the few ``distributed.Client`` methods integrate uses.

A local run whose reads release the GIL runs as threads in the command's own process. A
``distributed`` LocalCluster of threads costs about 0.9 s of every run (importing distributed, starting
the scheduler, the worker and the dashboard, stopping them) for nothing a single machine needs: the
tasks, their records and the work directory are the same. :class:`ThreadClient` runs them on a
``concurrent.futures.ThreadPoolExecutor`` instead (``connect(..., light=True)``; used unless a
performance report, which needs the dask scheduler, is asked for).
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Sequence

__all__ = ["ThreadClient"]

log = logging.getLogger(__name__)

ADDRESS = "threads://this-process"


class _Scheduler:
    address = ADDRESS


class ThreadClient:
    """``workers`` threads of this process; ``memory_limit`` (bytes, or None: the machine's RAM) is
    what the tasks share, as one worker of a LocalCluster with that many threads."""

    in_process = True
    dashboard_link = None
    scheduler = _Scheduler()

    def __init__(self, workers: int, memory_limit: int | None = None):
        import psutil

        self.workers = max(1, int(workers))
        self.memory_limit = int(memory_limit or psutil.virtual_memory().total)
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="diffuse")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Cancel what has not started and wait for the running tasks (none keeps writing after)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def map(self, func: Callable, *iterables: Sequence, pure: bool = False, key=None, **kwargs) -> list:
        return [self._pool.submit(func, *args, **kwargs) for args in zip(*iterables, strict=True)]

    @staticmethod
    def as_completed(futures):
        return concurrent.futures.as_completed(futures)

    @staticmethod
    def cancel(futures) -> None:
        for future in futures:
            future.cancel()

    def nthreads(self) -> dict[str, int]:
        return {ADDRESS: self.workers}

    def scheduler_info(self, n_workers: int = -1) -> dict:
        return {"workers": {ADDRESS: {"nthreads": self.workers, "memory_limit": self.memory_limit}}}

    def run(self, func: Callable) -> dict:
        return {ADDRESS: func()}
