"""Regenerate the import-geometry fixtures in tests/data/geometry/ from mdx2 1.0.5 (via refkit).

Development tool only (needs cctbx and mdx2; the tests do not):

    source /work/shared/refkit/setup.sh
    python tests/data/make_geometry_goldens.py

For each case it writes ``<case>.expt`` (a DIALS experiment list) and ``<case>.npz`` holding what
mdx2's own geometry code (``MillerIndex/Corrections/Symmetry/Crystal.from_expt``, the code
``mdx2.import_geometry`` runs) computes from it. Cases cover triclinic to cubic types, reference and
non-reference settings (written as DIALS writes them: reference Hall symbol plus change of basis),
other rotation axes and beam directions, both scan layouts, a scan-varying crystal, a detector
hierarchy and a multi-axis goniometer. refkit's dxtbx stand-in reads neither hierarchies,
multi-axis goniometers nor scan points; for those the golden comes from an equivalent flat file
(``*_flat.expt``; frames and axes composed with scitbx), or, for scan points, from the stand-in
extended here with dxtbx's ``get_U/B_at_scan_point`` (B from ``unit_cell(A^-T)``, U = A B^-1).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np

REFKIT = Path("/work/shared/refkit")
sys.path.insert(0, str(REFKIT))

import fake_expt  # noqa: E402  (refkit's dxtbx stand-in)
from cctbx import sgtbx, uctbx  # noqa: E402
from make_dataset import write_expt  # noqa: E402
from mdx2 import geometry as mdx2_geometry  # noqa: E402
from scitbx import matrix  # noqa: E402

OUT = Path(__file__).resolve().parent / "geometry"
SPACING = (1, 40, 40)  # coarse grid keeps the goldens small

# name: Hall symbol, cell, change of basis V or None, options. V is applied as dials.reindex applies it (cctbx
# change_of_basis_op: new group = V G V^-1, new direct basis = V^-T old); DIALS then writes the group as
# "reference Hall symbol (tidy change of basis)".
# Hall symbols are then rewritten as DIALS writes them (cctbx type().hall_symbol()) unless "raw_hall" is set.
CASES = {
    "p1": (" P 1", (45.1, 52.3, 61.7, 81.2, 77.5, 68.9), None, {}),
    "pm1": ("-P 1", (45.1, 52.3, 61.7, 81.2, 77.5, 68.9), None, {"phi0": 12.3}),
    "c2": (" C 2y", (120.2, 43.5, 61.8, 90, 104.3, 90), None, {}),
    "i2": (" C 2y", (120.2, 43.5, 61.8, 90, 104.3, 90), "x,y,-x+z", {}),
    "c2_primitive": (" C 2y", (120.2, 43.5, 61.8, 90, 104.3, 90), "x+y,-x+y+z,z", {}),
    "c2_odd_centring": (" C 2y", (120.2, 43.5, 61.8, 90, 104.3, 90), "x-y,y,z", {}),
    "p21n": ("-P 2ybc", (52.1, 61.9, 70.3, 90, 95.4, 90), "x-z,y,z", {"dphi": 0.25}),
    "p212121": (" P 2ac 2ab", (51.2, 63.4, 74.9, 90, 90, 90), None, {"axis": (0.0, 1.0, 0.0)}),
    "p21_2_2": (" P 2c 2", (51.2, 63.4, 74.9, 90, 90, 90), "z,x,y", {}),
    "p21_2_2_table_hall": (" P 2a 2a", (63.4, 74.9, 51.2, 90, 90, 90), None, {"raw_hall": True}),
    "p3121": (' P 31 2"', (66.3, 66.3, 101.2, 90, 90, 120), None, {"properties": True}),
    "p6122": (" P 61 2 (0 0 5)", (95.1, 95.1, 150.7, 90, 90, 120), None, {"beam": (0.02, -0.01, 1.0)}),
    "r3_hex": (" R 3", (105.4, 105.4, 60.2, 90, 90, 120), None, {}),
    "r3_rhombohedral": (" R 3", (105.4, 105.4, 60.2, 90, 90, 120), "-y+z,x+z,-x+y+z", {}),
    "i213": (" I 2b 2c 3", (77.9, 77.9, 77.9, 90, 90, 90), None, {"default_spacing": True}),
    "f432": (" F 4 2 3", (150.3, 150.3, 150.3, 90, 90, 90), None, {"axis": (0.6, 0.8, 0.0)}),
    "p43212_tilted": (" P 4nw 2abw", (57.8, 57.8, 150.1, 90, 90, 90), None,
                      {"axis": (0.0, -1.0, 0.0), "beam": (0.0, 0.03, 1.0), "phi0": -40.0, "dphi": 0.2,
                       "properties": True, "frames": 30}),
    "scan_varying": (" P 2ac 2ab", (51.2, 63.4, 74.9, 90, 90, 90), None, {"scan_points": True}),
    "hierarchy": (" P 2ac 2ab", (51.2, 63.4, 74.9, 90, 90, 90), None, {"hierarchy": True}),
}  # fmt: skip


def reindex(d: dict, hall: str, cb: str) -> str:
    """Apply a change of basis as dxtbx Crystal.change_basis does; return the new Hall symbol."""
    op = sgtbx.change_of_basis_op(cb)
    xtal = d["crystal"][0]
    direct = np.array([xtal[f"real_space_{x}"] for x in "abc"])
    m = np.array(op.c_inv().r().transpose().as_double()).reshape(3, 3)
    new = m @ direct
    group = sgtbx.space_group(hall).change_basis(op)
    new_hall = group.type().hall_symbol()
    xtal.update({f"real_space_{x}": list(new[i]) for i, x in enumerate("abc")})
    xtal["space_group_hall_symbol"] = new_hall
    uc = uctbx.unit_cell(orthogonalization_matrix=tuple(new.T.ravel()))
    assert group.is_compatible_unit_cell(uc), (hall, cb)
    return new_hall


def to_properties(d: dict) -> None:
    scan = d["scan"][0]
    phi0, dphi = scan.pop("oscillation")
    n = scan["image_range"][1] - scan["image_range"][0] + 1
    scan["properties"] = {
        "oscillation": [phi0 + dphi * i for i in range(n)],
        "exposure_time": scan.pop("exposure_time"),
        "epochs": scan.pop("epochs"),
    }
    scan["valid_image_ranges"] = {}


def add_scan_points(d: dict) -> None:
    xtal = d["crystal"][0]
    a = np.linalg.inv(np.array([xtal[f"real_space_{x}"] for x in "abc"]))
    n = d["scan"][0]["image_range"][1] - d["scan"][0]["image_range"][0] + 2
    points = []
    for i in range(n):  # a slow drift of orientation and cell, as scan-varying refinement yields
        r = np.array(
            matrix.col((0.3, 1.0, -0.2)).axis_and_angle_as_r3_rotation_matrix(0.05 * i, deg=True)
        ).reshape(3, 3)
        strain = np.diag([1 + 2e-4 * i, 1 - 1e-4 * i, 1 + 5e-5 * i])
        points.append(list((r @ a @ strain).ravel()))
    xtal["A_at_scan_points"] = points


def hierarchical(d: dict) -> dict:
    """Same lab frame, stored as a tilted parent group plus a local panel frame; multi-axis goniometer."""
    nested = copy.deepcopy(d)
    panel = nested["detector"][0]["panels"][0]
    pf = np.array(matrix.col((0, 0, 1)).axis_and_angle_as_r3_rotation_matrix(30, deg=True)).reshape(3, 3) @ (
        1,
        0,
        0,
    )
    ps = np.array(matrix.col((1, 1, 0)).axis_and_angle_as_r3_rotation_matrix(10, deg=True)).reshape(
        3, 3
    ) @ np.cross((0, 0, 1), pf)
    ps = ps - np.dot(ps, pf) * pf
    ps /= np.linalg.norm(ps)
    po = np.array([3.0, -2.0, -150.0])
    orient = np.column_stack((pf, ps, np.cross(pf, ps)))
    for key in ("fast_axis", "slow_axis"):
        panel[key] = list(orient.T @ np.array(panel[key]))
    panel["origin"] = list(orient.T @ (np.array(panel["origin"]) - po))
    nested["detector"][0]["hierarchy"] = {
        "name": "", "type": "", "fast_axis": list(pf), "slow_axis": list(ps), "origin": list(po),
        "raw_image_offset": [0, 0], "image_size": [0, 0], "pixel_size": [0.0, 0.0],
        "trusted_range": [0.0, 0.0], "thickness": 0.0, "material": "", "mu": 0.0, "identifier": "",
        "mask": [], "gain": 1.0, "pedestal": 0.0,
        "px_mm_strategy": {"type": "SimplePxMmStrategy"}, "children": [{"panel": 0}],
    }  # fmt: skip
    axes = [(1.0, 0.0, 0.0), (0.0, 0.6427876, 0.7660444), (1.0, 0.0, 0.0)]
    angles = [12.0, -25.0, 0.0]
    nested["goniometer"][0] = {"axes": [list(a) for a in axes], "angles": angles,
                               "names": ["PHI", "KAPPA", "OMEGA"],
                               "scan_axis": 2}  # fmt: skip
    flat_gonio = d["goniometer"][0]
    fixed = np.eye(3)
    for i in range(2):
        fixed = (
            np.array(matrix.col(axes[i]).axis_and_angle_as_r3_rotation_matrix(angles[i], deg=True)).reshape(
                3, 3
            )
            @ fixed
        )
    flat_gonio["rotation_axis"] = list(axes[2])
    flat_gonio["fixed_rotation"] = list(fixed.ravel())
    return nested


def patch_scan_points(d: dict) -> None:
    """Give refkit's stand-in crystal dxtbx's scan-point accessors for this file's A_at_scan_points."""
    points = [np.array(a).reshape(3, 3) for a in d["crystal"][0]["A_at_scan_points"]]

    def b_at(self, i):
        uc = uctbx.unit_cell(orthogonalization_matrix=tuple(np.linalg.inv(points[i]).T.ravel()))
        return tuple(np.array(uc.fractionalization_matrix()).reshape(3, 3).T.ravel())

    def u_at(self, i):
        return tuple((points[i] @ np.linalg.inv(np.array(b_at(self, i)).reshape(3, 3))).ravel())

    fake_expt.Crystal.num_scan_points = len(points)
    fake_expt.Crystal.get_B_at_scan_point = b_at
    fake_expt.Crystal.get_U_at_scan_point = u_at


