"""Bin an image series down to a coarse count-rate grid, as ``mdx2.bin_image_series`` does.

The background that ``correct`` subtracts is the mean count rate of background images (air scatter,
no crystal) on a coarse (phi, iy, ix) grid. mdx2 1.0.5 computes it like this, and so do we, to the
last bit:

1. ``nbins = ceil(shape / bins)`` sections per axis, split as ``numpy.array_split`` splits (the first
   ``n % nbins`` sections one longer); the grid axes are the means of phi, iy, ix over each section;
2. a pixel counts if it is not -1, inside ``valid_range`` (inclusive) if given, and not masked;
3. each bin's value is (sum of its valid counts) / (number of valid counts), NaN if there are none,
   divided by the mean exposure time of the bin's frames: counts per second per pixel.

Sums are exact integers, so the result does not depend on the order of summation.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError
from pipeline.io.atomic import atomic_h5, check_output_path
from pipeline.io.nexus import create_nxdata, write_mdx2_root_attrs
from pipeline.kernels.background import bin_counts, section_slices

__all__ = ["BinnedSeries", "bin_image_series", "bin_series", "write_binned"]

log = logging.getLogger(__name__)

MASKED_VALUE = -1  # mdx2 marks pixels without data (module gaps, bad pixels) with -1


@dataclass(frozen=True, eq=False)
class BinnedSeries:
    """The binned count rate (counts/s per pixel; NaN where a bin had no valid pixel) and its axes."""

    phi: np.ndarray
    iy: np.ndarray
    ix: np.ndarray
    rate: np.ndarray
    outfile: str | None = None


def _check_bins(bins) -> tuple[int, int, int]:
    try:
        bins = tuple(int(b) for b in bins)
    except TypeError:
        raise ConfigError(f"bins must be three whole numbers (frames, y, x), got {bins!r}") from None
    if len(bins) != 3 or any(b <= 0 for b in bins):
        raise ConfigError(f"bins must be three positive whole numbers (frames, y, x), got {bins!r}")
    return bins


def bin_image_series(
    data: str | os.PathLike,
    bins: Sequence[int],
    *,
    outfile: str | os.PathLike | None = "binned.nxs",
    mask: str | os.PathLike | None = None,
    valid_range: tuple[int, int] | None = None,
    overwrite: bool = False,
) -> BinnedSeries:
    """Bin the image series in ``data`` by ``bins`` = (frames, y, x) pixels into a count rate.

    Same result as ``mdx2.bin_image_series data F Y X [--mask M] [--valid_range LO HI]``; writes
    ``/entry/binned_image_series`` (GridData with axes phi, iy, ix) to ``outfile`` unless it is None.
    """
    from pipeline.io.images import open_image_stack, open_masks  # (imports numba: only when reading files)

    bins = _check_bins(bins)
    if outfile is not None:
        check_output_path(outfile, overwrite)
    stack = open_image_stack(data)
    masks = open_masks([mask], stack.shape) if mask is not None else None
    whole = (slice(0, stack.shape[1]), slice(0, stack.shape[2]))
    with stack.open() as images:
        binned = bin_series(
            lambda frames: images.read((frames, *whole)),
            (stack.phi, stack.iy, stack.ix),
            stack.exposure_times,
            bins,
            valid_range=valid_range,
            read_mask=None if masks is None else (lambda frames: masks.read((frames, *whole))),
        )
    if outfile is not None:
        write_binned(outfile, binned)
        binned = dataclasses.replace(binned, outfile=str(outfile))
    return binned


def bin_series(
    read: Callable[[slice], np.ndarray],
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    exposure_times: np.ndarray,
    bins: Sequence[int],
    *,
    valid_range: tuple[int, int] | None = None,
    read_mask: Callable[[slice], np.ndarray] | None = None,
) -> BinnedSeries:
    """Bin an image series given as ``read(frames) -> counts (frames, y, x)`` (see the module docstring).

    ``axes`` are phi, iy, ix of the series; ``read_mask(frames)`` gives pixels to exclude (True).
    """
    bins = _check_bins(bins)
    if valid_range is not None and not valid_range[0] < valid_range[1]:
        raise ConfigError(f"valid_range must be (low, high) with low < high, got {valid_range!r}")
    shape = tuple(len(a) for a in axes)
    sections = [section_slices(n, -(-n // b)) for n, b in zip(shape, bins, strict=True)]
    centres = [np.array([a[s].mean() for s in secs]) for a, secs in zip(axes, sections, strict=True)]
    log.debug("binning an image series of shape %s into %s bins", shape, [len(s) for s in sections])
    rate = np.empty([len(s) for s in sections], dtype=np.float64)
    for i, frames in enumerate(sections[0]):
        block = read(frames)
        valid = block != MASKED_VALUE
        if valid_range is not None:
            valid &= (block >= valid_range[0]) & (block <= valid_range[1])
        if read_mask is not None:
            valid &= ~read_mask(frames)
        sums, numbers = bin_counts(block, valid, sections[1], sections[2])
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(numbers > 0, sums * 1.0 / numbers, np.nan)  # mdx2: masked mean -> NaN
        rate[i] = mean / np.asarray(exposure_times)[frames].mean()
    return BinnedSeries(centres[0], centres[1], centres[2], rate)


def write_binned(path: str | os.PathLike, binned: BinnedSeries) -> Path:
    """Write ``/entry/binned_image_series`` in mdx2's GridData layout."""
    with atomic_h5(path) as f:
        entry = write_mdx2_root_attrs(f)
        group = create_nxdata(entry, "binned_image_series", axes=["phi", "iy", "ix"])
        group.create_dataset("signal", data=binned.rate)
        for name in ("phi", "iy", "ix"):
            group.create_dataset(name, data=getattr(binned, name))
    return Path(path)
