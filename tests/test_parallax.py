"""Parallax correction (dxtbx ParallaxCorrectedPxMmStrategy): its known properties, and in import_geometry."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.api.import_geometry import import_geometry
from pipeline.geometry.dials import rotation_matrix
from pipeline.geometry.parallax import (
    attenuation_length,
    millimeter_to_pixel,
    parallax_correction,
    parallax_correction_inv,
    pixel_to_millimeter,
)
from pipeline.io.expt import Panel

DATA = Path(__file__).parent / "data" / "geometry"
FAST, SLOW = np.array([1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0])
ORIGIN = np.array([-40.0, 17.0, -200.0])  # normal foot at mm (40, 17)
FOOT = np.array([40.0, 17.0])
MU, T0 = 3.9596, 0.45  # Si at 12.7 keV (1/mm), 450 um sensor


def panel(parallax=(MU, T0)) -> Panel:
    return Panel(FAST, SLOW, ORIGIN, (0.172, 0.172), (487, 195), T0, MU, "SENSOR_PAD", parallax)


def oracle_correction(mu, t0, xy, fast, slow, origin):
    """dxtbx's parallax_correction for one point, written out with explicit angles."""
    ray = origin + xy[0] * fast + xy[1] * slow
    ray = ray / math.sqrt(ray @ ray)
    normal = np.cross(fast, slow)
    if origin @ normal < 0:
        normal = -normal
    path = t0 / float(ray @ normal)  # path length through the sensor
    depth = 1 / mu - (path + 1 / mu) * math.exp(-mu * path)  # mean absorption depth along the ray
    return np.array([xy[0] + float(ray @ fast) * depth, xy[1] + float(ray @ slow) * depth])


def test_vectorised_matches_oracle():
    rng = np.random.default_rng(3)
    xy = rng.uniform(-20, 100, size=(50, 2))
    got = parallax_correction(MU, T0, xy, FAST, SLOW, ORIGIN)
    want = np.array([oracle_correction(MU, T0, p, FAST, SLOW, ORIGIN) for p in xy])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)


def test_attenuation_length_is_the_absorbed_depth_integral():
    """o = integral over the path (length t/cos) of z mu exp(-mu z) dz: depth times absorption probability."""
    from scipy.integrate import quad

    for mu in (0.05, 0.5, MU, 40.0):
        for tilt in (0.0, 0.4, 0.9):
            ray = np.array([[math.sin(tilt), 0.0, -math.cos(tilt)]])
            path = T0 / math.cos(tilt)
            want, _ = quad(lambda z, mu=mu: z * mu * math.exp(-mu * z), 0, path)
            got = attenuation_length(mu, T0, ray, FAST, SLOW, ORIGIN)[0]
            assert got == pytest.approx(want, rel=1e-9)
    ray = np.array([[0.0, 0.0, -1.0]])
    # mu -> infinity: absorbed at the surface; mu -> 0: depth times a vanishing absorption probability
    assert attenuation_length(1e9, T0, ray, FAST, SLOW, ORIGIN)[0] < 1e-8
    assert attenuation_length(1e-3, T0, ray, FAST, SLOW, ORIGIN)[0] == pytest.approx(
        1e-3 * T0**2 / 2, rel=1e-3
    )


def test_no_displacement_at_normal_incidence_and_none_without_absorption_depth():
    np.testing.assert_allclose(parallax_correction(MU, T0, FOOT, FAST, SLOW, ORIGIN), FOOT, atol=1e-12)
    np.testing.assert_allclose(parallax_correction_inv(MU, T0, FOOT, FAST, SLOW, ORIGIN), FOOT, atol=1e-12)
    xy = FOOT + np.array([60.0, -25.0])
    np.testing.assert_allclose(parallax_correction(1e12, T0, xy, FAST, SLOW, ORIGIN), xy, atol=1e-9)


