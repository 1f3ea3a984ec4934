"""Everything geometry.nxs records about the space group, derived from a Hall symbol without cctbx.

mdx2 takes these from cctbx (``mdx2/dxtbx_machinery.py``); we reproduce cctbx's results:

* operators: ``space_group.all_ops()`` and ``build_derived_laue_group().all_ops()`` in cctbx's order
  (see :mod:`pipeline.symmetry.hall`); mdx2's ``correct`` records the index of the first Laue
  operator that maps a voxel into the asymmetric unit, so the order matters;
* type number and symbol (cctbx ``space_group_type``): via the "reference Hall symbol (change of
  basis)" form that DIALS writes, else gemmi's table of settings, else a search
  (:mod:`pipeline.symmetry.sgsearch`);
* the reciprocal-space asymmetric unit: cctbx transforms one of 10 tabulated units by a canonical
  change of basis from the given setting to the reference setting of the type
  (:mod:`pipeline.symmetry.cbop`). mdx2 cannot handle settings whose change of basis needs an origin
  shift (cctbx's ``as_hkl`` refuses it); for those we still write a valid asymmetric unit and flag
  when cctbx's choice could differ (``SymmetryInfo.exact``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

from pipeline.errors import InputError
from pipeline.symmetry import sgtables
from pipeline.symmetry.cbop import best_change_of_basis
from pipeline.symmetry.hall import SpaceGroup, parse_change_of_basis, parse_hall, parse_hall_cached
from pipeline.symmetry.sgsearch import find_change_of_basis, origin_shift
from pipeline.symmetry.symops import (
    IDENTITY,
    ChangeOfBasis,
    as_int_rot,
    format_hkl,
    format_xyz,
    mod_positive,
    mod_short,
    parse_xyz,
    rot_mul,
    rot_vec,
    rotation_info,
)

__all__ = ["SymmetryInfo", "describe_space_group", "point_group_code", "reflection_conditions"]


@dataclass(frozen=True, eq=False)
class SymmetryInfo:
    """What mdx2 writes to ``/entry/symmetry`` (and the space-group symbol of ``/entry/crystal``)."""

    hall_symbol: str
    space_group_number: int
    space_group_symbol: str
    crystal_system: str
    space_group_operators: np.ndarray  # (N, 3, 4) float: rotation | translation
    laue_group_number: int
    laue_group_symbol: str
    laue_group_operators: np.ndarray  # (M, 3, 3) float
    reciprocal_space_asu: str
    reflection_conditions: str
    #: False when cctbx's choice of ASU orientation depends on origin shifts, which we do not rank
    exact: bool = True
    #: the change of basis to the reference setting needs an origin shift (mdx2 cannot import those)
    origin_shift: bool = False


# --- point groups -------------------------------------------------------------------------------

_POINT_GROUP_RANGES = (
    (1, 1, "1"), (2, 2, "-1"), (3, 5, "2"), (6, 9, "m"), (10, 15, "2/m"), (16, 24, "222"),
    (25, 46, "mm2"), (47, 74, "mmm"), (75, 80, "4"), (81, 82, "-4"), (83, 88, "4/m"), (89, 98, "422"),
    (99, 110, "4mm"), (111, 122, "-42m"), (123, 142, "4/mmm"), (143, 146, "3"), (147, 148, "-3"),
    (149, 155, "32"), (156, 161, "3m"), (162, 167, "-3m"), (168, 173, "6"), (174, 174, "-6"),
    (175, 176, "6/m"), (177, 182, "622"), (183, 186, "6mm"), (187, 190, "-6m2"), (191, 194, "6/mmm"),
    (195, 199, "23"), (200, 206, "m-3"), (207, 214, "432"), (215, 220, "-43m"), (221, 230, "m-3m"),
)  # fmt: skip
_LAUE_OF = {
    "1": "-1", "-1": "-1", "2": "2/m", "m": "2/m", "2/m": "2/m", "222": "mmm", "mm2": "mmm", "mmm": "mmm",
    "4": "4/m", "-4": "4/m", "4/m": "4/m", "422": "4/mmm", "4mm": "4/mmm", "-42m": "4/mmm", "4/mmm": "4/mmm",
    "3": "-3", "-3": "-3", "32": "-3m", "3m": "-3m", "-3m": "-3m", "6": "6/m", "-6": "6/m", "6/m": "6/m",
    "622": "6/mmm", "6mm": "6/mmm", "-6m2": "6/mmm", "6/mmm": "6/mmm", "23": "m-3", "m-3": "m-3",
    "432": "m-3m", "-43m": "m-3m", "m-3m": "m-3m",
}  # fmt: skip
_CRYSTAL_SYSTEM = {
    "-1": "Triclinic", "2/m": "Monoclinic", "mmm": "Orthorhombic", "4/m": "Tetragonal", "4/mmm": "Tetragonal",
    "-3": "Trigonal", "-3m": "Trigonal", "6/m": "Hexagonal", "6/mmm": "Hexagonal",
    "m-3": "Cubic", "m-3m": "Cubic",
}  # fmt: skip
# Space-group types of the Laue groups with a primitive, centred or rhombohedral lattice.
_LAUE_NUMBERS = {
    "-1": (2,), "2/m": (10, 12), "mmm": (47, 65, 69, 71), "4/m": (83, 87), "4/mmm": (123, 139),
    "-3": (147, 148), "-3m": (162, 164, 166), "6/m": (175,), "6/mmm": (191,), "m-3": (200, 202, 204),
    "m-3m": (221, 225, 229),
}  # fmt: skip


# mdx2's lookup_reflection_conditions (reflection conditions of the lattice centring).
_REFLECTION_CONDITIONS = {
    "P": "True",
    "F": (
        "(((h + k) % 2 == 0) & ((h + l) % 2 == 0) & ((k + l) % 2 == 0)) "
        "| ((h % 2 == k % 2) & (h % 2 == l % 2))"
    ),
    "I": "(h + k + l) % 2 == 0",
    "A": "(k + l) % 2 == 0",
    "B": "(l + h) % 2 == 0",
    "C": "(h + k) % 2 == 0",
    "D": "(h + k + l) % 3 == 0",
    "H": "(h - k) % 3 == 0",
    "R": "(- h + k + l) % 3 == 0",
}


def point_group_code(group: SpaceGroup) -> str:
    """The point group, counted from rotation types as cctbx's ``space_group::point_group_type``."""
    n = len(group.smx)
    c = {}
    for r, _ in group.smx:
        t = rotation_info(r)[0]
        c[t] = c.get(t, 0) + 1
    centric = group.centric

    def k(t):
        return c.get(t, 0)

    if k(-3) + k(3) == 8:
        if n == 12:
            return "m-3" if centric else "23"
        if centric:
            return "m-3m"
        return "432" if k(4) == 6 else "-43m"
    if k(-6) + k(6) == 2:
        if n == 6:
            return "6/m" if centric else ("6" if k(6) == 2 else "-6")
        if centric:
            return "6/mmm"
        return ("622" if k(2) == 7 else "6mm") if k(6) == 2 else "-6m2"
    if k(-3) + k(3) == 2:
        if n == 3:
            return "-3" if centric else "3"
        return "-3m" if centric else ("32" if k(2) == 3 else "3m")
    if k(-4) + k(4) == 2:
        if n == 4:
            return "4/m" if centric else ("4" if k(4) == 2 else "-4")
        if centric:
            return "4/mmm"
        return ("422" if k(2) == 5 else "4mm") if k(4) == 2 else "-42m"
    if k(-2) + k(2) == 3:
        return "mmm" if centric else ("222" if k(2) == 3 else "mm2")
    if k(-2) + k(2) == 1:
        return "2/m" if centric else ("2" if k(2) == 1 else "m")
    if n == 1:
        return "-1" if centric else "1"
    raise AssertionError(f"rotation types {c} form no crystallographic point group")