def unpatch_scan_points() -> None:
    fake_expt.Crystal.num_scan_points = 0


def mdx2_golden(expt: Path, spacing) -> dict:
    mi = mdx2_geometry.MillerIndex.from_expt(str(expt), sample_spacing=list(spacing))
    co = mdx2_geometry.Corrections.from_expt(str(expt), sample_spacing=list(spacing[1:]))
    sy = mdx2_geometry.Symmetry.from_expt(str(expt))
    cr = mdx2_geometry.Crystal.from_expt(str(expt))
    out = {
        "phi": mi.phi, "iy": mi.iy, "ix": mi.ix, "hkl": np.stack((mi.h, mi.k, mi.l)),
        "corrections": np.stack([getattr(co, k) for k in co._data_keys]),
        "correction_iy": co.iy, "correction_ix": co.ix,
        "ub_matrix": cr.ub_matrix, "unit_cell": np.array(cr.unit_cell),
        "orientation_matrix": cr.orientation_matrix,
        "space_group": cr.space_group,
        "laue_group_operators": sy.laue_group_operators, "space_group_operators": sy.space_group_operators,
    }  # fmt: skip
    for key in ("space_group_number", "laue_group_number"):
        out[key] = int(getattr(sy, key))
    for key in ("space_group_symbol", "crystal_system", "laue_group_symbol", "reciprocal_space_asu"):
        out[key] = str(getattr(sy, key))
    out["reflection_conditions"] = "" if sy.reflection_conditions is None else str(sy.reflection_conditions)
    return out


