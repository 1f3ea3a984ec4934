"""Disk space of an integration: a check before the run starts, and the need stated when a write
runs out of space.

A run writes three things that may sit on different filesystems: the NeXus table (``--outfile``), the
parquet dataset (``--parquet``) and the work directory (spilled partial rows and reduced parts).
:func:`check_free_space` compares the free space of each filesystem with what the run will put there
and warns when it is short. Most runs are far from full: first a bound that costs nothing (every
pixel read makes at most one partial row and one output row) is compared with the free space; only
when that bound does not fit is the need estimated: by binning a few chunks
(:func:`pipeline.graph.estimate.estimate_integration`) when they are small, else from the rows of
the first finished map task (:class:`RowsSoFar`; binning whole large chunks first would cost as much
as a good part of the run). When a write still fails
(:class:`~pipeline.errors.DiskFullError`), :func:`explain_disk_full` adds to its message how much
space the run needs on that filesystem.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from pipeline.errors import DiskFullError, _size
from pipeline.io.atomic import free_bytes

__all__ = [
    "check_free_space",
    "correct_needs",
    "explain_disk_full",
    "explained",
    "space_needs",
    "warn_if_short",
    "with_needs",
]

log = logging.getLogger(__name__)

# bytes per pixel read that a run can at most put on disk: a partial row (PARTIAL_DTYPE, 48 bytes) and
# a NeXus (44) + parquet (~8) output row per pixel
_BOUND = {"work directory": 56, "output": 44, "parquet dataset": 16}


def _device(path: str | os.PathLike) -> int | None:
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return os.stat(p).st_dev
    except OSError:
        return None


def space_needs(
    params, workdir: str | os.PathLike, estimate=None, n_pixels: int = 0
) -> list[tuple[str, str, int]]:
    """(what, path, bytes) the run writes: from ``estimate`` if given, else the per-pixel bound."""
    items = []
    if params.outfile:
        items.append(("output", params.outfile, estimate.output_nexus_bytes if estimate else None))
    if params.parquet:
        items.append(("parquet dataset", params.parquet, estimate.output_parquet_bytes if estimate else None))
    items.append(("work directory", str(workdir), estimate.scratch_bytes if estimate else None))
    return [(what, path, int(n if n is not None else _BOUND[what] * n_pixels)) for what, path, n in items]


def _by_filesystem(needs):
    groups: dict[int | None, list] = {}
    for item in needs:
        groups.setdefault(_device(item[1]), []).append(item)
    return groups


def _shortfalls(needs) -> list[tuple[list, int, int]]:
    out = []
    for items in _by_filesystem(needs).values():
        free = free_bytes(items[0][1])
        total = sum(n for _, _, n in items)
        if free is not None and free < total:
            out.append((items, free, total))
    return out


def _describe(items, total: int) -> str:
    parts = ", ".join(f"{what} {_size(n)}" for what, _, n in items)
    return f"about {_size(total)} ({parts})"


class RowsSoFar:
    """Partial rows per pixel read, from the map tasks finished so far: the same ratio estimator as
    :mod:`pipeline.graph.estimate`, at no cost (used when sampling chunks first would be expensive)."""

    def __init__(self, n_pixels: int):
        self.n_pixels, self.rows, self.pixels = n_pixels, 0, 0

    def add(self, record: dict) -> None:
        self.rows += int(record["rows"])
        self.pixels += int(record["pixels_read"])

    def estimate(self):
        from pipeline.graph.estimate import MEMORY
        from pipeline.kernels.binning import PARTIAL_DTYPE

        partial = self.rows / max(self.pixels, 1) * self.n_pixels
        # output rows <= partial rows: an upper bound of the outputs

        class _E:
            scratch_bytes = int(partial * PARTIAL_DTYPE.itemsize)
            output_nexus_bytes = int(partial * MEMORY["nexus_row"])
            output_parquet_bytes = int(partial * MEMORY["parquet_row"])

        return _E()


# sampling more than this many pixels before a run costs too much: check after the first map task
CHEAP_SAMPLE_PIXELS = 2_000_000


def check_free_space(plan, workdir: str | os.PathLike, n_workers: int, worker_memory: int):
    """Warn (log) for each filesystem with less free space than the run will write there (see the
    module docstring). Returns the estimate if one was made, ``"after-first-task"`` when sampling
    chunks now would be expensive (the caller checks again with :class:`RowsSoFar`), else None."""
    if not _shortfalls(space_needs(plan.params, workdir, n_pixels=plan.stack.n_pixels)):
        return None
    import math

    samples = 4
    if samples * math.prod(plan.stack.storage_chunks) > max(CHEAP_SAMPLE_PIXELS, plan.stack.n_pixels // 100):
        return "after-first-task"
    from pipeline.graph.estimate import estimate_integration

    try:
        est = estimate_integration(
            plan.params, n_workers, worker_memory, n_samples=samples, pairs_per_axis=0, plan=plan
        )
    except Exception as exc:  # only a warning: the run itself reports bad input properly
        log.debug("free-space estimate failed: %s", exc)
        return None
    warn_if_short(space_needs(plan.params, workdir, est))
    return est


def explain_disk_full(
    exc: DiskFullError, plan, workdir: str | os.PathLike, n_workers: int, worker_memory: int, estimate=None
) -> DiskFullError:
    """``exc`` with what the run needs on the filesystem that filled up (estimated now if need be)."""
    if estimate is None or isinstance(estimate, str):
        from pipeline.graph.estimate import estimate_integration

        try:
            estimate = estimate_integration(
                plan.params, n_workers, worker_memory, n_samples=4, pairs_per_axis=0, plan=plan
            )
        except Exception as err:  # the message without the need is still right
            log.debug("estimate for the disk-full message failed: %s", err)
            return exc
    return with_needs(exc, space_needs(plan.params, workdir, estimate))


def warn_if_short(needs) -> None:
    """Log a warning for each filesystem with less free space than ``needs`` (what, path, bytes) put there."""
    for items, free, total in _shortfalls(needs):
        where = ", ".join(repr(str(p)) for _, p, _ in items)
        log.warning(
            "only %s free on the filesystem of %s; this run needs %s there: it may run out of space",
            _size(free), where, _describe(items, total),
        )  # fmt: skip


def with_needs(exc: DiskFullError, needs) -> DiskFullError:
    """``exc`` with the space ``needs`` puts on its filesystem, and the free space measured now (after
    the temporaries were removed)."""
    device = _device(exc.path)
    items = [item for item in needs if _device(item[1]) == device] or list(needs)
    total = sum(n for _, _, n in items)
    exc.free = free_bytes(exc.path)
    exc.needs = (
        f"this run needs {_describe(items, total)} on that filesystem ('diffuse estimate' tells before a run)"
    )
    return exc


@contextlib.contextmanager
def explained(needs):
    """Add ``needs`` to a :class:`DiskFullError` leaving the block (put it outside the blocks that
    remove temporaries, so the free space it reports is measured after them)."""
    try:
        yield
    except DiskFullError as exc:
        raise with_needs(exc, needs) from None


#: bytes per row of correct's outputs: 12 four-byte columns in NeXus (and the cluster's parts); parquet
CORRECTED_ROW = {"output": 48, "parquet dataset": 24, "work directory": 48}


def correct_needs(params, n_rows: int, workdir=None) -> list[tuple[str, str, int]]:
    """(what, path, bytes) that correct writes for ``n_rows`` rows."""
    items = []
    if params.outfile:
        items.append(("output", params.outfile, n_rows * CORRECTED_ROW["output"]))
    if params.parquet:
        items.append(("parquet dataset", params.parquet, n_rows * CORRECTED_ROW["parquet dataset"]))
    if workdir is not None:
        items.append(("work directory", str(workdir), n_rows * CORRECTED_ROW["work directory"]))
    return items
