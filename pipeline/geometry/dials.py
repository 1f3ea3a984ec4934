"""Lab-frame geometry of a rotation experiment in DIALS conventions, as mdx2 samples it.

mdx2 (``mdx2/dxtbx_machinery.py``) samples Miller indices and correction factors on a coarse grid
of (phi, iy, ix). Pixel coordinates are used as dxtbx pixel coordinates directly: pixel (ix, iy) is
at ``origin + ix*px*fast + iy*py*slow`` (mm) (``index_grid_to_lab``), after the panel's
pixel-to-millimetre strategy (parallax) when it has one. Then, in 1/Angstrom,

    s1 = xyz / |xyz| / wavelength,   s = s1 - s0
    (h, k, l) = (R(phi) U B)^-1 s,   R(phi) = S . rotation(axis, phi) . F

with U, B from the crystal model (static, or interpolated between scan points: U by the rotation
that takes U_i to U_i+1, B element by element).
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.geometry.parallax import pixel_to_millimeter

__all__ = [
    "crystal_u_b",
    "hkl_on_grid",
    "lab_coordinates",
    "multi_axis_frames",
    "rotation_matrix",
    "scan_axes",
    "u_b_at_phi",
    "unit_cell_parameters",
]


def _quaternion_matrix(w: float, x: float, y: float, z: float) -> np.ndarray:
    """Rotation matrix of a unit quaternion (scitbx ``unit_quaternion_as_r3_rotation_matrix``)."""
    return np.array(
        [
            [2 * (w * w + x * x) - 1, 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 2 * (w * w + y * y) - 1, 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 2 * (w * w + z * z) - 1],
        ]
    )


def rotation_matrix_rad(axis, angle: float) -> np.ndarray:
    """Right-handed rotation by ``angle`` (radians) about ``axis``, through the unit quaternion as scitbx."""
    if not angle % (2 * math.pi):
        return np.eye(3)
    c, s = math.cos(angle * 0.5), math.sin(angle * 0.5)
    u = np.asarray(axis, dtype=np.float64)
    u = u / math.sqrt(float(u @ u))
    return _quaternion_matrix(c, u[0] * s, u[1] * s, u[2] * s)


def rotation_matrix(axis, angle_deg: float) -> np.ndarray:
    """Right-handed rotation by ``angle_deg`` degrees about ``axis`` (scitbx axis_and_angle, deg=True)."""
    return rotation_matrix_rad(axis, float(angle_deg) * math.pi / 180)


def _matrix_quaternion(m: np.ndarray) -> tuple[float, float, float, float]:
    """Unit quaternion (w, x, y, z) of a rotation matrix (Shepperd 1978, as scitbx)."""
    (m00, m01, m02), (m10, m11, m12), (m20, m21, m22) = m.tolist()
    trace = m00 + m11 + m22
    if trace >= 0.5:
        w = (1 + trace) ** 0.5
        d = w + w
        return w * 0.5, (m21 - m12) / d, (m02 - m20) / d, (m10 - m01) / d
    if m00 > m11:
        big = 0 if m00 > m22 else 2
    else:
        big = 1 if m11 > m22 else 2
    if big == 0:
        x = (1 + m00 - m11 - m22) ** 0.5
        d = x + x
        return (m21 - m12) / d, x * 0.5, (m10 + m01) / d, (m20 + m02) / d
    if big == 1:
        y = (1 + m11 - m00 - m22) ** 0.5
        d = y + y
        return (m02 - m20) / d, (m10 + m01) / d, y * 0.5, (m21 + m12) / d
    z = (1 + m22 - m00 - m11) ** 0.5
    d = z + z
    return (m10 - m01) / d, (m20 + m02) / d, (m21 + m12) / d, z * 0.5


def multi_axis_frames(axes: np.ndarray, angles: np.ndarray, scan_axis: int):
    """dxtbx MultiAxisGoniometer: F = product of the axes below the scan axis, S of those above."""
    fixed, setting = np.eye(3), np.eye(3)
    for i in range(scan_axis):
        fixed = rotation_matrix(axes[i], angles[i]) @ fixed
    for i in range(scan_axis + 1, len(axes)):
        setting = rotation_matrix(axes[i], angles[i]) @ setting
    return fixed, setting, np.asarray(axes[scan_axis], dtype=np.float64)


def scan_axes(num_images: int, phi0: float, dphi: float, image_size, spacing) -> tuple[np.ndarray, ...]:
    """Grid points spanning the edges of the scan and the detector (mdx2 ``calc_scan_axes(centered=False)``).

    ``ceil(n / spacing) + 1`` evenly spaced points: phi from phi0 to phi0 + n*dphi, iy from -0.5 to
    ny - 0.5, ix from -0.5 to nx - 0.5.
    """
    nx, ny = image_size
    n_phi = 1 + -int(-(dphi * num_images) // spacing[0])
    n_y = 1 + -int(-ny // spacing[1])
    n_x = 1 + -int(-nx // spacing[2])
    phi = phi0 + dphi * np.linspace(0, num_images, n_phi)
    iy = np.linspace(-0.5, ny - 0.5, n_y)
    ix = np.linspace(-0.5, nx - 0.5, n_x)
    return phi, iy, ix


def lab_coordinates(panel, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Lab position (mm), shape (len(iy), len(ix), 3), of pixel coordinates (ix, iy)."""
    xy = np.dstack(np.meshgrid(np.asarray(ix, np.float64), np.asarray(iy, np.float64)))
    mm = pixel_to_millimeter(panel, xy)
    return panel.origin + mm[..., :1] * panel.fast + mm[..., 1:2] * panel.slow


