"""Progress of long runs: a progress bar with ETA over finished tasks (rich), silent when ``quiet``."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported only when a bar is shown (~25 ms of start-up otherwise)
    from rich.progress import Progress

__all__ = ["ProgressBar", "progress_bar"]


class ProgressBar:
    """One task line on a shared rich Progress; ``advance`` after each finished task."""

    def __init__(self, progress: Progress | None, description: str, total: int):
        self._progress = progress
        self._task = progress.add_task(description, total=total, detail="") if progress is not None else None

    def advance(self, n: int = 1, detail: str | None = None) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)
            if detail is not None:
                self._progress.update(self._task, detail=detail)


@contextlib.contextmanager
def progress_bar(quiet: bool = False) -> Iterator:
    """Yield ``new(description, total) -> ProgressBar``; bars render on stderr unless ``quiet``."""
    if quiet:
        yield lambda description, total: ProgressBar(None, description, total)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(file=sys.stderr)
    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=console, transient=False, refresh_per_second=4) as progress:

        def new(description: str, total: int) -> ProgressBar:
            return ProgressBar(progress, description, total)

        yield new
