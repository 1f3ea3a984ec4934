"""Space groups from Hall symbols, with operators in the same order as cctbx.sgtbx.

mdx2 stores the Laue-group operators in the order of cctbx's
``space_group(hall).build_derived_laue_group().all_ops()``, and its ``correct`` step records the index
of the first operator that maps a voxel into the asymmetric unit. Reproducing that index needs the
same order, which is the order in which cctbx's group-closure algorithm first meets each rotation.
This module implements that algorithm in exact rational arithmetic (``fractions.Fraction``):

* a group is kept as cctbx keeps it: representative Seitz matrices ``smx`` (the first is the
  identity), lattice translations ``ltr`` and an optional centre of inversion ``inv_t``;
* ``expand_smx`` adds a generator and closes the group by multiplying ``smx[j] * smx[i]`` in the
  order cctbx does (R. W. Grosse-Kunstleve, Acta Cryst. A55 (1999) 383-395; cctbx
  ``sgtbx/space_group.cpp``), so the order of ``all_ops()`` is cctbx's;
* Hall symbols are parsed by the rules of S. R. Hall, Acta Cryst. A37 (1981) 517-525 (default
  axes of the second and third matrix symbols, screw and translation letters, change of basis).

Rotation arithmetic, changes of basis and the xyz notation live in :mod:`pipeline.symmetry.symops`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from pipeline.errors import InputError
from pipeline.symmetry.symops import (
    IDENTITY,
    ZERO,
    ChangeOfBasis,
    Rot,
    Vec,
    cmp_i_vec,
    mod_positive,
    mod_short,
    parse_xyz,
    rot_det,
    rot_mul,
    rot_neg,
    rot_vec,
    rotation_info,
    vec_add,
    vec_sub,
)

__all__ = ["SpaceGroup", "parse_change_of_basis", "parse_hall", "parse_hall_cached"]


class SpaceGroup:
    """A space group held and closed exactly as cctbx.sgtbx.space_group holds and closes it."""

    def __init__(self, no_expand: bool = False):
        self.no_expand = no_expand
        self.smx: list[tuple[Rot, Vec]] = [(IDENTITY, ZERO)]
        self.ltr: list[Vec] = [ZERO]
        self.centric = False
        self.inv_t: Vec = ZERO
        self._n_lsl = 1
        self._n_ssl = 1

    # -- lattice translations (cctbx tr_group) ------------------------------------------------
    def _ltr_add(self, t: Vec) -> bool:
        t = mod_positive(t)
        if t in self.ltr:
            return False
        self.ltr.append(t)
        return True

    def expand_ltr(self, new_ltr: Vec) -> SpaceGroup:
        if self.no_expand:
            self._ltr_add(new_ltr)
            return self
        for i_smx in range(self._n_ssl, len(self.smx)):
            for i_ltr in range(1, self._n_lsl):
                self._ltr_add(rot_vec(self.smx[i_smx][0], self.ltr[i_ltr]))
        self._n_ssl = len(self.smx)
        trial, i, j = new_ltr, self._n_lsl, 1
        while True:
            self._ltr_add(trial)
            for i_smx in range(1, len(self.smx)):
                i_ltr = self._n_lsl
                while i_ltr < len(self.ltr):  # the list grows inside the loop, as in cctbx
                    self._ltr_add(rot_vec(self.smx[i_smx][0], self.ltr[i_ltr]))
                    i_ltr += 1
            self._n_lsl = len(self.ltr)
            if j > i:
                i, j = i + 1, 1
            if i == len(self.ltr):
                break
            trial = vec_add(self.ltr[j], self.ltr[i])
            j += 1
        return self

    # -- inversion and Seitz matrices --------------------------------------------------------------
    def _add_inv(self, new_inv_t: Vec) -> None:
        if self.centric:
            self._ltr_add(vec_sub(self.inv_t, new_inv_t))
            return
        self.inv_t = mod_positive(new_inv_t)
        self.centric = True
        if not self.no_expand:
            for r, t in self.smx[1:]:
                self._ltr_add(vec_sub(vec_add(rot_vec(r, self.inv_t), vec_add(t, t)), self.inv_t))

    def _add_smx(self, op: tuple[Rot, Vec]) -> None:
        r, t = op
        minus_r = rot_neg(r)
        for s_r, s_t in self.smx:
            if s_r == r:
                self._ltr_add(vec_sub(s_t, t))
                return
            if s_r == minus_r:
                self._add_inv(vec_add(s_t, t))
                return
        if rot_det(r) not in (1, -1) or len(self.smx) >= 24:
            raise InputError(f"non-crystallographic rotation matrix {r} in space-group generators")
        self.smx.append((r, mod_positive(t)))
        if not self.no_expand and self.centric:
            s_r, s_t = self.smx[-1]
            self._ltr_add(vec_sub(vec_add(rot_vec(s_r, self.inv_t), vec_add(s_t, s_t)), self.inv_t))

    def expand_inv(self, inv_t: Vec) -> SpaceGroup:
        self._add_inv(inv_t)
        return self.expand_ltr(ZERO)

    def expand_smx(self, op: tuple[Rot, Vec]) -> SpaceGroup:
        if self.no_expand:
            self._add_smx(op)
            return self
        new, i, j = op, len(self.smx), 1
        while True:
            self._add_smx(new)
            if j > i:
                i, j = i + 1, 1
            if i == len(self.smx):
                break
            (rj, tj), (ri, ti) = self.smx[j], self.smx[i]
            new = (rot_mul(rj, ri), vec_add(rot_vec(rj, ti), tj))
            j += 1
        return self.expand_ltr(ZERO)

    # -- derived groups and views ------------------------------------------------------------------
    @property
    def order_p(self) -> int:
        return len(self.smx) * (2 if self.centric else 1)

    def all_ops(self) -> list[tuple[Rot, Vec]]:
        """Every operation, ``i_op = (i_ltr * f_inv + i_inv) * n_smx + i_smx``, translations not reduced."""
        ops = []
        for lt in self.ltr:
            for inverted in (False, True) if self.centric else (False,):
                for r, t in self.smx:
                    if inverted:
                        ops.append((rot_neg(r), vec_add(vec_sub(self.inv_t, t), lt)))
                    else:
                        ops.append((r, vec_add(t, lt)))
        return ops

    def rotations(self) -> list[Rot]:
        """The point-group rotations in ``all_ops`` order (first lattice translation only)."""
        rots = [r for r, _ in self.smx]
        return rots + [rot_neg(r) for r in rots] if self.centric else rots

    def op_set(self) -> frozenset:
        """All operations with translations reduced to [0, 1): equal sets mean equal groups."""
        return frozenset((r, mod_positive(t)) for r, t in self.all_ops())

    def build_derived_laue_group(self) -> SpaceGroup:
        """cctbx ``build_derived_group(discard_z=True, add_inv=True)``: rotations only, plus -1."""
        result = SpaceGroup()
        result.expand_inv(ZERO)
        for r, _ in self.smx:
            result.expand_smx((r, ZERO))
        return result

    def change_basis(self, cb: ChangeOfBasis) -> SpaceGroup:
        """The same group in another basis, built in cctbx's order (``space_group::change_basis``)."""
        result = SpaceGroup(self.no_expand)
        result.ltr = _change_basis_ltr(self.ltr, cb)
        if self.centric:
            result.expand_inv(cb.translation(self.inv_t, -1))
        for op in self.smx[1:]:
            result.expand_smx(cb.apply(op))
        return result

    def tidy(self) -> SpaceGroup:
        """A copy in cctbx's canonical form (``space_group::make_tidy``).

        cctbx tidies a group whenever it is wrapped in ``space_group_info`` or ``crystal.symmetry``,
        which is how mdx2 reaches it (``crystal.get_crystal_symmetry().space_group()``): proper
        rotations replace improper ones in centric groups, translations are reduced to their shortest
        lattice equivalent, and the Seitz matrices are sorted (higher order first, then by axis,
        sense and translation).
        """
        out = SpaceGroup(self.no_expand)
        out.ltr, out.centric, out.inv_t = list(self.ltr), self.centric, self.inv_t
        out._n_lsl, out._n_ssl = self._n_lsl, self._n_ssl
        smx = list(self.smx)
        if self.centric:
            out.inv_t = _tidy_translation(self.ltr, self.inv_t)
            smx = [smx[0]] + [
                (rot_neg(r), vec_sub(out.inv_t, t)) if rot_det(r) < 0 else (r, t) for r, t in smx[1:]
            ]
        smx = [smx[0]] + [(r, _tidy_translation(self.ltr, t)) for r, t in smx[1:]]
        out.ltr = [out.ltr[0], *sorted(out.ltr[1:])]
        out.smx = [smx[0], *sorted(smx[1:], key=_SmxKey)]
        return out

    def centring_symbol(self) -> str:
        """The conventional centring letter whose translations equal ``ltr``, else '' (cctbx's '\\0')."""
        ours = set(self.ltr)
        for symbol, translations in _CENTRING:
            if len(translations) == len(ours) and {mod_positive(t) for t in translations} == ours:
                return symbol
        return ""


