"""The exceptions a user can cause, apart from the ones that are bugs.

The CLI prints a :class:`PipelineError` as one line and exits with status 1; any other exception is a
bug and keeps its traceback.
"""

__all__ = ["ConfigError", "DiskFullError", "InputError", "OutputInUseError", "PipelineError"]


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


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover
