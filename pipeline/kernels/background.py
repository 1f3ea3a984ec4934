"""Kernels of ``bin-background`` (mdx2.bin_image_series): sections of an axis and integer sums per bin.

numpy in, numpy out; sums are exact integers, so results do not depend on the order of summation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bin_counts", "section_slices"]


def section_slices(n: int, sections: int) -> list[slice]:
    """Split ``range(n)`` into ``sections`` contiguous slices, the first ``n % sections`` one longer."""
    each, extra = divmod(n, sections)
    sizes = [each + 1] * extra + [each] * (sections - extra)
    stops = np.cumsum(sizes)
    return [slice(int(stop - size), int(stop)) for size, stop in zip(sizes, stops, strict=True)]


def bin_counts(block: np.ndarray, valid: np.ndarray, y_sections, x_sections) -> tuple[np.ndarray, np.ndarray]:
    """Integer sums and numbers of the valid counts of ``block`` (frames, y, x) per (y, x) section.

    Kernel: numpy in, numpy out. Returns two int64 arrays of shape (len(y_sections), len(x_sections)).
    """
    sums = np.where(valid, block, 0).sum(axis=0, dtype=np.int64)
    numbers = valid.sum(axis=0, dtype=np.int64)
    y_starts = [s.start for s in y_sections]
    x_starts = [s.start for s in x_sections]
    out = []
    for a in (sums, numbers):
        a = np.add.reduceat(a, y_starts, axis=0)
        out.append(np.add.reduceat(a, x_starts, axis=1))
    return out[0], out[1]