def _tidy_translation(ltr: list[Vec], t: Vec) -> Vec:
    """cctbx ``tr_group::tidy``: the shortest lattice equivalent of t, returned in [0, 1)."""
    best = mod_short(t)
    for lt in ltr[1:]:
        trial = mod_short(vec_add(t, lt))
        if cmp_i_vec(trial, best):
            best = trial
    return mod_positive(best)


class _SmxKey:
    """Sort key implementing cctbx's ``cmp_smx`` (used by ``make_tidy``)."""

    def __init__(self, op):
        self.r, self.t = op
        self.info = rotation_info(self.r)

    def __lt__(self, other) -> bool:
        (ta, eva, sa), (tb, evb, sb) = self.info, other.info
        if abs(ta) != abs(tb):
            return abs(ta) > abs(tb)
        if ta != tb:
            return ta > tb
        if cmp_i_vec(eva, evb) or cmp_i_vec(evb, eva):
            return cmp_i_vec(eva, evb)
        if sa != sb:
            return sa > sb
        if cmp_i_vec(self.t, other.t) or cmp_i_vec(other.t, self.t):
            return cmp_i_vec(self.t, other.t)
        if self.r != other.r:
            return self.r < other.r
        return self.t < other.t


def _ltr_expand(elems: list[Vec], new_t: Vec) -> None:
    """cctbx ``tr_group::expand``: add a translation and close under addition."""

    def add(t):
        t = mod_positive(t)
        if t not in elems:
            elems.append(t)

    new, i, j = new_t, len(elems), 1
    while True:
        add(new)
        if j > i:
            i, j = i + 1, 1
        if i == len(elems):
            break
        new = vec_add(elems[j], elems[i])
        j += 1