def make_case(name: str, hall: str, cell, cb, opts: dict) -> dict:
    path = OUT / f"{name}.expt"
    d = write_expt(str(path), 1, 1, opts.get("frames", 20), opts.get("dphi", 0.1), 0.1, cell=cell, hall=hall,
                   axis=opts.get("axis", (1.0, 0.0, 0.0)), phi0=opts.get("phi0", 0.0))  # fmt: skip
    if cb:
        hall = reindex(d, hall, cb)
    elif not opts.get("raw_hall"):
        d["crystal"][0]["space_group_hall_symbol"] = sgtbx.space_group(hall).type().hall_symbol()
    if "beam" in opts:
        d["beam"][0]["direction"] = list(np.array(opts["beam"]) / np.linalg.norm(opts["beam"]))
    if opts.get("properties"):
        to_properties(d)
    if opts.get("scan_points"):
        add_scan_points(d)
    golden_from = path
    if opts.get("hierarchy"):
        nested = hierarchical(d)  # also turns d's goniometer into the equivalent flat one
        golden_from = OUT / f"{name}_flat.expt"
        golden_from.write_text(json.dumps(d, indent=1))
        d = nested
    path.write_text(json.dumps(d, indent=1))
    spacing = (1, 10, 10) if opts.get("default_spacing") else SPACING
    if opts.get("scan_points"):
        patch_scan_points(d)
    try:
        golden = mdx2_golden(golden_from, spacing)
    finally:
        unpatch_scan_points()
    np.savez_compressed(OUT / f"{name}.npz", spacing=np.array(spacing, dtype=float), **golden)
    return {"hall": d["crystal"][0]["space_group_hall_symbol"], "spacing": list(spacing),
            "golden_from": golden_from.name, "symbol": golden["space_group_symbol"]}  # fmt: skip


