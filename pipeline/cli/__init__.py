"""Command-line interface ``diffuse``: thin typer commands over the library functions."""

from pipeline.cli.app import app, main
from pipeline.cli import commands  # noqa: E402,F401,I001  (registers every command on ``app``)

__all__ = ["app", "main"]
