"""Read the models of a DIALS experiment list (``.expt``, JSON) without dxtbx.

Only what mdx2's import_geometry uses is read: the beam, a single flat detector panel (with its
pixel-to-millimetre strategy), the goniometer, the scan and the crystal, of the first experiment.
Field meanings follow dxtbx's ``from_dict`` readers (dxtbx/model/*.py and boost_python/*.cc):

* detector panels store their frame relative to their parent group in ``detector.hierarchy``;
  the lab frame is parent orientation (fast, slow, normal) times the local frame, plus the parent
  origin (dxtbx ``VirtualPanelFrame::update_global_frame``);
* ``px_mm_strategy`` ``ParallaxCorrectedPxMmStrategy`` (or the Offset variant, whose offsets an
  ``.expt`` file cannot hold) corrects parallax with ``mu``/``t0`` from the strategy if given, else the
  panel's ``mu``/``thickness``, and only when both are positive;
* scans come either as legacy ``oscillation: [phi0, dphi]`` or as a ``properties`` table whose
  ``oscillation`` lists the start angle of every image;
* goniometers are single-axis (``rotation_axis``, ``fixed_rotation``, ``setting_rotation``) or
  multi-axis (``axes``, ``angles``, ``scan_axis``), reduced to F, S and the datum axis as dxtbx does.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.geometry.dials import multi_axis_frames

__all__ = ["Beam", "CrystalModel", "Experiment", "Goniometer", "Panel", "Scan", "read_expt"]

log = logging.getLogger(__name__)

PARALLAX_STRATEGIES = ("ParallaxCorrectedPxMmStrategy", "OffsetParallaxCorrectedPxMmStrategy")
SIMPLE_STRATEGIES = ("SimplePxMmStrategy", "OffsetPxMmStrategy")


@dataclass(frozen=True, eq=False)
class Beam:
    """Monochromatic beam; ``unit_s0`` is the unit vector of the incident beam (dxtbx get_unit_s0)."""

    unit_s0: np.ndarray  # unit vector along the incident beam (-direction in the .expt file)
    wavelength: float  # Angstrom
    polarization_normal: np.ndarray
    polarization_fraction: float

    @property
    def s0(self) -> np.ndarray:
        """Incident wave vector in 1/Angstrom."""
        return self.unit_s0 / self.wavelength


@dataclass(frozen=True, eq=False)
class Panel:
    """One flat panel in the lab frame; pixel (x, y) is at origin + x*px*fast + y*py*slow (mm)."""

    fast: np.ndarray
    slow: np.ndarray
    origin: np.ndarray
    pixel_size: tuple[float, float]  # mm (fast, slow)
    image_size: tuple[int, int]  # pixels (fast = nx, slow = ny)
    thickness: float  # mm
    mu: float  # linear attenuation coefficient of the sensor, 1/mm
    kind: str  # dxtbx panel type, e.g. SENSOR_PAD
    parallax: tuple[float, float] | None  # (mu, t0) of ParallaxCorrectedPxMmStrategy, else None

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.fast, self.slow)
        return n / np.linalg.norm(n)


@dataclass(frozen=True, eq=False)
class Goniometer:
    """R(phi) = setting @ rotation(axis_datum, phi) @ fixed (dxtbx conventions)."""

    axis_datum: np.ndarray
    fixed_rotation: np.ndarray
    setting_rotation: np.ndarray

    @property
    def rotation_axis(self) -> np.ndarray:
        """The rotation axis in the lab frame (setting rotation applied)."""
        return self.setting_rotation @ self.axis_datum


@dataclass(frozen=True, eq=False)
class Scan:
    image_range: tuple[int, int]
    phi0: float  # degrees, start of the first image
    dphi: float  # degrees per image

    @property
    def num_images(self) -> int:
        return self.image_range[1] - self.image_range[0] + 1


@dataclass(frozen=True, eq=False)
class CrystalModel:
    real_space: np.ndarray  # rows a, b, c in Angstrom (lab frame at phi = 0)
    hall_symbol: str
    a_at_scan_points: np.ndarray | None  # (n, 3, 3) setting matrices A = UB, or None (static)


@dataclass(frozen=True, eq=False)
class Experiment:
    path: str
    beam: Beam
    panel: Panel
    goniometer: Goniometer
    scan: Scan
    crystal: CrystalModel


class _Reader:
    """Helpers that turn a missing or malformed field into one InputError naming file and field."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, message: str) -> InputError:
        return InputError(f"{self.path!r}: {message}")

    def get(self, d: dict, key: str, where: str):
        if not isinstance(d, dict) or key not in d:
            raise self.fail(f"{where} has no {key!r}")
        return d[key]

    def vector(self, d: dict, key: str, where: str, n: int = 3, default=None) -> np.ndarray:
        value = d.get(key, default) if default is not None else self.get(d, key, where)
        try:
            arr = np.asarray(value, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.size != n or not np.all(np.isfinite(arr)):
            raise self.fail(f"{where}.{key} must be {n} finite numbers, got {value!r}")
        return arr

    def number(self, d: dict, key: str, where: str, default=None) -> float:
        value = d.get(key, default) if default is not None else self.get(d, key, where)
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            raise self.fail(f"{where}.{key} must be a finite number, got {value!r}")
        return float(value)

    def model(self, doc: dict, experiment: dict, kind: str) -> dict:
        ref = experiment.get(kind)
        if ref is None:
            raise self.fail(f"the experiment has no {kind} model; import_geometry needs a {kind}")
        if isinstance(ref, dict):
            return ref
        models = doc.get(kind)
        if (
            isinstance(ref, bool)
            or not isinstance(ref, int)
            or not isinstance(models, list)
            or not (0 <= ref < len(models))
        ):
            raise self.fail(
                f"experiment refers to {kind} {ref!r}, but the file has {kind} list {models!r:.80}"
            )
        return models[ref]


def _load_json(path: Path) -> dict:
    if not path.exists():
        raise InputError(f"experiment file {str(path)!r} does not exist")
    if path.is_dir():
        raise InputError(f"experiment file {str(path)!r} is a directory, expected a DIALS .expt file")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{str(path)!r} is not a DIALS experiment list (JSON): {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("experiment"), list) or not doc["experiment"]:
        raise InputError(
            f"{str(path)!r} is JSON but not a DIALS experiment list: expected a non-empty 'experiment' list"
        )
    return doc


def _read_beam(r: _Reader, d: dict) -> Beam:
    if "direction" in d:
        direction = r.vector(d, "direction", "beam")
        wavelength = r.number(d, "wavelength", "beam")
    elif "s0" in d:  # older files: s0 = -direction / wavelength
        s0 = r.vector(d, "s0", "beam")
        wavelength = 1.0 / float(np.linalg.norm(s0))
        direction = -s0
    else:
        raise r.fail("beam has neither 'direction' nor 's0'")
    if wavelength <= 0 or not np.any(direction):
        raise r.fail(
            f"beam needs a positive wavelength and a non-zero direction, got {wavelength!r}, {direction!r}"
        )
    if d.get("__id__") == "polychromatic":
        raise r.fail(
            "polychromatic (Laue) beams are not supported; import_geometry needs a monochromatic beam"
        )
    return Beam(
        unit_s0=-direction / np.linalg.norm(direction),
        wavelength=wavelength,
        polarization_normal=r.vector(d, "polarization_normal", "beam", default=(0.0, 1.0, 0.0)),
        polarization_fraction=r.number(d, "polarization_fraction", "beam", default=0.999),
    )


def _frame(r: _Reader, d: dict, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fast = r.vector(d, "fast_axis", where)
    slow = r.vector(d, "slow_axis", where)
    origin = r.vector(d, "origin", where)
    if (
        np.linalg.norm(fast) == 0
        or np.linalg.norm(slow) == 0
        or abs(np.dot(fast, slow)) > 1e-7 * np.linalg.norm(fast) * np.linalg.norm(slow)
    ):
        raise r.fail(f"{where}: fast_axis {fast} and slow_axis {slow} must be non-zero and perpendicular")
    return fast / np.linalg.norm(fast), slow / np.linalg.norm(slow), origin


def _compose(parent, local):
    """dxtbx update_global_frame: local vectors are given in the parent's (fast, slow, normal) frame."""
    pf, ps, po = parent
    orientation = np.column_stack((pf, ps, np.cross(pf, ps)))
    lf, ls, lo = local
    return orientation @ lf, orientation @ ls, orientation @ lo + po


def _panel_path(node: dict, panel: int) -> list[dict] | None:
    """The chain of hierarchy groups from the root down to the group holding ``panel``."""
    for child in node.get("children", []):
        if child.get("panel") == panel:
            return [node]
        if "children" in child:
            below = _panel_path(child, panel)
            if below is not None:
                return [node, *below]
    return None


def _read_panel(r: _Reader, detector: dict) -> Panel:
    panels = r.get(detector, "panels", "detector")
    if not isinstance(panels, list) or len(panels) != 1:
        n = len(panels) if isinstance(panels, list) else panels
        raise r.fail(
            f"detector has {n} panels; import_geometry (like mdx2) supports single-panel detectors only"
        )
    d = panels[0]
    frame = _frame(r, d, "panel")
    hierarchy = detector.get("hierarchy")
    if isinstance(hierarchy, dict):
        chain = _panel_path(hierarchy, 0) or []
        parent = (np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.zeros(3))
        for group in chain:
            parent = _compose(parent, _frame(r, group, "detector.hierarchy"))
        frame = _compose(parent, frame)
    size = r.get(d, "image_size", "panel")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise r.fail(f"panel.image_size must be two positive integers (fast, slow), got {size!r}")
    pixel = r.vector(d, "pixel_size", "panel", n=2)
    if np.any(pixel <= 0):
        raise r.fail(f"panel.pixel_size must be positive, got {pixel}")
    mu = r.number(d, "mu", "panel", default=0.0)
    thickness = r.number(d, "thickness", "panel", default=0.0)
    strategy = d.get("px_mm_strategy", {"type": "SimplePxMmStrategy"})
    name = strategy.get("type") if isinstance(strategy, dict) else None
    parallax = None
    if name in PARALLAX_STRATEGIES:
        if "mu" in strategy and "t0" in strategy:
            mu = r.number(strategy, "mu", "panel.px_mm_strategy")
            thickness = r.number(strategy, "t0", "panel.px_mm_strategy")
        if mu > 0 and thickness > 0:
            parallax = (mu, thickness)
        else:
            log.warning("%s: %s without positive mu and thickness; no parallax correction", r.path, name)
    elif name not in SIMPLE_STRATEGIES:
        raise r.fail(
            f"unknown panel.px_mm_strategy {strategy!r}; "
            f"expected one of {PARALLAX_STRATEGIES + SIMPLE_STRATEGIES}"
        )
    kind = str(d.get("type", "SENSOR_PAD"))
    if kind != "SENSOR_PAD":
        log.warning("%s: panel type %r; mdx2 accepts SENSOR_PAD detectors only", r.path, kind)
    return Panel(*frame, tuple(pixel), (size[0], size[1]), thickness, mu, kind, parallax)


def _read_goniometer(r: _Reader, d: dict) -> Goniometer:
    if d.get("setting_rotation_at_scan_points"):
        raise r.fail("scan-varying goniometer (setting_rotation_at_scan_points) is not supported, as in mdx2")
    if "axes" in d:  # dxtbx MultiAxisGoniometer: axes listed from the crystal to the base
        axes = np.asarray(r.get(d, "axes", "goniometer"), dtype=np.float64).reshape(-1, 3)
        angles = np.asarray(r.get(d, "angles", "goniometer"), dtype=np.float64).reshape(-1)
        scan_axis = r.get(d, "scan_axis", "goniometer")
        if len(angles) != len(axes) or not (isinstance(scan_axis, int) and 0 <= scan_axis < len(axes)):
            raise r.fail(
                f"goniometer: {len(axes)} axes, {len(angles)} angles and scan_axis {scan_axis!r} disagree"
            )
        fixed, setting, axis = multi_axis_frames(axes, angles, scan_axis)
    else:
        axis = r.vector(d, "rotation_axis", "goniometer")
        fixed = r.vector(d, "fixed_rotation", "goniometer", n=9, default=np.eye(3).ravel()).reshape(3, 3)
        setting = r.vector(d, "setting_rotation", "goniometer", n=9, default=np.eye(3).ravel()).reshape(3, 3)
    if not np.any(axis):
        raise r.fail("goniometer rotation axis is zero")
    return Goniometer(axis / np.linalg.norm(axis), fixed, setting)


def _read_scan(r: _Reader, d: dict) -> Scan:
    first_last = r.get(d, "image_range", "scan")
    if not (
        isinstance(first_last, list) and len(first_last) == 2 and all(isinstance(v, int) for v in first_last)
    ):
        raise r.fail(f"scan.image_range must be [first, last], got {first_last!r}")
    n = first_last[1] - first_last[0] + 1
    if n < 1:
        raise r.fail(f"scan.image_range {first_last} holds no images")
    if "properties" in d:
        props = d["properties"]
        osc = props.get("oscillation") if isinstance(props, dict) else None
        if not isinstance(osc, list) or not osc:
            raise r.fail("scan.properties has no 'oscillation' list")
        width = props.get("oscillation_width")
        if len(osc) > 1 and (len(osc) == n or not width):
            phi0, dphi = float(osc[0]), float(osc[1]) - float(osc[0])
        elif isinstance(width, list) and width:
            phi0, dphi = float(osc[0]), float(width[0])
        else:
            raise r.fail("scan.properties gives one oscillation angle but no oscillation_width")
    else:
        osc = r.get(d, "oscillation", "scan")
        if not (isinstance(osc, list) and len(osc) == 2):
            raise r.fail(f"scan.oscillation must be [phi0, dphi], got {osc!r}")
        phi0, dphi = float(osc[0]), float(osc[1])
    if not (np.isfinite(phi0) and np.isfinite(dphi) and dphi > 0):
        raise r.fail(
            f"scan oscillation must have a finite start and a positive width, got phi0={phi0}, dphi={dphi}"
        )
    return Scan((first_last[0], first_last[1]), phi0, dphi)


def _read_crystal(r: _Reader, d: dict) -> CrystalModel:
    real = np.stack([r.vector(d, f"real_space_{x}", "crystal") for x in "abc"])
    if abs(np.linalg.det(real)) < 1e-9:
        raise r.fail("crystal real_space_a, b, c are linearly dependent")
    hall = r.get(d, "space_group_hall_symbol", "crystal")
    if not isinstance(hall, str):
        raise r.fail(f"crystal.space_group_hall_symbol must be a string, got {hall!r}")
    a_points = d.get("A_at_scan_points")
    if a_points:
        try:
            a_points = np.asarray(a_points, dtype=np.float64).reshape(-1, 3, 3)
        except (TypeError, ValueError):
            raise r.fail("crystal.A_at_scan_points must be a list of 9-number matrices") from None
        if len(a_points) < 2 or not np.all(np.isfinite(a_points)):
            raise r.fail(f"crystal.A_at_scan_points needs >= 2 finite matrices, got {len(a_points)}")
    else:
        a_points = None
    return CrystalModel(real, hall, a_points)


def read_expt(path: str | os.PathLike) -> Experiment:
    """The first experiment of a DIALS ``.expt`` file; raises :class:`InputError` naming what is wrong."""
    path = Path(path)
    doc = _load_json(path)
    r = _Reader(str(path))
    if len(doc["experiment"]) > 1:
        log.warning("%s holds %d experiments; using the first, as mdx2 does", path, len(doc["experiment"]))
    experiment = doc["experiment"][0]
    if not isinstance(experiment, dict):
        raise r.fail("experiment[0] is not an object")
    beam = _read_beam(r, r.model(doc, experiment, "beam"))
    panel = _read_panel(r, r.model(doc, experiment, "detector"))
    goniometer = _read_goniometer(r, r.model(doc, experiment, "goniometer"))
    scan = _read_scan(r, r.model(doc, experiment, "scan"))
    crystal = _read_crystal(r, r.model(doc, experiment, "crystal"))
    return Experiment(str(path), beam, panel, goniometer, scan, crystal)