def _change_basis_ltr(ltr: list[Vec], cb: ChangeOfBasis) -> list[Vec]:
    result = [ZERO]
    for axis in range(3):
        unit = tuple(Fraction(int(k == axis)) for k in range(3))
        _ltr_expand(result, cb.translation(unit, 1))
    for t in ltr[1:]:
        _ltr_expand(result, cb.translation(t, 1))
    return result


def _f(*values) -> Vec:
    return tuple(Fraction(v) for v in values)


# Conventional centring translations, in the order of cctbx's table (sgtbx/lattice_tr.cpp).
_CENTRING = (
    ("P", (_f(0, 0, 0),)),
    ("A", (_f(0, 0, 0), _f(0, "1/2", "1/2"))),
    ("B", (_f(0, 0, 0), _f("1/2", 0, "1/2"))),
    ("C", (_f(0, 0, 0), _f("1/2", "1/2", 0))),
    ("I", (_f(0, 0, 0), _f("1/2", "1/2", "1/2"))),
    ("R", (_f(0, 0, 0), _f("2/3", "1/3", "1/3"), _f("1/3", "2/3", "2/3"))),
    ("H", (_f(0, 0, 0), _f("2/3", "1/3", 0), _f("1/3", "2/3", 0))),
    ("F", (_f(0, 0, 0), _f(0, "1/2", "1/2"), _f("1/2", 0, "1/2"), _f("1/2", "1/2", 0))),
)
_CENTRING_OF = dict(_CENTRING)

