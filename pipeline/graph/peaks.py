"""find-peaks and mask-peaks as tasks over whole storage chunks of the image stack.

find-peaks: each task reads one block of whole storage chunks (one chunk along phi, a run of chunk
rows along y, every x) and returns the indices of its pixels above the threshold, already in mdx2's
order (storage chunks phi-major, then y, then x; C order inside a chunk). Concatenating the tasks'
results in plan order gives mdx2's peak table row for row.

mask-peaks: each task computes whole storage chunks (mdx2's unit: the interpolation's axis order,
and so the last bits of the Miller indices, depend on the chunk's shape), ORs in the threshold peaks
that fall inside, and returns the chunks of the output dataset already gzip-compressed: a few kB per
task through the scheduler, no compression work in the writer.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from pipeline.graph.run_tasks import run_tasks
from pipeline.io.images import MASKED_VALUE, ImageStack, storage_chunk_slices
from pipeline.io.peaks import compress_mask_chunk
from pipeline.kernels.interpolate import MillerBlock, prepare_miller_block
from pipeline.kernels.peaks import GaussianPeak, peak_mask_slab, threshold_pixels

__all__ = [
    "FindTask",
    "MaskTask",
    "mask_chunks",
    "plan_find",
    "plan_mask",
    "run_find_task",
    "run_local_or_cluster",
    "run_mask_task",
    "search_peaks",
]

Slices = tuple[slice, slice, slice]

#: Pixels per find-peaks task (whole chunk rows; at least one chunk row).
FIND_TASK_PIXELS = 16 * 2**20
#: Pixels per mask-peaks task (whole storage chunks; at least one chunk): ~150 bytes of temporaries each.
MASK_TASK_PIXELS = 8 * 2**20
#: Pixels per slab of frames inside a storage chunk (bounds the temporaries: ~150 bytes per pixel).
SLAB_PIXELS = 2 * 2**20
#: Largest uncompressed output chunk of the mask (bytes); storage chunks above it are split along phi.
MASK_CHUNK_BYTES = 8 * 2**20


@dataclass(frozen=True)
class FindTask:
    index: int
    slices: Slices  # one storage chunk along phi, whole chunk rows along y, every x
    chunks: tuple[int, int, int]  # the storage chunks (to order hits as mdx2 does)

    @property
    def n_pixels(self) -> int:
        return math.prod(s.stop - s.start for s in self.slices)


def plan_find(stack: ImageStack, task_pixels: int = FIND_TASK_PIXELS) -> list[FindTask]:
    """Tasks in mdx2's chunk order: along phi by storage chunk, along y by runs of chunk rows."""
    shape, chunks = stack.shape, stack.storage_chunks
    ys = storage_chunk_slices(shape, chunks, 1)
    tasks: list[FindTask] = []
    for p in storage_chunk_slices(shape, chunks, 0):
        row_pixels = (p.stop - p.start) * chunks[1] * shape[2]
        per_task = max(1, task_pixels // max(row_pixels, 1))
        for i in range(0, len(ys), per_task):
            y = slice(ys[i].start, ys[min(i + per_task, len(ys)) - 1].stop)
            tasks.append(FindTask(len(tasks), (p, y, slice(0, shape[2])), tuple(chunks)))
    return tasks


def order_like_mdx2(idx: np.ndarray, chunks: tuple[int, int, int]) -> np.ndarray:
    """Sort global (phi, iy, ix) indices by (chunk along phi, y, x, then phi, iy, ix): mdx2's order."""
    if len(idx) == 0:
        return idx
    c = idx // np.asarray(chunks, dtype=idx.dtype)
    order = np.lexsort((idx[:, 2], idx[:, 1], idx[:, 0], c[:, 2], c[:, 1], c[:, 0]))
    return idx[order]


def run_find_task(task: FindTask, stack: ImageStack, count_threshold: float) -> tuple[int, np.ndarray]:
    """Read the task's block; return (task index, (n, 3) int64 global indices in mdx2's order)."""
    with stack.open() as images:
        block = np.asarray(images.read(task.slices))
    idx = threshold_pixels(block, count_threshold, MASKED_VALUE)
    idx += np.array([s.start for s in task.slices], dtype=np.int64)
    return task.index, order_like_mdx2(idx, task.chunks)


@contextlib.contextmanager
def run_local_or_cluster(client, threads: int, func, tasks, *, name: str, bar=None, **kwargs):
    """:func:`~pipeline.graph.run_tasks.run_tasks` on ``client``; without one, ``threads`` threads of
    this process (the kernels are numpy and zlib/libdeflate, which release the GIL)."""
    if client is not None or threads <= 1 or len(tasks) <= 1:
        with run_tasks(client, func, tasks, name=name, bar=bar, **kwargs) as results:
            yield results
        return
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name) as pool:
        futures = [pool.submit(func, t, **kwargs) for t in tasks]
        try:

            def results():
                for f in as_completed(futures):
                    if bar is not None:
                        bar.advance()
                    yield f.result()

            yield results()
        finally:
            for f in futures:
                f.cancel()


def search_peaks(
    stack: ImageStack, count_threshold: float, *, client=None, threads: int = 1, progress=None
) -> np.ndarray:
    """All pixels above ``count_threshold``: (n, 3) int64 indices (phi, iy, ix) in mdx2's order."""
    tasks = plan_find(stack)
    bar = progress("find peaks", len(tasks)) if progress else None
    parts: dict[int, np.ndarray] = {}
    with run_local_or_cluster(
        client,
        threads,
        run_find_task,
        tasks,
        name="find-peaks",
        bar=bar,
        stack=stack,
        count_threshold=count_threshold,
    ) as results:
        for i, idx in results:
            parts[i] = idx
    if not parts:
        return np.zeros((0, 3), dtype=np.int64)
    return np.concatenate([parts[i] for i in range(len(tasks))])


# --- mask ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskTask:
    index: int
    blocks: tuple[Slices, ...]  # storage chunks, each computed whole (mdx2's unit)
    peaks: np.ndarray  # (n, 3) int64 indices of threshold peaks inside these chunks


def mask_chunks(stack: ImageStack, max_bytes: int = MASK_CHUNK_BYTES) -> tuple[int, int, int]:
    """The output chunks: the storage chunks, with phi cut to the largest divisor that keeps a chunk
    under ``max_bytes`` (so every output chunk lies in one storage chunk)."""
    f, y, x = stack.storage_chunks
    best = 1
    for d in range(1, f + 1):
        if f % d == 0 and d * y * x <= max_bytes:
            best = d
    return (best, y, x)


def frames_of(block: MillerBlock, f0: int, f1: int) -> MillerBlock:
    """The part of ``block`` for frames ``f0:f1`` (block axis 0), with the same per-pixel operations."""
    base, weight = list(block.base), list(block.weight)
    base[0], weight[0] = base[0][f0:f1], weight[0][f0:f1]
    step1 = block.step1[f0:f1] if block.order[0] == 0 else block.step1
    return MillerBlock(block.order, step1, tuple(base), tuple(weight))


def plan_mask(stack: ImageStack, peak_index: np.ndarray | None, task_pixels: int = MASK_TASK_PIXELS):
    """Tasks of whole storage chunks, each given the threshold peaks inside its chunks."""
    shape, chunks = stack.shape, stack.storage_chunks
    blocks = [
        (p, y, x)
        for p in storage_chunk_slices(shape, chunks, 0)
        for y in storage_chunk_slices(shape, chunks, 1)
        for x in storage_chunk_slices(shape, chunks, 2)
    ]
    chunk_pixels = math.prod(chunks)
    per_task = max(1, task_pixels // chunk_pixels)
    if peak_index is not None and len(peak_index):
        grid = [len(storage_chunk_slices(shape, chunks, a)) for a in range(3)]
        c = peak_index // np.asarray(chunks, dtype=np.int64)
        flat = (c[:, 0] * grid[1] + c[:, 1]) * grid[2] + c[:, 2]  # = position in `blocks`
        order = np.argsort(flat, kind="stable")
        flat, sorted_peaks = flat[order], peak_index[order]
    else:
        flat, sorted_peaks = np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
    tasks = []
    for start in range(0, len(blocks), per_task):
        stop = min(start + per_task, len(blocks))
        lo, hi = np.searchsorted(flat, [start, stop])
        tasks.append(MaskTask(len(tasks), tuple(blocks[start:stop]), sorted_peaks[lo:hi]))
    return tasks


def run_mask_task(
    task: MaskTask,
    grid_axes,
    grid_hkl: np.ndarray,
    axes,
    model: GaussianPeak,
    sigma_cutoff: float,
    is_reflection,
    bragg: bool,
    out_chunks: tuple[int, int, int],
) -> tuple[int, list[tuple[tuple[int, int, int], bytes]], int]:
    """Mask the task's storage chunks; return (task index, [(chunk offset, gzip bytes)], masked count)."""
    parts = []
    masked = 0
    for p, y, x in task.blocks:
        shape = (p.stop - p.start, y.stop - y.start, x.stop - x.start)
        # mdx2's unit is the whole storage chunk: the interpolation's first step and axis order are
        # those of the chunk. The rest is elementwise, so it runs on slabs of frames (less memory).
        block = prepare_miller_block(grid_axes, grid_hkl, axes[0][p], axes[1][y], axes[2][x])
        mask = np.empty(shape, dtype=bool)
        step = max(1, SLAB_PIXELS // (shape[1] * shape[2]))
        for f0 in range(0, shape[0], step):
            f1 = min(f0 + step, shape[0])
            slab = frames_of(block, f0, f1)
            mask[f0:f1] = peak_mask_slab(slab, (f1 - f0, *shape[1:]), model, sigma_cutoff, is_reflection)
        if bragg:
            mask = ~mask
        else:
            inside = task.peaks
            sel = (
                (inside[:, 0] >= p.start) & (inside[:, 0] < p.stop)
                & (inside[:, 1] >= y.start) & (inside[:, 1] < y.stop)
                & (inside[:, 2] >= x.start) & (inside[:, 2] < x.stop)
            )  # fmt: skip
            q = inside[sel]
            mask[q[:, 0] - p.start, q[:, 1] - y.start, q[:, 2] - x.start] = True
        masked += int(mask.sum())
        for f0 in range(0, shape[0], out_chunks[0]):
            piece = mask[f0 : f0 + out_chunks[0]]
            if piece.shape != tuple(out_chunks):  # edge chunk: HDF5 stores it padded to full size
                full = np.zeros(out_chunks, dtype=bool)
                full[: piece.shape[0], : piece.shape[1], : piece.shape[2]] = piece
                piece = full
            parts.append(((p.start + f0, y.start, x.start), compress_mask_chunk(piece)))
    return task.index, parts, masked
