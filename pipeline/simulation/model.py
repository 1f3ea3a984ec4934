"""Expected counts of a rotation photograph: pure numpy kernels (no files, no dask).

The count rate of a pixel (counts/s) is the sum of

* air scatter, falling off with s = |s1 - s0| (also in the background images);
* a water ring at s = 0.31 / Angstrom (d = 3.2 Angstrom) and a broad protein ring at 0.2 / Angstrom;
* around every reciprocal-lattice point H allowed by the space group: a diffuse halo (Gaussian in
  reciprocal space, width ``halo_width``) and a much sharper Bragg peak (width ``bragg_width``),
  both proportional to the reflection's intensity I(H) and a Wilson factor exp(-B s^2 / 2);

times the detector response (solid angle, polarization, sensor efficiency, air absorption) and the
exposure time. I(H) is the same for symmetry-equivalent H (it is a hash of a canonical
representative), exponentially distributed like acentric intensities, and 0 for systematic
absences. The Miller index of a pixel at rotation phi is (R(phi) A)^-1 s, exactly as mdx2 defines it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.simulation.experiment import Experiment

__all__ = [
    "CountModel",
    "DetectorPixels",
    "FrameModel",
    "ReflectionTable",
    "detector_pixels",
    "expected_counts",
    "frame_model",
    "isotropic_rate",
    "reflection_table",
]

_MU_AIR = 3.3e-4  # 1/mm near 1 Angstrom


@dataclass(frozen=True)
class CountModel:
    """Rates in counts/s per pixel (before the detector response); widths in 1/Angstrom."""

    air: float = 12.0
    air_central: float = 30.0
    air_decay: float = 0.08
    water: float = 45.0
    water_s: float = 0.31
    water_width: float = 0.035
    protein: float = 12.0
    protein_s: float = 0.2
    protein_width: float = 0.06
    halo: float = 60.0
    halo_width: float = 0.0022
    halo_b: float = 40.0  # diffuse halos grow with s as 1 - exp(-halo_b s^2)
    bragg: float = 4.0e4
    bragg_width: float = 0.0006
    wilson_b: float = 15.0  # Angstrom^2
    hot_rate: float = 2.0e5  # counts/s of a hot pixel
    mask_radius: float = 4.0  # Bragg mask radius in units of bragg_width


@dataclass(frozen=True, eq=False)
class DetectorPixels:
    """Per-pixel quantities that do not change with rotation (arrays of shape (ny, nx))."""

    s: tuple[np.ndarray, np.ndarray, np.ndarray]  # components of s = s1 - s0 in 1/Angstrom
    s_norm: np.ndarray  # |s|
    response: np.ndarray  # solid angle x polarization x efficiency x air transmission, max 1


@dataclass(frozen=True, eq=False)
class ReflectionTable:
    """I(H) on a box of Miller indices: ``intensity[h + hmax[0], k + hmax[1], l + hmax[2]]``."""

    hmax: np.ndarray  # (3,) int
    intensity: np.ndarray  # float64, 0 for systematic absences

    def lookup(self, h: np.ndarray, k: np.ndarray, l: np.ndarray) -> np.ndarray:
        """I(H) of integer-valued float arrays h, k, l (indices outside the box are clipped to it)."""
        _, nk, nl = self.intensity.shape
        flat = (h + self.hmax[0]) * (nk * nl) + (k + self.hmax[1]) * nl + (l + self.hmax[2])
        return self.intensity.take(flat.astype(np.intp), mode="clip")


def detector_pixels(e: Experiment) -> DetectorPixels:
    """Scattering vectors and detector response at every pixel centre (mdx2's pixel coordinates)."""
    x = np.arange(e.nx, dtype=np.float64)
    y = np.arange(e.ny, dtype=np.float64)
    lab = e.origin + x[None, :, None] * (e.pixel_size * e.fast) + y[:, None, None] * (e.pixel_size * e.slow)
    dist = np.sqrt(np.einsum("...i,...i->...", lab, lab))
    unit = lab / dist[..., None]
    s0 = -e.beam_direction / np.linalg.norm(e.beam_direction) / e.wavelength
    s = unit / e.wavelength - s0
    normal = np.cross(e.fast, e.slow)
    cos_w = np.abs(unit @ normal)  # obliquity of the ray at the sensor
    solid_angle = e.pixel_size**2 * cos_w / dist**2
    # the polarized fraction has its E vector along polarization_normal x beam direction
    e_vec = np.cross(e.polarization_normal, e.beam_direction)
    e_vec = e_vec / np.linalg.norm(e_vec)
    f = e.polarization_fraction
    polarization = f * (1 - (unit @ e_vec) ** 2) + (1 - f) * (1 - (unit @ e.polarization_normal) ** 2)
    efficiency = 1 - np.exp(-e.mu * e.thickness / cos_w)
    air = np.exp(-_MU_AIR * dist)
    response = solid_angle * polarization * efficiency * air
    components = tuple(np.ascontiguousarray(s[..., i]) for i in range(3))
    return DetectorPixels(components, np.linalg.norm(s, axis=-1), response / response.max())


def isotropic_rate(px: DetectorPixels, m: CountModel, crystal: bool) -> np.ndarray:
    """Counts/s that depend only on |s|: air scatter, and with the crystal the water and protein rings."""
    s = px.s_norm
    rate = m.air + m.air_central * np.exp(-s / m.air_decay)
    if crystal:
        rate = rate + m.water * np.exp(-0.5 * ((s - m.water_s) / m.water_width) ** 2)
        rate = rate + m.protein * np.exp(-0.5 * ((s - m.protein_s) / m.protein_width) ** 2)
    return rate


def _hash_uniform(keys: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in (0, 1) per integer key (splitmix64), reproducible on every platform."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) / float(2**53)


def reflection_table(a_matrix: np.ndarray, hall_symbol: str, s_max: float, seed: int) -> ReflectionTable:
    """I(H) for every H with |s| <= s_max (plus a margin), from the space group's operators.

    Equivalent reflections {+-H R} share one value; H is absent when some operator (R, t) with
    H R = H has H . t not an integer.
    """
    import gemmi

    ops = list(gemmi.symops_from_hall(hall_symbol))
    real = np.linalg.inv(a_matrix)  # rows a, b, c
    hmax = np.ceil(s_max * np.linalg.norm(real, axis=1)).astype(int) + 1
    hkl = np.ogrid[-hmax[0] : hmax[0] + 1, -hmax[1] : hmax[1] + 1, -hmax[2] : hmax[2] + 1]
    shape = tuple(2 * hmax + 1)
    base = 2 * int(hmax.max()) + 3  # keys of the equivalents: digits of (H R + hmax + 1) in base `base`
    absent = np.zeros(shape, dtype=bool)
    key = np.zeros(shape, dtype=np.int64)
    for op in ops:  # x' = R x + t with R and t in units of 1 / DEN
        r = np.array(op.rot) // gemmi.Op.DEN
        image = [hkl[0] * r[0, j] + hkl[1] * r[1, j] + hkl[2] * r[2, j] for j in range(3)]  # H R
        phase = hkl[0] * op.tran[0] + hkl[1] * op.tran[1] + hkl[2] * op.tran[2]  # H . t * DEN
        fixed = (image[0] == hkl[0]) & (image[1] == hkl[1]) & (image[2] == hkl[2])
        absent |= fixed & (phase % gemmi.Op.DEN != 0)
        for sign in (1, -1):  # Friedel mates are equivalent too
            code = ((sign * image[0] + base // 2) * base + sign * image[1] + base // 2) * base
            key = np.maximum(key, code + sign * image[2] + base // 2)
    intensity = -np.log(_hash_uniform(key, seed))  # exponential, mean 1
    intensity[absent] = 0.0
    intensity[hmax[0], hmax[1], hmax[2]] = 0.0  # no reflection at the origin
    return ReflectionTable(hmax, intensity)


@dataclass(frozen=True, eq=False)
class FrameModel:
    """Per-pixel factors of the expected counts that do not change with rotation (counts per frame)."""

    pixels: DetectorPixels
    table: ReflectionTable
    steady: np.ndarray  # air, water and protein rings
    halo: np.ndarray  # halo peak height for I(H) = 1
    bragg: np.ndarray  # Bragg peak height for I(H) = 1
    model: CountModel


def frame_model(
    px: DetectorPixels, table: ReflectionTable, m: CountModel, exposure_time: float
) -> FrameModel:
    """Fold the detector response, the Wilson factor and the exposure time into per-pixel factors."""
    s2 = px.s_norm**2
    scale = px.response * exposure_time
    wilson = np.exp(-0.5 * m.wilson_b * s2) * scale
    return FrameModel(
        pixels=px,
        table=table,
        steady=isotropic_rate(px, m, crystal=True) * scale,
        halo=m.halo * (1 - np.exp(-m.halo_b * s2)) * wilson,
        bragg=m.bragg * wilson,
        model=m,
    )


def expected_counts(fm: FrameModel, ub: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean counts of one frame whose crystal has UB matrix ``ub``, and its Bragg mask (True = exclude).

    hkl = UB^-1 s at every pixel; with H the nearest lattice point, dq = UB (hkl - H) is the distance
    from it in reciprocal space. The mask covers every allowed H to ``mask_radius`` Bragg widths.
    """
    m = fm.model
    sx, sy, sz = fm.pixels.s
    inv = np.linalg.inv(ub)
    nearest, dq = [], [0.0, 0.0, 0.0]
    for row in range(3):
        hkl = inv[row, 0] * sx + inv[row, 1] * sy + inv[row, 2] * sz
        h = np.rint(hkl)
        dh = hkl - h
        for i in range(3):  # accumulate UB @ dh
            dq[i] = dq[i] + ub[i, row] * dh
        nearest.append(h)
    dq2 = dq[0] ** 2 + dq[1] ** 2 + dq[2] ** 2
    i_h = fm.table.lookup(*nearest)
    crystal = fm.halo * np.exp(dq2 * (-0.5 / m.halo_width**2)) + fm.bragg * np.exp(
        dq2 * (-0.5 / m.bragg_width**2)
    )
    mean = fm.steady + i_h * crystal
    mask = (dq2 < (m.mask_radius * m.bragg_width) ** 2) & (i_h > 0)
    return mean, mask
