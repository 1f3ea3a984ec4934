"""The exceptions a user can cause, apart from the ones that are bugs.

The CLI prints a :class:`PipelineError` as one line and exits with status 1; any other exception is a
bug and keeps its traceback. A task that fails on a worker with a :class:`PipelineError` is reported
once, by the client: the worker's own "Compute Failed" log record (a traceback on the worker's stderr,
which for a local cluster is the user's terminal) is dropped by :func:`quiet_worker_reports`.
"""

import logging

__all__ = [
    "ConfigError",
    "DiskFullError",
    "InputError",
    "OutputInUseError",
    "PipelineError",
    "quiet_worker_reports",
]


class PipelineError(Exception):
    """Base class of errors caused by the user's input, files or configuration."""


class InputError(PipelineError, ValueError):
    """An input file is missing, truncated or disagrees with another input.

    The message names the file and says what was expected and what was found.
    """


class ConfigError(PipelineError, ValueError):
    """An option or configuration value is invalid; the message gives the value and the valid range."""


class OutputInUseError(PipelineError):
    """Another live run holds the lock of this output (see :mod:`pipeline.io.lock`); the message names
    that run (command, PID, host, start time)."""


class DiskFullError(PipelineError):
    """A write failed for lack of space (ENOSPC, a quota, or a short write) on the filesystem of
    ``path``. ``needs`` (set by the step that knows, from :mod:`pipeline.graph.estimate`) says how much
    space the run needs; the message names the path, the free space and, when known, the need."""

    def __init__(self, path: str, free: int | None = None, needs: str = ""):
        super().__init__(path, free, needs)
        self.path, self.free, self.needs = str(path), free, needs

    def __str__(self) -> str:
        free = "" if self.free is None else f" ({_size(self.free)} free)"
        needs = f"; {self.needs}" if self.needs else ""
        return f"no space left on the device writing {self.path!r}{free}{needs}"


def _is_user_error_report(record: logging.LogRecord) -> bool:
    """A worker's "Compute Failed" record whose exception (its repr, the record's 4th argument) is one of
    ours: the client re-raises it and the CLI prints it as one line."""
    if not str(record.msg).startswith("Compute Failed") or not isinstance(record.args, tuple):
        return False
    text = str(record.args[3]) if len(record.args) > 3 else ""
    return text.startswith(tuple(f"{cls.__name__}(" for cls in _user_errors()))


def _user_errors() -> list[type]:
    found, todo = [], [PipelineError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def _drop_user_error_reports(record: logging.LogRecord) -> bool:
    return not _is_user_error_report(record)


def _drop_cancelled_reports(record: logging.LogRecord) -> bool:
    """A worker's "Async instruction ... ended with CancelledError": a task we cancelled while the
    cluster shuts down (Ctrl-C, SIGTERM, an error elsewhere), not news for the user."""
    return "ended with CancelledError" not in str(record.msg)


def quiet_worker_reports() -> None:
    """Drop dask workers' "Compute Failed" records of our errors and the warnings about the tasks
    cancelled at shut-down (idempotent; called when the package is imported, so in every worker
    process that runs one of our tasks)."""
    for name, drop in (
        ("distributed.worker", _drop_user_error_reports),
        ("distributed.worker.state_machine", _drop_cancelled_reports),
    ):
        logger = logging.getLogger(name)
        if drop not in logger.filters:
            logger.addFilter(drop)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover
