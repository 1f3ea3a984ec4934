"""Find hot pixels in an image stack by streaming over its storage chunks (``diffuse find-hot-pixels``).

1. plan: windows of whole storage chunks along phi (at least ``min_frames`` frames each) x the spatial
   storage chunks; one task per (window, spatial chunk), so every read is whole chunks;
2. map: each task reads its block (and the masks), takes the per-pixel median over the window's
   frames and compares it with its neighbourhood (:mod:`pipeline.qc.hotpixels`); it returns the hot
   pixels of that window, which pixels it could test, and pixel counts (-1, masked) - a few kB;
3. combine: a pixel is hot when it was hot in at least ``fraction`` of the windows that tested it.

Tasks run on a dask cluster when one is given or the stack is large; small stacks run in this
process, where the whole scan takes less time than starting worker processes.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from pipeline.graph.run_tasks import run_tasks
from pipeline.io.images import MASKED_VALUE, ImageStack, MaskStack, storage_chunk_slices
from pipeline.qc.hotpixels import HotPixelParams, flag_hot, frame_quantile

__all__ = ["HotPixelScan", "ScanTask", "plan_scan", "run_scan_task", "scan_images"]

log = logging.getLogger(__name__)

#: Stacks with at most this many pixels are scanned in the calling process unless a client is given
#: (about 2 s of work; a local cluster takes longer than that to start).
LOCAL_MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class ScanTask:
    index: int
    window: int
    slices: tuple[slice, slice, slice]  # (frames of the window, rows, columns of one spatial chunk)

    @property
    def n_pixels(self) -> int:
        return math.prod(s.stop - s.start for s in self.slices)


@dataclass
class HotPixelScan:
    """The hot pixels of a stack and what the scan saw."""

    shape: tuple[int, int, int]
    hot: np.ndarray  # bool (ny, nx): True = hot pixel
    pixels: list[dict]  # per hot pixel: iy, ix, windows_hot, windows_tested, level_counts (its q-quantile
    # of counts per frame), background_counts (its neighbours'), score
    windows: int
    tasks: int
    pixels_total: int = 0
    pixels_minus1: int = 0  # -1 in the data (module gaps, bad pixels)
    pixels_masked: int = 0  # True in a mask file and not already -1
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def pixels_used(self) -> int:
        return self.pixels_total - self.pixels_minus1 - self.pixels_masked

    def to_dict(self) -> dict:
        return {
            "shape": list(self.shape),
            "hot_pixels": self.pixels,
            "n_hot": len(self.pixels),
            "windows": self.windows,
            "tasks": self.tasks,
            "pixels_total": self.pixels_total,
            "pixels_minus1": self.pixels_minus1,
            "pixels_masked": self.pixels_masked,
            "pixels_used": self.pixels_used,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def _windows(n_frames: int, chunk: int, min_frames: int) -> list[tuple[int, int]]:
    """Frame ranges made of whole storage chunks, each at least ``min_frames`` long where possible."""
    step = chunk * max(1, math.ceil(min_frames / chunk))
    out = [(a, min(a + step, n_frames)) for a in range(0, n_frames, step)]
    if len(out) > 1 and out[-1][1] - out[-1][0] < min_frames:  # fold a short tail into its neighbour
        out[-2:] = [(out[-2][0], out[-1][1])]
    return out


def plan_scan(stack: ImageStack, params: HotPixelParams) -> tuple[list[ScanTask], int]:
    """One task per (window, spatial storage chunk); returns the tasks and the number of windows."""
    windows = _windows(stack.shape[0], stack.storage_chunks[0], params.min_frames)
    ys = storage_chunk_slices(stack.shape, stack.storage_chunks, 1)
    xs = storage_chunk_slices(stack.shape, stack.storage_chunks, 2)
    tasks = []
    for w, (a, b) in enumerate(windows):
        for y in ys:
            for x in xs:
                tasks.append(ScanTask(len(tasks), w, (slice(a, b), y, x)))
    return tasks, len(windows)


def run_scan_task(task: ScanTask, stack: ImageStack, masks: MaskStack | None, params: HotPixelParams) -> dict:
    """Test one block for hot pixels; returns small arrays only (see the module docstring)."""
    t0 = time.perf_counter()
    with stack.open() as images:
        block = images.read(task.slices)
    mask = masks.read(task.slices) if masks is not None else None
    minus1 = block == MASKED_VALUE
    masked = int(np.count_nonzero(mask & ~minus1)) if mask is not None else 0
    level, n_valid = frame_quantile(block, mask, params.quantile)
    hot, score, background = flag_hot(level, n_valid, params)
    yy, xx = np.nonzero(hot)
    y0, x0 = task.slices[1].start, task.slices[2].start
    return {
        "index": task.index,
        "window": task.window,
        "origin": (y0, x0),
        "shape": level.shape,
        "tested": np.packbits(n_valid > 0),
        "hot_y": (yy + y0).astype(np.int32),
        "hot_x": (xx + x0).astype(np.int32),
        "hot_level": level[yy, xx],
        "hot_background": background[yy, xx],
        "hot_score": score[yy, xx],
        "pixels": int(block.size),
        "minus1": int(np.count_nonzero(minus1)),
        "masked": masked,
        "seconds": time.perf_counter() - t0,
    }


class _Combiner:
    """Per-pixel tallies over windows, filled as task records arrive (any order)."""

    def __init__(self, ny: int, nx: int):
        self.tested = np.zeros((ny, nx), np.uint16)
        self.hot = np.zeros((ny, nx), np.uint16)
        self.best: dict[tuple[int, int], tuple[float, float, float]] = {}
        self.pixels = self.minus1 = self.masked = 0

    def add(self, r: dict) -> None:
        (y0, x0), (h, w) = r["origin"], r["shape"]
        tested = np.unpackbits(r["tested"], count=h * w).reshape(h, w).astype(bool)
        self.tested[y0 : y0 + h, x0 : x0 + w] += tested
        np.add.at(self.hot, (r["hot_y"], r["hot_x"]), 1)
        for y, x, m, b, s in zip(
            r["hot_y"], r["hot_x"], r["hot_level"], r["hot_background"], r["hot_score"], strict=True
        ):
            key = (int(y), int(x))
            if key not in self.best or s > self.best[key][2]:
                self.best[key] = (float(m), float(b), float(s))
        self.pixels += r["pixels"]
        self.minus1 += r["minus1"]
        self.masked += r["masked"]

    def result(self, fraction: float) -> tuple[np.ndarray, list[dict]]:
        need = np.maximum(np.ceil(fraction * self.tested.astype(np.float64) - 1e-9), 1)
        hot = (self.hot > 0) & (self.hot >= need)
        pixels = []
        for y, x in zip(*np.nonzero(hot), strict=True):
            m, b, s = self.best[(int(y), int(x))]
            pixels.append(
                {
                    "iy": int(y),
                    "ix": int(x),
                    "windows_hot": int(self.hot[y, x]),
                    "windows_tested": int(self.tested[y, x]),
                    "level_counts": m,
                    "background_counts": b,
                    "score": round(s, 1),
                }
            )
        pixels.sort(key=lambda p: -p["level_counts"])
        return hot, pixels


def scan_images(
    stack: ImageStack,
    masks: MaskStack | None,
    params: HotPixelParams | None = None,
    client=None,
    progress=None,
) -> HotPixelScan:
    """Find the hot pixels of ``stack`` (on ``client``'s cluster, or in this process if None)."""
    params = params or HotPixelParams()
    t0 = time.perf_counter()
    tasks, n_windows = plan_scan(stack, params)
    combiner = _Combiner(stack.shape[1], stack.shape[2])
    bar = progress("hot pixels", len(tasks)) if progress else None
    with run_tasks(
        client, run_scan_task, tasks, stack=stack, masks=masks, params=params, name="hot-pixels", bar=bar,
        detail=lambda r: f"{r['pixels'] / max(r['seconds'], 1e-9) / 1e6:.0f} Mpx/s/task",
    ) as records:  # fmt: skip
        for r in records:
            combiner.add(r)
    hot, pixels = combiner.result(params.fraction)
    log.info("%d hot pixels in %d windows of %d frames", len(pixels), n_windows, stack.shape[0])
    return HotPixelScan(
        shape=stack.shape,
        hot=hot,
        pixels=pixels,
        windows=n_windows,
        tasks=len(tasks),
        pixels_total=combiner.pixels,
        pixels_minus1=combiner.minus1,
        pixels_masked=combiner.masked,
        seconds={"scan": time.perf_counter() - t0},
    )
