"""Per-pixel correction factors on the detector grid, as mdx2's ``calc_corrections_on_grid``.

For a pixel at lab position xyz (mm), d = |xyz|, panel normal n and cos w = xyz . n / d:

    solid_angle     = px py cos w / d^2                                   (steradian)
    efficiency      = 1 - exp(-mu t / cos w)                              (sensor absorption)
    attenuation     = exp(-mu_air d)                                      (air path)
    polarization    = p (1 - (e1 . xyz/d)^2) + (1 - p) (1 - (e2 . xyz/d)^2),
                      e1 = s0^ x n_p, e2 = e1 x s0^ (n_p: polarization normal, p: fraction)
    inverse_lorentz = |(s0^ x xyz) . m2| / d                              (m2: rotation axis)
    d3s             = inverse_lorentz * solid_angle * dphi(rad) / wavelength^3   (1/Angstrom^3)

``*_oracle`` functions compute the same one pixel at a time, for tests.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.errors import InputError
from pipeline.geometry import air_table

__all__ = ["correction_factors", "correction_factors_oracle", "mu_air"]

#: keV * Angstrom: h c / e (scitbx constants.factor_kev_angstrom, CODATA 2018 exact SI values)
FACTOR_KEV_ANGSTROM = 6.62607015 * 2.99792458 / 1.602176634
AIR_MOLE_FRACTIONS = {"O": 0.210, "N": 0.781, "Ar": 0.009}  # O2, N2, Ar as in mdx2 calc_mu_air


def _mu_rho(element: str, energy_mev: float) -> float:
    """Log-log interpolation of the tabulated mass attenuation coefficient (cm^2/g)."""
    energy = air_table.ENERGY_MEV[element]
    mu_rho = air_table.MU_RHO[element]
    index = next((i for i, e in enumerate(energy) if energy_mev < e), len(energy))
    if not 0 < index < len(energy):
        raise InputError(
            f"X-ray energy {energy_mev * 1000:.4g} keV is outside the attenuation table of {element} "
            f"({energy[0] * 1000:g} to {energy[-1] * 1000:g} keV)"
        )
    x0, x1 = math.log(energy[index - 1]), math.log(energy[index])
    y0, y1 = math.log(mu_rho[index - 1]), math.log(mu_rho[index])
    return math.exp(y0 + (y1 - y0) * (math.log(energy_mev) - x0) / (x1 - x0))


def mu_air(wavelength: float) -> float:
    """Linear attenuation coefficient of air (1/mm) at ``wavelength`` (Angstrom), as mdx2's calc_mu_air."""
    energy_mev = FACTOR_KEV_ANGSTROM * 1000 / wavelength / 1e6
    return sum(
        fraction * _mu_rho(element, energy_mev) * air_table.DENSITY[element] / 10.0
        for element, fraction in AIR_MOLE_FRACTIONS.items()
    )


def correction_factors(xyz: np.ndarray, panel, beam, rotation_axis: np.ndarray, dphi: float) -> dict:
    """All six factors for lab positions ``xyz`` (..., 3) in mm; returns a dict of (...) arrays."""
    d = np.sqrt(np.sum(xyz * xyz, axis=-1))
    cosw = (xyz @ panel.normal) / d
    px, py = panel.pixel_size
    solid_angle = px * py * cosw / (d * d)
    efficiency = 1 - np.exp(-panel.mu * panel.thickness / cosw)
    attenuation = np.exp(-mu_air(beam.wavelength) * d)
    e0 = beam.unit_s0
    pv1 = np.cross(e0, beam.polarization_normal)
    pv2 = np.cross(pv1, e0)
    cos1, cos2 = (xyz @ pv1) / d, (xyz @ pv2) / d
    p = beam.polarization_fraction
    polarization = p * (1 - cos1 * cos1) + (1 - p) * (1 - cos2 * cos2)
    inverse_lorentz = np.abs(np.cross(e0, xyz) @ rotation_axis / d)
    d3s = inverse_lorentz * solid_angle * (dphi * np.pi / 180) / beam.wavelength**3
    return {
        "solid_angle": solid_angle,
        "efficiency": efficiency,
        "attenuation": attenuation,
        "polarization": polarization,
        "inverse_lorentz": inverse_lorentz,
        "d3s": d3s,
    }


def correction_factors_oracle(xyz: np.ndarray, panel, beam, rotation_axis, dphi: float) -> dict:
    """One pixel at a time with explicit geometry (angles between vectors), for testing."""
    names = ("solid_angle", "efficiency", "attenuation", "polarization", "inverse_lorentz", "d3s")
    out = {name: np.empty(xyz.shape[:-1]) for name in names}
    mu = mu_air(beam.wavelength)
    for index in np.ndindex(*xyz.shape[:-1]):
        v = xyz[index]
        dist = math.dist(v, (0.0, 0.0, 0.0))
        unit = v / dist
        cos_incidence = float(unit @ panel.normal)  # signed, as mdx2 (normal = fast x slow)
        solid = panel.pixel_size[0] * panel.pixel_size[1] * cos_incidence / dist**2
        e1 = np.cross(beam.unit_s0, beam.polarization_normal)
        e2 = np.cross(e1, beam.unit_s0)
        p = beam.polarization_fraction
        lorentz = abs(float(np.linalg.det(np.array([beam.unit_s0, unit, rotation_axis]))))
        values = (
            solid,
            1 - math.exp(-panel.mu * panel.thickness / cos_incidence),
            math.exp(-mu * dist),
            p * (1 - float(unit @ e1) ** 2) + (1 - p) * (1 - float(unit @ e2) ** 2),
            lorentz,
            lorentz * solid * math.radians(dphi) / beam.wavelength**3,
        )
        for name, value in zip(names, values, strict=True):
            out[name][index] = value
    return out
