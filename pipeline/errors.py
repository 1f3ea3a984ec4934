"""The exceptions a user can cause, apart from the ones that are bugs.

The CLI prints a :class:`PipelineError` as one line and exits with status 1; any other exception is a
bug and keeps its traceback.
"""

__all__ = ["ConfigError", "InputError", "OutputInUseError", "PipelineError"]


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
