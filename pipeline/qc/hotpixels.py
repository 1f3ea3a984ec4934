"""Hot pixels in an image stack: pure numpy/scipy kernels on one block (frames, y, x) of counts.

A pixel is *hot in a window of frames* when a low quantile of its valid counts over those frames
stands far above its spatial neighbourhood. The quantile ``q`` (default 0.25) makes the test ask
"is it above its neighbours in at least 1 - q of the frames?": a hot pixel is, a Bragg peak or a
cosmic ray crossing the pixel in some of the frames is not::

    M         = q-quantile over the window's frames of the pixel's valid counts  (-1, masked excluded)
    B         = median of M over a size x size neighbourhood                     (local background)
    S         = 1.4826 * median over the neighbourhood of |M - B|                (local robust spread)
    sigma     = sqrt(S**2 + c_q * max(B, 0.5) / n)      (+ Poisson error of a q-quantile of n frames,
                                                          c_q = q (1 - q) / phi(Phi^-1(q))^2)
    hot       = (M - B) / sigma > z   and   M > ratio * max(B, 1)

A pixel is reported hot in the stack when it is hot in at least ``fraction`` of the windows in
which it had valid frames (hot pixels stay hot; a Bragg peak or a cosmic ray does not).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import ndtri

__all__ = ["HotPixelParams", "flag_hot", "frame_quantile", "frame_quantile_oracle"]

_SENTINEL = np.iinfo(np.int32).max


@dataclass(frozen=True)
class HotPixelParams:
    """Thresholds of the per-window test (see the module docstring)."""

    z: float = 10.0  # robust z-score above the neighbourhood
    ratio: float = 3.0  # and at least this many times the neighbourhood's median count
    size: int = 5  # neighbourhood edge (pixels, odd)
    quantile: float = 0.25  # per-pixel statistic over a window's frames (0.5 = median)
    min_frames: int = 10  # frames per window (whole storage chunks along phi; more if chunks are thinner)
    fraction: float = 0.5  # hot in at least this fraction of the windows where the pixel was valid

    def __post_init__(self):
        if not self.z > 0:
            raise ValueError(f"z must be > 0, got {self.z!r}")
        if not self.ratio >= 1:
            raise ValueError(f"ratio must be >= 1, got {self.ratio!r}")
        if int(self.size) != self.size or self.size < 3 or self.size % 2 == 0:
            raise ValueError(f"size must be an odd whole number >= 3, got {self.size!r}")
        if int(self.min_frames) < 1:
            raise ValueError(f"min_frames must be >= 1, got {self.min_frames!r}")
        if not 0 < self.quantile < 1:
            raise ValueError(f"quantile must be in (0, 1), got {self.quantile!r}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction!r}")


def frame_quantile(
    block: np.ndarray, invalid: np.ndarray | None = None, q: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """The ``q``-quantile over axis 0 of the valid counts of each pixel, and the number of valid frames.

    ``block`` (frames, y, x) integer counts, -1 = masked; ``invalid`` an optional bool array of the
    same shape (True = exclude). Returns ``(quantile float32 (y, x), NaN where no valid frame;
    n_valid int32 (y, x))``, interpolating linearly between order statistics as ``np.quantile``.
    One sort along frames; masked values sort last.
    """
    block = np.asarray(block)
    bad = block < 0 if invalid is None else (block < 0) | invalid
    n = block.shape[0] - np.count_nonzero(bad, axis=0).astype(np.int32)
    values = np.where(bad, _SENTINEL, block.astype(np.int32, copy=False))
    values.sort(axis=0)
    pos = q * np.maximum(n - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    a = np.take_along_axis(values, lo[None], axis=0)[0].astype(np.float64)
    b = np.take_along_axis(values, hi[None], axis=0)[0].astype(np.float64)
    out = np.where(n > 0, a + (b - a) * (pos - lo), np.nan).astype(np.float32)
    return out, n


def frame_quantile_oracle(
    block: np.ndarray, invalid: np.ndarray | None = None, q: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """``np.nanquantile`` reference for :func:`frame_quantile`."""
    bad = block < 0 if invalid is None else (block < 0) | invalid
    values = np.where(bad, np.nan, block.astype(np.float64))
    n = np.sum(~bad, axis=0).astype(np.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        out = np.nanquantile(values, q, axis=0)
    return out.astype(np.float32), n


def quantile_variance_factor(q: float) -> float:
    """``n * var(q-quantile of n normal draws) / sigma**2`` for large n: ``q (1 - q) / phi(Phi^-1(q))**2``
    (pi/2 for the median)."""
    z = float(ndtri(q))
    density = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    return q * (1 - q) / density**2


def flag_hot(
    level: np.ndarray, n_valid: np.ndarray, params: HotPixelParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hot pixels of one window from each pixel's ``level`` (its quantile over the window's frames):
    ``(hot bool, score float32, background float32)``, each (y, x).

    Pixels without valid frames are never hot; for the neighbourhood filters they take the median
    of the valid pixels, so module gaps and masks do not drag the local background down.
    """
    valid = n_valid > 0
    if not valid.any():
        zeros = np.zeros(level.shape, np.float32)
        return np.zeros(level.shape, bool), zeros, zeros
    fill = float(np.median(level[valid]))
    m = np.where(valid, level, fill).astype(np.float64)
    background = ndimage.median_filter(m, size=params.size, mode="reflect")
    spread = 1.4826 * ndimage.median_filter(np.abs(m - background), size=params.size, mode="reflect")
    poisson = quantile_variance_factor(params.quantile) * np.maximum(background, 0.5) / np.maximum(n_valid, 1)
    sigma = np.sqrt(spread**2 + poisson)
    score = (m - background) / sigma
    hot = valid & (score > params.z) & (m > params.ratio * np.maximum(background, 1.0))
    return hot, score.astype(np.float32), background.astype(np.float32)