def test_displacement_grows_with_angle_and_points_outward():
    distances = np.linspace(0, 150, 31)
    xy = FOOT + distances[:, None] * np.array([0.6, 0.8])
    shift = parallax_correction(MU, T0, xy, FAST, SLOW, ORIGIN) - xy
    along = shift @ np.array([0.6, 0.8])
    assert np.all(np.diff(along) > 0) and along[0] == pytest.approx(0, abs=1e-12)
    np.testing.assert_allclose(shift[:, 0] * 0.8 - shift[:, 1] * 0.6, 0, atol=1e-12)  # radial
    assert along[-1] < T0  # bounded by the sensor thickness


def test_round_trip_pixel_millimetre_pixel():
    rng = np.random.default_rng(5)
    px = rng.uniform(0, 487, size=(200, 2))
    simple = panel(parallax=None)
    np.testing.assert_allclose(millimeter_to_pixel(simple, pixel_to_millimeter(simple, px)), px, atol=1e-12)
    p = panel()
    back = millimeter_to_pixel(p, pixel_to_millimeter(p, px))
    # dxtbx's inverse is first order: the round trip closes to second order in the displacement
    assert np.max(np.abs(back - px)) < 1e-3
    foot_px = FOOT / 0.172
    np.testing.assert_allclose(millimeter_to_pixel(p, pixel_to_millimeter(p, foot_px)), foot_px, atol=1e-12)


def test_rejects_rays_leaving_the_sensor():
    with pytest.raises(ValueError, match="mu"):
        attenuation_length(0.0, T0, np.array([[0.0, 0.0, -1.0]]), FAST, SLOW, ORIGIN)


def _with_parallax(tmp_path: Path, strategy: dict) -> Path:
    doc = json.loads((DATA / "p1.expt").read_text())
    doc["detector"][0]["panels"][0]["px_mm_strategy"] = strategy
    path = tmp_path / "parallax.expt"
    path.write_text(json.dumps(doc))
    return path


def test_import_geometry_applies_parallax(tmp_path):
    doc = json.loads((DATA / "p1.expt").read_text())
    out = import_geometry(
        _with_parallax(tmp_path, {"type": "ParallaxCorrectedPxMmStrategy"}), tmp_path / "g.nxs"
    )
    simple = import_geometry(DATA / "p1.expt", tmp_path / "simple.nxs")
    with h5py.File(out) as f, h5py.File(simple) as g:
        h, h0 = f["entry/miller_index/h/signal"][()], g["entry/miller_index/h/signal"][()]
        phi, iy, ix = (f[f"entry/miller_index/h/{a}"][()] for a in ("phi", "iy", "ix"))
    assert 0 < np.max(np.abs(h - h0)) < 0.05  # a fraction of a pixel moves the indices a little
    # recompute one grid point from scratch: pixel -> mm -> parallax -> lab -> s -> hkl
    p = doc["detector"][0]["panels"][0]
    fast, slow, origin = (np.array(p[k]) for k in ("fast_axis", "slow_axis", "origin"))
    j, i, n = 7, 20, 2
    mm = np.array([ix[i], iy[j]]) * np.array(p["pixel_size"])
    mm = parallax_correction_inv(p["mu"], p["thickness"], mm, fast, slow, origin)
    lab = origin + mm[0] * fast + mm[1] * slow
    beam = doc["beam"][0]
    s0 = -np.array(beam["direction"]) / np.linalg.norm(beam["direction"]) / beam["wavelength"]
    s = lab / np.linalg.norm(lab) / beam["wavelength"] - s0
    real = np.array([doc["crystal"][0][f"real_space_{x}"] for x in "abc"])
    ub = rotation_matrix(doc["goniometer"][0]["rotation_axis"], phi[n]) @ np.linalg.inv(real)
    np.testing.assert_allclose(np.linalg.solve(ub, s)[0], h[n, j, i], atol=1e-9)


def test_strategy_mu_and_t0_override_the_panel(tmp_path):
    strategy = {"type": "ParallaxCorrectedPxMmStrategy", "mu": 10.0, "t0": 1.0}
    out = import_geometry(_with_parallax(tmp_path, strategy), tmp_path / "g.nxs")
    with h5py.File(out) as f:
        efficiency = f["entry/corrections/efficiency/signal"][()]
    assert np.min(efficiency) > 1 - math.exp(-10.0)  # mu t = 10 absorbs essentially everything