def _numbers_of_point_group(code: str) -> range:
    for first, last, pg in _POINT_GROUP_RANGES:
        if pg == code:
            return range(first, last + 1)
    raise AssertionError(code)


def reflection_conditions(group: SpaceGroup) -> str:
    """mdx2's reflection-condition string for the group's lattice centring.

    For a centring that is not one of the conventional letters (possible after a change of basis)
    mdx2 finds no string and writes none, leaving a file it cannot read back; we write the general
    condition instead: h . t is an integer for every centring translation t.
    """
    known = _REFLECTION_CONDITIONS.get(group.centring_symbol())
    if known is not None:
        return known
    terms = []
    for t in group.ltr[1:]:
        n = 1
        for x in t:
            n = n * Fraction(x).denominator // np.gcd(n, Fraction(x).denominator)
        coefs = [int(x * n) for x in t]
        expr = " + ".join(f"{c} * {name}" for c, name in zip(coefs, "hkl", strict=True) if c)
        terms.append(f"(({expr}) % {n} == 0)")
    return " & ".join(terms)


# --- the tabulated settings -----------------------------------------------------------------------


@lru_cache(maxsize=1)
def _settings() -> dict[int, list[tuple[str, str, bool]]]:
    table: dict[int, list[tuple[str, str, bool]]] = {}
    for number, hall, symbol, ref in sgtables.settings():
        table.setdefault(number, []).append((hall, symbol, ref))
    return table


