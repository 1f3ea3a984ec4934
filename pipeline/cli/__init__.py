"""Command-line interface ``diffuse``: thin typer commands over the library functions."""

from pipeline.cli import commands  # noqa: F401  (registers every command on ``app``)
from pipeline.cli.app import app, main

__all__ = ["app", "main"]