def unit_cell_parameters(real_space: np.ndarray) -> np.ndarray:
    """(a, b, c, alpha, beta, gamma) in Angstrom and degrees from rows a, b, c."""
    a, b, c = real_space
    lengths = np.linalg.norm(real_space, axis=1)

    def angle(u, v):
        return np.degrees(np.arccos(np.clip(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v), -1.0, 1.0)))

    return np.array([*lengths, angle(b, c), angle(a, c), angle(a, b)])


def fractionalization_matrix(cell) -> np.ndarray:
    """Inverse of the orthogonalization matrix with a along x and b in the xy plane (cctbx uctbx)."""
    a, b, c = cell[:3]
    al, be, ga = np.deg2rad(cell[3:])
    ca, cb, cg, sg = np.cos(al), np.cos(be), np.cos(ga), np.sin(ga)
    volume = a * b * c * np.sqrt(1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg)
    ortho = np.array(
        [[a, b * cg, c * cb], [0.0, b * sg, c * (ca - cb * cg) / sg], [0.0, 0.0, volume / (a * b * sg)]]
    )
    return np.linalg.inv(ortho)


def crystal_u_b(real_space: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(A, U, B, cell): A = real_space^-1 (columns a*, b*, c*), B = F^T of the cell, U = A B^-1."""
    a_matrix = np.linalg.inv(real_space)
    cell = unit_cell_parameters(real_space)
    b_matrix = fractionalization_matrix(cell).T
    return a_matrix, a_matrix @ np.linalg.inv(b_matrix), b_matrix, cell


def _u_b_of_a(a_matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """U and B of a setting matrix A at a scan point (dxtbx get_U/B_at_scan_point)."""
    real_space = np.linalg.inv(a_matrix)
    b_matrix = fractionalization_matrix(unit_cell_parameters(real_space)).T
    return a_matrix @ np.linalg.inv(b_matrix), b_matrix


def _interpolate_rotation(u1: np.ndarray, u2: np.ndarray, fraction: float) -> np.ndarray:
    """Rotate u1 by ``fraction`` of the rotation u2 u1^T (mdx2 ``interp_rotation_matrices``)."""
    w, x, y, z = _matrix_quaternion(u2 @ u1.T)
    angle = 2.0 * math.acos(min(max(w, -1.0), 1.0))
    axis = np.array([x, y, z])
    length = math.sqrt(float(axis @ axis))
    if length > 0:
        axis = axis / length
    else:
        return u1.copy()
    return rotation_matrix_rad(axis, angle * fraction) @ u1


def u_b_at_phi(crystal, scan, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """U and B at each angle (n, 3, 3): static, or interpolated between scan points as mdx2 does."""
    phi = np.asarray(phi, dtype=np.float64)
    if crystal.a_at_scan_points is None:
        _, u, b, _ = crystal_u_b(crystal.real_space)
        return np.broadcast_to(u, (phi.size, 3, 3)).copy(), np.broadcast_to(b, (phi.size, 3, 3)).copy()
    points = [_u_b_of_a(a) for a in crystal.a_at_scan_points]
    last = len(points) - 1
    us, bs = np.empty((phi.size, 3, 3)), np.empty((phi.size, 3, 3))
    for n, angle in enumerate(phi):
        index = (angle - scan.phi0) / scan.dphi
        base = min(max(int(index), 0), scan.num_images - 1)
        fraction = index - base
        nxt = min(base + 1, last)
        (u1, b1), (u2, b2) = points[min(base, last)], points[nxt]
        if nxt == base:
            us[n], bs[n] = u1, b1
        else:
            us[n] = _interpolate_rotation(u1, u2, fraction)
            bs[n] = b1 * (1 - fraction) + b2 * fraction
    return us, bs


def hkl_on_grid(experiment, phi: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Miller indices (3, nphi, ny, nx) at the grid points, float64."""
    xyz = lab_coordinates(experiment.panel, iy, ix)
    s1 = xyz / np.linalg.norm(xyz, axis=-1, keepdims=True) / experiment.beam.wavelength
    s = np.moveaxis(s1 - experiment.beam.s0, -1, 0)  # (3, ny, nx)
    g = experiment.goniometer
    r = np.stack([g.setting_rotation @ rotation_matrix(g.axis_datum, p) @ g.fixed_rotation for p in phi])
    u, b = u_b_at_phi(experiment.crystal, experiment.scan, phi)
    inv_ub = np.linalg.inv(r @ u @ b)  # (nphi, 3, 3)
    return np.moveaxis(np.tensordot(inv_ub, s, axes=1), 1, 0)