def _reference(number: int) -> tuple[str, str]:
    """(Hall symbol, extended Hermann-Mauguin symbol) of the reference setting of a type."""
    for hall, symbol, is_ref in _settings()[number]:
        if is_ref:
            return hall, symbol
    raise AssertionError(number)


def _strip_cb(hall: str) -> str:
    return hall.split("(")[0]


def _normalise(hall: str) -> str:
    return " ".join(hall.replace("_", " ").split())


@lru_cache(maxsize=1)
def _stripped_references() -> dict[str, int]:
    return {_normalise(_strip_cb(_reference(n)[0])): n for n in range(1, 231)}


def _gemmi_setting(group: SpaceGroup):
    """gemmi's tabulated setting with exactly these operations (gemmi knows all of cctbx's 530), or None."""
    import gemmi

    ops = [gemmi.Op(format_xyz(r, mod_positive(t))) for r, t in group.all_ops()]
    return gemmi.find_spacegroup_by_ops(gemmi.GroupOps(ops))


def _maps_rotations(group: SpaceGroup, cb: ChangeOfBasis, target: SpaceGroup) -> bool:
    """c maps the group's rotations onto the target's and its lattice into the target's lattice."""
    rotations = set(target.rotations())
    for r in group.rotations():
        if as_int_rot(rot_mul(rot_mul(cb.c, r), cb.c_inv)) not in rotations:
            return False
    columns = [tuple(cb.c[3 * i + j] for i in range(3)) for j in range(3)]
    return all(mod_positive(t) in target.ltr for t in columns + [rot_vec(cb.c, lt) for lt in group.ltr[1:]])


def _identify(hall: str, group: SpaceGroup) -> tuple[int, ChangeOfBasis]:
    """Space-group number and a change of basis c with c group c^-1 = the reference setting (up to origin)."""
    prefix, _, rest = hall.partition("(")
    number = _stripped_references().get(_normalise(prefix)) if rest else None
    if number is not None:  # DIALS writes "reference (change of basis V)": group = V reference V^-1
        cb = parse_change_of_basis(rest.rstrip()[:-1], hall).inverse()
        # valid unless V maps the reference lattice onto a proper sublattice of Z^3 (the closure then
        # adds translations and the type changes, e.g. "P 2 2 (x+y,-x+y,z)" is C 2 2 2)
        target = parse_hall_cached(_strip_cb(_reference(number)[0]))
        if _maps_rotations(group, cb, target):
            if 3 <= number <= 15 and max(abs(x) for x in cb.c) > 2:  # a shorter start for the shear search
                cb = find_change_of_basis(group, target) or cb
            return number, cb
    number = None
    setting = _gemmi_setting(group)
    if setting is not None:  # gemmi's basisop takes its reference setting (same rotations as cctbx's) here
        number = setting.number
        target = parse_hall_cached(_strip_cb(_reference(number)[0]))
        r, t = parse_xyz(setting.basisop.triplet())
        cb = ChangeOfBasis.from_matrix(r, t).inverse()
        if _maps_rotations(group, cb, target):
            return number, cb
    candidates = [number] if number is not None else list(_numbers_of_point_group(point_group_code(group)))
    for number in candidates:
        target = parse_hall_cached(_strip_cb(_reference(number)[0]))
        if group.op_set() == target.op_set():
            return number, ChangeOfBasis.from_matrix(IDENTITY)
        cb = find_change_of_basis(group, target)
        if cb is not None:
            return number, cb
    raise InputError(f"cannot determine the space-group type of Hall symbol {hall!r}")