# Space groups checked by tests/test_spacegroup.py against what mdx2 derives from cctbx: reference
# settings of types across all crystal systems and lattices, DIALS-style non-reference settings
# (reference Hall symbol + change of basis), tabulated non-reference Hall symbols, and settings whose
# change of basis to the reference needs an origin shift (mdx2 cannot handle those; cctbx's ASU can).
SPACE_GROUPS = [
    " P 1", "-P 1", " P 2y", " P 2yb", " C 2y", "-P 2ybc", "-C 2yc", " P -2y", " C -2yc", " P 2 2", " P 2c 2",
    " P 2 2ab", " P 2ac 2ab", " C 2c 2", " C 2 2", " F 2 2", " I 2 2", " I 2b 2c", " P 2 -2", "-P 2ac 2n",
    "-C 2c 2",
    " P 4", " P 4w", " P 4c", " I 4", " I 4bw", " P -4", " P 4 2", " P 4ab 2ab", " P 4w 2c", " P 4nw 2abw",
    " I 4 2", " I 4bw 2bw", "-P 4 2", "-I 4bd 2c", " P 3", " P 31", " R 3", "-R 3", " P 3 2", " P 3 2\"",
    ' P 31 2c (0 0 1)', ' P 31 2"', " R 3 2\"", " P 3 -2\"", "-P 3 2", " P 6", " P 61", " P 6c", " P 6 2",
    " P 61 2 (0 0 5)", " P 65 2 (0 0 1)", " P 6c 2c", "-P 6 2", " P 2 2 3", " F 2 2 3", " I 2 2 3",
    " P 2ac 2ab 3",
    " I 2b 2c 3", "-P 2 2 3", " P 4 2 3", " P 4n 2 3", " F 4 2 3", " F 4d 2 3", " I 4 2 3", " P 4acd 2ab 3",
    " P 4bd 2ab 3", " I 4bd 2c 3", "-F 4 2 3", "-I 4 2 3",
    # tabulated, non-reference
    " P 2", " P 2xa", " I 2y", " A 2", "-P 2yn", "-P 2yab", " P 2a 2a", " P 2 2b", " B 2 2", " C 2 2 (x,y,z)",
    " R 3 (-y+z,x+z,-x+y+z)", "-R 3 (-y+z,x+z,-x+y+z)", " P 2 2 -1n", "-P 2ab 2bc", " P 4ab -1ab",
    # as DIALS writes non-tabulated settings
    " C 2y (x+y,-x+y+z,z)", " C 2y (x-y,y,z)", " P 2yb (x+z,y,z)", "-P 2ybc (-x-z,y,x)", " P 2ac 2ab (y,z,x)",
    " I 2 2 (x-y,x+y,z)", " I 4 (x+y,-x+y,z)", " P 31 2\" (x-y,x,z)", " R 3 (x-y,x,z)", " P 2 2 (x+y,-x+y,z)",
    # needing an origin shift
    " C -2yac", "-C 2yac", "-P 2ybc (x+1/4,y,z)", " A 2 -2a (y+z,-y+z+1/2,x-1/4)",
]  # fmt: skip


def _xyz(op) -> str:
    return op.as_xyz()


def space_group_goldens() -> dict:
    from cctbx import crystal
    from mdx2.dxtbx_machinery import Experiment

    class FakeCrystal:
        def __init__(self, group):
            self.group = group
            self.cell = sgtbx.space_group_info(group=group).any_compatible_unit_cell(volume=1000)

        def get_crystal_symmetry(self):
            return crystal.symmetry(unit_cell=self.cell, space_group=self.group)

        def get_space_group(self):
            return self.group

    box = range(-4, 5)
    out = {}
    for hall in SPACE_GROUPS:
        group = sgtbx.space_group(hall)
        e = Experiment.__new__(Experiment)
        e._crystal = FakeCrystal(group)
        tidy = e._crystal.get_crystal_symmetry().space_group()
        entry = {
            "number": int(e.space_group_number),
            "symbol": e.space_group_symbol,
            "crystal_system": e.crystal_system,
            "laue_number": int(e.laue_group_number),
            "laue_symbol": e.laue_group_symbol,
            "laue_ops": ";".join(op.r().as_xyz() for op in tidy.build_derived_laue_group().all_ops()),
            "space_group_ops": ";".join(_xyz(op) for op in tidy.all_ops()),
            "reflection_conditions": e.reflection_conditions,
        }
        try:
            entry["asu"] = e.reciprocal_space_asu
        except RuntimeError:  # cctbx refuses as_hkl() for a change of basis with a translation
            entry["asu"] = None
        asu = sgtbx.space_group_info(group=group).reciprocal_space_asu()
        bits = "".join("1" if asu.is_inside((h, k, l)) else "0" for h in box for k in box for l in box)
        entry["asu_box4"] = f"{int(bits, 2):x}"
        out[hall] = entry
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "spacegroups.json").write_text(json.dumps(space_group_goldens(), indent=1) + "\n")
    index = {}
    for name, (hall, cell, cb, opts) in CASES.items():
        index[name] = make_case(name, hall, cell, cb, opts)
        print(f"{name:18s} {index[name]['hall']!r:40s} {index[name]['symbol']}")
    (OUT / "cases.json").write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    main()
