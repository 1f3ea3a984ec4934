"""Parallax correction of a thick sensor, as dxtbx's ``ParallaxCorrectedPxMmStrategy``.

An X-ray entering the sensor at an angle is absorbed, on average, a distance ``o`` (the attenuation
length) along its path below the surface, so it is detected displaced along the panel by the
projection of that path. For a ray with unit direction s1 and a sensor of thickness t0 and linear
attenuation coefficient mu, with cos(t) = s1 . n (n the panel normal pointing away from the sample):

    o = 1/mu - (t0/cos t + 1/mu) exp(-mu t0 / cos t)                       (attenuation length, mm)
    mm -> detected position:  x' = x + (s1 . fast) o,   y' = y + (s1 . slow) o   (``parallax_correction``)
    pixel -> mm:              x  = x' - (s1' . fast) o', with s1' at x'          (``parallax_correction_inv``)

(dxtbx/model/parallax_correction.h; J. Parkhurst, Diamond Light Source). The inverse is dxtbx's
first-order approximation, evaluated at the measured position, so a pixel -> mm -> pixel round trip
is exact only to second order in the displacement; we keep dxtbx's formula because mdx2 sees
exactly that mapping.

All functions take arrays of (..., 2) millimetre or pixel coordinates and broadcast.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "attenuation_length",
    "millimeter_to_pixel",
    "parallax_correction",
    "parallax_correction_inv",
    "pixel_to_millimeter",
]


def _unit_rays(xy: np.ndarray, fast: np.ndarray, slow: np.ndarray, origin: np.ndarray) -> np.ndarray:
    s1 = origin + xy[..., :1] * fast + xy[..., 1:2] * slow
    return s1 / np.linalg.norm(s1, axis=-1, keepdims=True)


def attenuation_length(mu: float, t0: float, s1: np.ndarray, fast, slow, origin) -> np.ndarray:
    """Mean depth (mm) along the ray at which an X-ray with unit direction s1 is absorbed."""
    normal = np.cross(fast, slow)
    if np.dot(origin, normal) < 0:
        normal = -normal
    cos_t = s1 @ normal
    if not (mu > 0 and np.all(cos_t > 0)):
        raise ValueError(f"attenuation length needs mu > 0 and rays entering the sensor; got mu={mu!r}")
    return 1.0 / mu - (t0 / cos_t + 1.0 / mu) * np.exp(-mu * t0 / cos_t)


def parallax_correction(mu: float, t0: float, xy, fast, slow, origin) -> np.ndarray:
    """Where a ray aimed at panel position xy (mm) is detected (mm)."""
    xy = np.asarray(xy, dtype=np.float64)
    s1 = _unit_rays(xy, fast, slow, origin)
    o = attenuation_length(mu, t0, s1, fast, slow, origin)[..., None]
    return xy + np.stack((s1 @ fast, s1 @ slow), axis=-1) * o


def parallax_correction_inv(mu: float, t0: float, xy, fast, slow, origin) -> np.ndarray:
    """dxtbx's approximate inverse: the panel position (mm) of a ray detected at xy (mm)."""
    xy = np.asarray(xy, dtype=np.float64)
    s1 = _unit_rays(xy, fast, slow, origin)
    o = attenuation_length(mu, t0, s1, fast, slow, origin)[..., None]
    return xy - np.stack((s1 @ fast, s1 @ slow), axis=-1) * o


def pixel_to_millimeter(panel, xy) -> np.ndarray:
    """Pixel coordinates -> panel millimetres (dxtbx ``Panel.pixel_to_millimeter``)."""
    mm = np.asarray(xy, dtype=np.float64) * np.asarray(panel.pixel_size, dtype=np.float64)
    if panel.parallax is None:
        return mm
    mu, t0 = panel.parallax
    return parallax_correction_inv(mu, t0, mm, panel.fast, panel.slow, panel.origin)


def millimeter_to_pixel(panel, xy) -> np.ndarray:
    """Panel millimetres -> pixel coordinates (dxtbx ``Panel.millimeter_to_pixel``)."""
    xy = np.asarray(xy, dtype=np.float64)
    if panel.parallax is not None:
        mu, t0 = panel.parallax
        xy = parallax_correction(mu, t0, xy, panel.fast, panel.slow, panel.origin)
    return xy / np.asarray(panel.pixel_size, dtype=np.float64)