# --- the strings mdx2 stores -----------------------------------------------------------------------


def _asu_expression(number: int, c) -> str:
    """mdx2's numexpr form of cctbx's reference ASU, with h, k, l replaced by (h k l) @ c_inv."""
    text = sgtables.REFERENCE_ASU[sgtables.ASU_OF_NUMBER[number - 1]]
    text = re.sub(r"([hkl0<>=]+)", r"(\1)", text)
    text = text.replace("and", "&").replace("or", "|")
    if c != IDENTITY:
        columns = format_hkl(ChangeOfBasis.from_matrix(c).c_inv).split(",")
        mapping = {name: f"({expr})" for name, expr in zip("hkl", columns, strict=True)}
        text = re.sub("(h|k|l)", lambda m: mapping[m.group()], text)
    return text


def _lookup_symbol(group: SpaceGroup, number: int, best, exact: bool) -> str:
    """cctbx lookup_symbol: the tabulated setting equal to the group, else the universal symbol.

    The universal symbol is the reference symbol followed by the change of basis from the reference
    setting, written as the shorter of its "abc" and "xyz" forms (cctbx change_of_basis_op::symbol).
    """
    ops = group.op_set()
    for hall, symbol, _ in _settings()[number]:
        if parse_hall_cached(hall).op_set() == ops:
            return symbol
    ref_hall, ref_symbol = _reference(number)
    shift = (Fraction(0),) * 3
    if not exact:  # cctbx would pick the shortest of several shifts; we take one valid shift
        found = origin_shift(group.change_basis(ChangeOfBasis.from_matrix(best)), parse_hall_cached(ref_hall))
        shift = mod_short(found) if found is not None else shift
    cb = ChangeOfBasis.from_matrix(best, shift)
    abc = format_xyz(tuple(cb.c[3 * j + i] for i in range(3) for j in range(3)), mod_short(cb.c_t), "abc")
    xyz = format_xyz(cb.c_inv, mod_short(cb.c_inv_t))
    return f"{ref_symbol} ({xyz if len(abc) > len(xyz) else abc})"


def _laue_group_number(laue: SpaceGroup, laue_code: str) -> int:
    ops = laue.op_set()
    for number in _LAUE_NUMBERS[laue_code]:
        target = parse_hall_cached(_reference(number)[0])
        if ops == target.op_set() or find_change_of_basis(laue, target, translations=False) is not None:
            return number
    raise AssertionError(f"no Laue group type for {laue_code}")


def _operators(group: SpaceGroup, with_translation: bool) -> np.ndarray:
    out = []
    for r, t in group.all_ops():
        rot = np.asarray(r, dtype=np.float64).reshape(3, 3)
        out.append(
            np.hstack((rot, np.asarray([float(x) for x in t]).reshape(3, 1))) if with_translation else rot
        )
    return np.stack(out)


def describe_space_group(hall: str) -> SymmetryInfo:
    """All symmetry information mdx2 derives with cctbx from a crystal's Hall symbol."""
    group = parse_hall(hall)
    code = point_group_code(group)
    laue_code = _LAUE_OF[code]
    number, c0 = _identify(hall, group)
    best, exact, certain = best_change_of_basis(group, number, _reference(number)[0], c0)
    symbol = _lookup_symbol(group, number, best, exact)
    tidy = group.tidy()  # mdx2 reaches the group through crystal.symmetry, which tidies it
    laue = tidy.build_derived_laue_group()
    return SymmetryInfo(
        hall_symbol=hall,
        space_group_number=number,
        space_group_symbol=symbol,
        crystal_system=_CRYSTAL_SYSTEM[laue_code],
        space_group_operators=_operators(tidy, True),
        laue_group_number=_laue_group_number(laue, laue_code),
        laue_group_symbol=laue_code,
        laue_group_operators=_operators(laue, False),
        reciprocal_space_asu=_asu_expression(number, best),
        reflection_conditions=reflection_conditions(group),
        exact=certain,
        origin_shift=not exact,
    )
