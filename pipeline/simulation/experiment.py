"""The simulated experiment: detector, beam, goniometer, scan and crystal, and its DIALS .expt JSON.

Conventions are DIALS' and mdx2's: the beam ``direction`` points towards the source (s0 =
-direction / wavelength); pixel (x, y) is at lab = origin + x * px * fast + y * px * slow (pixel
centres at integer coordinates, no parallax); the crystal's A = UB matrix maps (h, k, l) to s at
phi = 0 and is rotated right-handedly about the goniometer axis by phi.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.simulation.presets import Preset

__all__ = [
    "GAP",
    "MODULE",
    "PIXEL_SIZE",
    "Experiment",
    "build_experiment",
    "module_gap_mask",
    "orthogonalization_matrix",
    "rotation_matrix",
]

MODULE = (487, 195)  # pixels of one Pilatus module (fast, slow)
GAP = (7, 17)  # pixels between modules (fast, slow)
PIXEL_SIZE = 0.172  # mm
# detector -> (module (fast, slow), gap (fast, slow), pixel size in mm)
DETECTORS = {"pilatus": (MODULE, GAP, PIXEL_SIZE), "eiger": ((1028, 512), (12, 38), 0.075)}
THICKNESS = 0.45  # mm of silicon
MU_SILICON = 3.9596  # 1/mm, attenuation coefficient of Si near 12.7 keV


@dataclass(frozen=True, eq=False)
class Experiment:
    """One sweep with a single flat panel and a static crystal, in DIALS' lab frame (mm, Angstrom)."""

    nx: int
    ny: int
    origin: np.ndarray
    fast: np.ndarray
    slow: np.ndarray
    pixel_size: float
    thickness: float
    mu: float
    wavelength: float
    beam_direction: np.ndarray
    polarization_normal: np.ndarray
    polarization_fraction: float
    rotation_axis: np.ndarray
    real_space: np.ndarray  # rows a, b, c (Angstrom) at phi = 0
    hall_symbol: str
    phi0: float
    dphi: float
    frames: int
    exposure_time: float

    @property
    def a_matrix(self) -> np.ndarray:
        """UB at phi = 0: columns a*, b*, c* (1/Angstrom)."""
        return np.linalg.inv(self.real_space)

    @property
    def phi(self) -> np.ndarray:
        """Frame centres in degrees, as mdx2 writes them: phi0 + dphi * (i + 0.5)."""
        return self.phi0 + self.dphi * np.linspace(0.5, self.frames - 0.5, self.frames)

    def to_dials(self) -> dict:
        """The experiment as a DIALS ExperimentList JSON document (what ``dials.index`` writes)."""
        return _dials_json(self)


def orthogonalization_matrix(cell) -> np.ndarray:
    """Columns a, b, c in Cartesian coordinates: a along x, b in the xy plane (PDB convention)."""
    a, b, c = cell[:3]
    alpha, beta, gamma = np.radians(cell[3:])
    ca, cb, cg, sg = np.cos(alpha), np.cos(beta), np.cos(gamma), np.sin(gamma)
    volume = a * b * c * np.sqrt(1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg)
    return np.array(
        [
            [a, b * cg, c * cb],
            [0.0, b * sg, c * (ca - cb * cg) / sg],
            [0.0, 0.0, volume / (a * b * sg)],
        ]
    )


def rotation_matrix(axis, angle_deg: float) -> np.ndarray:
    """Right-handed rotation by ``angle_deg`` about ``axis`` (Rodrigues' formula)."""
    u = np.asarray(axis, dtype=np.float64)
    u = u / np.linalg.norm(u)
    t = np.radians(angle_deg)
    k = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    return np.eye(3) + np.sin(t) * k + (1.0 - np.cos(t)) * (k @ k)


def random_orientation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation (QR of a Gaussian matrix with the signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def detector_size(modules: tuple[int, int], detector: str = "pilatus") -> tuple[int, int]:
    """(nx, ny) of a grid of modules with gaps between them."""
    (mx, my), (gx, gy), _ = DETECTORS[detector]
    nfast, nslow = modules
    return nfast * mx + (nfast - 1) * gx, nslow * my + (nslow - 1) * gy


def module_gap_mask(nx: int, ny: int, detector: str = "pilatus") -> np.ndarray:
    """True on the pixels between modules (no sensor there; mdx2 stores -1)."""
    (mx, my), (gx, gy), _ = DETECTORS[detector]
    gaps = np.zeros((ny, nx), dtype=bool)
    for x0 in range(mx, nx, mx + gx):
        gaps[:, x0 : x0 + gx] = True
    for y0 in range(my, ny, my + gy):
        gaps[y0 : y0 + gy, :] = True
    return gaps


def build_experiment(preset: Preset, rng: np.random.Generator) -> Experiment:
    """The experiment of ``preset``, with a crystal orientation drawn from ``rng``."""
    nx, ny = detector_size(preset.modules, preset.detector)
    pixel_size = DETECTORS[preset.detector][2]
    cx, cy = preset.beam_center[0] * nx, preset.beam_center[1] * ny
    fast = np.array([1.0, 0.0, 0.0])
    slow = np.array([0.0, -1.0, 0.0])
    # the direct beam (along -z) hits pixel (cx, cy) of a panel normal to it at z = -distance
    origin = -cx * pixel_size * fast - cy * pixel_size * slow + np.array([0.0, 0.0, -preset.distance])
    real = (random_orientation(rng) @ orthogonalization_matrix(preset.unit_cell)).T
    return Experiment(
        nx=nx,
        ny=ny,
        origin=origin,
        fast=fast,
        slow=slow,
        pixel_size=pixel_size,
        thickness=THICKNESS,
        mu=MU_SILICON,
        wavelength=preset.wavelength,
        beam_direction=np.array([0.0, 0.0, 1.0]),
        polarization_normal=np.array([0.0, 1.0, 0.0]),
        polarization_fraction=0.999,
        rotation_axis=np.asarray(preset.rotation_axis, dtype=np.float64),
        real_space=real,
        hall_symbol=preset.hall_symbol,
        phi0=preset.phi0,
        dphi=preset.dphi,
        frames=preset.frames,
        exposure_time=preset.exposure_time,
    )


def _floats(v) -> list[float]:
    return [float(x) for x in np.asarray(v).ravel()]


def _dials_json(e: Experiment) -> dict:
    identity = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    start_time = 1.7e9  # epochs of the frames: an arbitrary but fixed start, for reproducible files
    return {
        "__id__": "ExperimentList",
        "experiment": [
            {
                "__id__": "Experiment",
                "identifier": "diffuse-simulate",
                "beam": 0,
                "detector": 0,
                "goniometer": 0,
                "scan": 0,
                "crystal": 0,
                "imageset": 0,
            }
        ],
        "imageset": [{"__id__": "ImageSequence", "template": "simulated_#####.cbf", "mask": "", "gain": ""}],
        "beam": [
            {
                "__id__": "monochromatic",
                "direction": _floats(e.beam_direction),
                "wavelength": e.wavelength,
                "divergence": 0.0,
                "sigma_divergence": 0.0,
                "polarization_normal": _floats(e.polarization_normal),
                "polarization_fraction": e.polarization_fraction,
                "flux": 0.0,
                "transmission": 1.0,
                "probe": "x-ray",
                "sample_to_source_distance": 0.0,
            }
        ],
        "detector": [
            {
                "panels": [
                    {
                        "name": "Panel",
                        "type": "SENSOR_PAD",
                        "fast_axis": _floats(e.fast),
                        "slow_axis": _floats(e.slow),
                        "origin": _floats(e.origin),
                        "raw_image_offset": [0, 0],
                        "image_size": [e.nx, e.ny],
                        "pixel_size": [e.pixel_size, e.pixel_size],
                        "trusted_range": [-1.0, 1048575.0],
                        "thickness": e.thickness,
                        "material": "Si",
                        "mu": e.mu,
                        "identifier": "",
                        "mask": [],
                        "gain": 1.0,
                        "pedestal": 0.0,
                        "px_mm_strategy": {"type": "SimplePxMmStrategy"},
                    }
                ]
            }
        ],
        "goniometer": [
            {
                "rotation_axis": _floats(e.rotation_axis),
                "fixed_rotation": identity,
                "setting_rotation": identity,
            }
        ],
        "scan": [
            {
                "image_range": [1, e.frames],
                "batch_offset": 0,
                "properties": {
                    "epochs": [start_time + i * e.exposure_time for i in range(e.frames)],
                    "exposure_time": [e.exposure_time] * e.frames,
                    "oscillation": [e.phi0 + i * e.dphi for i in range(e.frames)],
                    "oscillation_width": [e.dphi] * e.frames,
                },
                "valid_image_ranges": {},
            }
        ],
        "crystal": [
            {
                "__id__": "crystal",
                "real_space_a": _floats(e.real_space[0]),
                "real_space_b": _floats(e.real_space[1]),
                "real_space_c": _floats(e.real_space[2]),
                "space_group_hall_symbol": e.hall_symbol,
            }
        ],
    }
