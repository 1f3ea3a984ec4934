"""Plan an integration: validate the inputs once, then cut the image stack into map tasks.

A map task is a list of whole storage chunks (mdx2's work unit) that are adjacent in the file, about
``target-task-pixels`` pixels in all, so tasks read hundreds of MB rather than thousands of tiny
pieces; the kernel still bins each storage chunk on its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from dataclasses import dataclass

import numpy as np

from pipeline.config import IntegrateParams
from pipeline.errors import InputError
from pipeline.io.geometry import read_miller_grid
from pipeline.io.images import ImageStack, MaskStack, open_image_stack, open_masks, storage_chunk_slices
from pipeline.kernels.keys import KEY_LIMIT
from pipeline.model import MillerGrid

__all__ = ["IntegrationPlan", "MapTask", "plan_integration", "split_into_tasks"]

log = logging.getLogger(__name__)

Slices = tuple[slice, slice, slice]


@dataclass(frozen=True)
class MapTask:
    """Storage chunks binned by one task, in file order."""

    index: int
    chunks: tuple[Slices, ...]

    @property
    def n_pixels(self) -> int:
        return sum(math.prod(s.stop - s.start for s in c) for c in self.chunks)


@dataclass(frozen=True)
class GeometryRef:
    """A geometry file and a digest of the Miller grid read from it when the run was planned.

    Workers cache the grid under this key, never under the path alone: a long-lived worker (the
    in-process threads of a local run, a shared ``tcp://`` cluster) would otherwise reuse a grid read
    for an earlier run after the file was replaced.
    """

    path: str
    digest: str


def miller_grid_digest(grid: MillerGrid) -> str:
    """SHA-256 of the grid's axes and index arrays (their bytes, shapes and dtypes)."""
    sha = hashlib.sha256()
    for a in (grid.phi, grid.iy, grid.ix, grid.h, grid.k, grid.l):
        a = np.ascontiguousarray(a)
        sha.update(f"{a.dtype.str}{a.shape}".encode())
        sha.update(a.tobytes())
    return sha.hexdigest()


@dataclass(frozen=True, eq=False)
class IntegrationPlan:
    """Everything the graph needs: inputs described, parameters, and the map tasks."""

    params: IntegrateParams
    stack: ImageStack
    masks: MaskStack | None
    geometry: GeometryRef
    h_range: tuple[int, int]  # smallest and largest H any pixel can have (from the Miller grid)
    tasks: tuple[MapTask, ...]

    @property
    def ndiv(self) -> tuple[int, int, int]:
        return self.params.subdivide


def _frame_ranges(frames: np.ndarray) -> str:
    """'0-4, 7, 9-12' for a sorted array of frame numbers."""
    parts, start, prev = [], None, None
    for f in [int(x) for x in frames]:
        if start is None:
            start = prev = f
        elif f == prev + 1:
            prev = f
        else:
            parts.append(f"{start}-{prev}" if prev > start else f"{start}")
            start = prev = f
    if start is not None:
        parts.append(f"{start}-{prev}" if prev > start else f"{start}")
    return ", ".join(parts)


def check_exposure_times(stack: ImageStack) -> None:
    """Refuse zero, negative or missing exposure times (mdx2 would divide by them and write inf)."""
    bad = np.flatnonzero(~(np.isfinite(stack.exposure_times) & (stack.exposure_times > 0)))
    if bad.size:
        values = np.unique(stack.exposure_times[bad])
        raise InputError(
            f"{stack.path!r}: exposure time is {', '.join(f'{v:g}' for v in values[:3])} s on "
            f"{bad.size} of {stack.shape[0]} frames (frames {_frame_ranges(bad)}); count rates would be "
            "infinite. Pass --exposure-time SECONDS with the true exposure time per frame."
        )


def split_into_tasks(shape, chunks, target_pixels: float, min_tasks: int = 1) -> tuple[MapTask, ...]:
    """Group storage chunks into tasks of about ``target_pixels`` pixels (whole chunks, file order).

    Chunks are taken in C order (phi slabs, then rows of chunks, then chunks along x), so one task
    reads a contiguous run of chunks; at least ``min_tasks`` tasks when there are that many chunks.
    """
    along = [storage_chunk_slices(shape, chunks, axis) for axis in range(3)]
    all_chunks = [(a, b, c) for a in along[0] for b in along[1] for c in along[2]]
    total = math.prod(shape)
    n_tasks = max(math.ceil(total / max(target_pixels, 1)), min_tasks)
    n_tasks = max(1, min(n_tasks, len(all_chunks)))
    sizes = np.array([math.prod(s.stop - s.start for s in c) for c in all_chunks], dtype=float)
    # cut the cumulative pixel count into n_tasks nearly equal pieces, at chunk boundaries
    bounds = np.searchsorted(np.cumsum(sizes), np.arange(1, n_tasks) * total / n_tasks, side="left") + 1
    pieces = np.split(np.arange(len(all_chunks)), np.unique(np.clip(bounds, 1, len(all_chunks) - 1)))
    return tuple(
        MapTask(i, tuple(all_chunks[j] for j in piece)) for i, piece in enumerate(pieces) if piece.size
    )


def binning_chunks(chunks, stack: ImageStack) -> tuple[int, int, int]:
    """``--chunks`` (-1: the stack's own for that axis), each at most the stack's size."""
    if chunks is None:
        return stack.storage_chunks
    return tuple(
        min(c if c > 0 else d, n) for c, d, n in zip(chunks, stack.storage_chunks, stack.shape, strict=True)
    )


def open_binned_stack(data, chunks=None, exposure_time: float | None = None) -> ImageStack:
    """The image stack of ``data`` with ``--chunks`` (:func:`binning_chunks`) as its storage chunks:
    the grid mdx2 works by (integrate's partial observations, the order of find-peaks' pixels, the
    chunks of mask-peaks)."""
    stack = open_image_stack(data, exposure_time=exposure_time)
    return dataclasses.replace(stack, storage_chunks=binning_chunks(chunks, stack))


def plan_integration(params: IntegrateParams, n_workers: int = 1) -> IntegrationPlan:
    """Read and cross-check every input (before any work starts) and plan the map tasks.

    The binning grid (mdx2's partial-observation split) is the data's storage chunks, or ``--chunks``.
    """
    stack = open_binned_stack(params.data, params.chunks, params.exposure_time)
    check_exposure_times(stack)
    masks = open_masks(list(params.mask), stack.shape)
    grid = read_miller_grid(params.geometry)
    if stack.raw is not None:  # detector files: their scan must be the one the geometry was made for
        from pipeline.io.rawimages import check_scan_against_grid

        check_scan_against_grid(
            params.data, params.geometry, grid, stack.raw.phi0, stack.raw.dphi, stack.shape
        )
    # Pixel and frame centres must lie inside the Miller grid, or interpolation would extrapolate.
    for name, axis, centres in (
        ("phi", grid.phi, stack.phi),
        ("iy", grid.iy, stack.iy),
        ("ix", grid.ix, stack.ix),
    ):
        if centres.min() < axis[0] or centres.max() >= axis[-1]:
            raise InputError(
                f"geometry {params.geometry!r} does not cover the data: its {name} grid spans "
                f"[{axis[0]:g}, {axis[-1]:g}] but {params.data!r} has {name} from {centres.min():g} to "
                f"{centres.max():g}; were they made from the same experiment?"
            )
    h_scaled = grid.h * params.subdivide[0]
    h_range = (int(np.floor(np.nanmin(h_scaled))) - 1, int(np.ceil(np.nanmax(h_scaled))) + 1)
    for name, g, n in (
        ("h", grid.h, params.subdivide[0]),
        ("k", grid.k, params.subdivide[1]),
        ("l", grid.l, params.subdivide[2]),
    ):
        if not np.all(np.isfinite(g)):
            raise InputError(f"geometry {params.geometry!r}: the Miller grid of {name} holds NaN or inf")
        if np.abs(g).max() * n >= KEY_LIMIT:
            raise InputError(f"|{name}| x subdivide reaches {np.abs(g).max() * n:.0f}, above {KEY_LIMIT}")
    tasks = split_into_tasks(
        stack.shape,
        stack.storage_chunks,
        params.tuning.target_task_pixels,
        min_tasks=params.tuning.min_tasks_per_worker * n_workers,
    )
    log.info(
        "%d frames x %d x %d pixels in storage chunks %s -> %d map tasks",
        *stack.shape,
        stack.storage_chunks,
        len(tasks),
    )
    geometry = GeometryRef(str(params.geometry), miller_grid_digest(grid))
    from pipeline.graph.tasks import remember_miller_grid  # (tasks imports this module)

    remember_miller_grid(geometry, grid)  # map tasks run in this process need not read it again
    return IntegrationPlan(params, stack, masks, geometry, h_range, tasks)