# Hall's rotation matrices (order, direction code) along z, and the translation letters.
_HALL_ROT = {
    (1, ""): (1, 0, 0, 0, 1, 0, 0, 0, 1),
    (2, ""): (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    (2, "'"): (0, -1, 0, -1, 0, 0, 0, 0, -1),
    (2, '"'): (0, 1, 0, 1, 0, 0, 0, 0, -1),
    (3, ""): (0, -1, 0, 1, -1, 0, 0, 0, 1),
    (3, "*"): (0, 0, 1, 1, 0, 0, 0, 1, 0),
    (4, ""): (0, -1, 0, 1, 0, 0, 0, 0, 1),
    (6, ""): (1, -1, 0, 1, 0, 0, 0, 0, 1),
}
_R3_111 = _HALL_ROT[(3, "*")]
_R3I_111 = rot_mul(_R3_111, _R3_111)
_HALL_TR = {
    "a": _f("1/2", 0, 0),
    "b": _f(0, "1/2", 0),
    "c": _f(0, 0, "1/2"),
    "n": _f("1/2", "1/2", "1/2"),
    "u": _f("1/4", 0, 0),
    "v": _f(0, "1/4", 0),
    "w": _f(0, 0, "1/4"),
    "d": _f("1/4", "1/4", "1/4"),
}
_DIR_CODES = {"'": "'", '"': '"', "*": "*", ",": "'", ".": "'", ";": '"', ":": '"'}


def _hall_rotation(improper: bool, order: int, axis: str, direction: str) -> Rot:
    r = _HALL_ROT[(order, direction)]
    if improper:
        r = rot_neg(r)
    if axis == "x":
        return rot_mul(rot_mul(_R3_111, r), _R3I_111)
    if axis == "y":
        return rot_mul(rot_mul(_R3I_111, r), _R3_111)
    return r


@dataclass
class _Symbol:
    improper: bool = False
    order: int = 0
    screw: int = 0
    axis: str = ""
    direction: str = ""
    t: Vec = ZERO


def _parse_matrix_symbol(word: str, symbol: str) -> _Symbol:
    s = _Symbol()
    chars = list(word)
    if chars and chars[0] == "-":
        s.improper = True
        chars.pop(0)
    if not chars or chars[0] not in "12346":
        raise InputError(f"Hall symbol {symbol!r}: expected a rotation order 1, 2, 3, 4 or 6 in {word!r}")
    s.order = int(chars.pop(0))
    if chars and chars[0] in "12345":
        s.screw = int(chars.pop(0))
        if s.screw >= s.order:
            raise InputError(f"Hall symbol {symbol!r}: improper screw translation in {word!r}")
    for c in chars:
        if c.lower() in "xyz":
            if s.axis:
                raise InputError(f"Hall symbol {symbol!r}: several axis symbols in {word!r}")
            s.axis = c.lower()
        elif c in _DIR_CODES:
            if s.direction:
                raise InputError(f"Hall symbol {symbol!r}: several direction codes in {word!r}")
            s.direction = _DIR_CODES[c]
        elif c.lower() in _HALL_TR:
            s.t = mod_positive(vec_add(s.t, _HALL_TR[c.lower()]))
        else:
            raise InputError(f"Hall symbol {symbol!r}: unexpected character {c!r} in {word!r}")
    return s


def _apply_default_axes(s: _Symbol, index: int, first: _Symbol | None, symbol: str) -> None:
    """Hall's implicit axes: the second and third symbols depend on the first (Hall 1981, table 3)."""
    if not s.axis:
        if index == 0:
            if s.order != 1 and not (s.order == 3 and s.direction == "*"):
                s.axis = "z"
        elif index == 1:
            if s.order == 2:
                if first.order in (2, 4):
                    if not s.direction:
                        s.axis = "x"
                elif first.order in (3, 6):
                    if not s.direction:
                        s.direction = "'"
                    s.axis = first.axis
            elif s.order == 3 and first.order in (2, 4) and not s.direction:
                s.direction = "*"
        elif index == 2 and s.order == 3 and not s.direction:
            s.direction = "*"
    if not s.axis and s.direction in ("'", '"'):
        s.axis = "z"
    if not s.axis and s.order != 1 and s.direction != "*":
        raise InputError(f"Hall symbol {symbol!r}: a matrix symbol needs an explicit axis")
    if (s.order, s.direction) not in _HALL_ROT:
        raise InputError(
            f"Hall symbol {symbol!r}: inconsistent matrix symbol (order {s.order}, {s.direction!r})"
        )


def parse_change_of_basis(text: str, symbol: str = "") -> ChangeOfBasis:
    """A Hall change-of-basis part: ``0 0 1`` (origin shift in twelfths) or ``x,y,-x+z``."""
    parts = text.split()
    if len(parts) == 3 and all(re.fullmatch(r"[+-]?\d+", p) for p in parts):
        shift = tuple(Fraction(int(p), 12) for p in parts)  # Hall's short form: origin shift in 1/12
        return ChangeOfBasis.from_matrix(IDENTITY, shift)
    r, t = parse_xyz(text, symbol)
    return ChangeOfBasis.from_matrix(r, t)


def parse_hall(symbol: str, *, no_centring: bool = False, no_expand: bool = False) -> SpaceGroup:
    """The space group of a Hall symbol such as ``-P 2ybc`` or ``C 2y (x+y,-x+y+z,z)``.

    ``no_centring`` parses matrix symbols only (as for normaliser generators); ``no_expand`` adds
    them without group multiplication.
    """
    if not isinstance(symbol, str) or not symbol.strip():
        raise InputError(f"expected a Hall symbol such as '-P 2ybc', got {symbol!r}")
    body, cb = symbol.replace("_", " "), None
    if "(" in body:
        body, _, rest = body.partition("(")
        if not rest.rstrip().endswith(")") or "(" in rest:
            raise InputError(f"Hall symbol {symbol!r}: malformed change-of-basis part")
        cb = parse_change_of_basis(rest.rstrip()[:-1], symbol)
    words = body.split()
    group = SpaceGroup(no_expand=no_expand)
    if not no_centring:
        if not words:
            raise InputError(f"Hall symbol {symbol!r}: lattice type not specified")
        lattice = words.pop(0)
        if lattice.startswith("-"):
            group.expand_inv(ZERO)
            lattice = lattice[1:]
        if lattice.upper() not in _CENTRING_OF or (len(lattice) != 1):
            raise InputError(
                f"Hall symbol {symbol!r}: unknown lattice symbol {lattice!r} (expected P A B C I R H F)"
            )
        for t in _CENTRING_OF[lattice.upper()][1:]:
            group.expand_ltr(t)
    first = None
    for index, word in enumerate(words):
        s = _parse_matrix_symbol(word, symbol)
        _apply_default_axes(s, index, first, symbol)
        r = _hall_rotation(s.improper, s.order, s.axis, s.direction)
        t = s.t
        if s.screw:
            k = "xyz".index(s.axis or "z")
            t = tuple(t[i] + (Fraction(s.screw, s.order) if i == k else 0) for i in range(3))
        group.expand_smx((r, t))
        if index == 0:
            first = s
    if cb is not None:
        group = group.change_basis(cb)
    return group


@lru_cache(maxsize=1024)
def parse_hall_cached(symbol: str) -> SpaceGroup:
    """parse_hall for table symbols; callers must not modify the returned group."""
    return parse_hall(symbol)
