"""Rational symmetry-operation algebra shared by the space-group code (no cctbx).

Rotation parts are integer 3x3 matrices stored as 9-tuples (row-major); translations and
change-of-basis matrices hold ``fractions.Fraction`` so every result is exact. Conventions follow
cctbx.sgtbx: a change of basis maps coordinates x -> c x + c_t; operations transform as c op c^-1;
``as_xyz``/``as_hkl`` formats and the ``cmp_i_vec`` ordering are cctbx's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from math import gcd

from pipeline.errors import InputError

__all__ = [
    "IDENTITY",
    "ZERO",
    "ChangeOfBasis",
    "as_int_rot",
    "cmp_i_vec",
    "format_hkl",
    "format_xyz",
    "mod_positive",
    "mod_short",
    "parse_xyz",
    "rot_det",
    "rot_inv",
    "rot_mul",
    "rot_neg",
    "rot_vec",
    "rotation_info",
    "vec_add",
    "vec_sub",
]

Rot = tuple  # 9 ints (or Fractions for change-of-basis matrices), row-major
Vec = tuple  # 3 Fractions

IDENTITY: Rot = (1, 0, 0, 0, 1, 0, 0, 0, 1)
ZERO: Vec = (Fraction(0), Fraction(0), Fraction(0))


def rot_mul(a: Rot, b: Rot) -> Rot:
    """Matrix product a @ b of two row-major 3x3 tuples."""
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = a
    b0, b1, b2, b3, b4, b5, b6, b7, b8 = b
    return (
        a0 * b0 + a1 * b3 + a2 * b6, a0 * b1 + a1 * b4 + a2 * b7, a0 * b2 + a1 * b5 + a2 * b8,
        a3 * b0 + a4 * b3 + a5 * b6, a3 * b1 + a4 * b4 + a5 * b7, a3 * b2 + a4 * b5 + a5 * b8,
        a6 * b0 + a7 * b3 + a8 * b6, a6 * b1 + a7 * b4 + a8 * b7, a6 * b2 + a7 * b5 + a8 * b8,
    )  # fmt: skip


def rot_vec(a: Rot, v: Vec) -> Vec:
    """a @ v, skipping zero entries (rotation matrices are sparse; Fraction arithmetic is slow)."""
    out = []
    for i in range(3):
        acc = 0
        for j in range(3):
            c = a[3 * i + j]
            if c == 1:
                acc = acc + v[j]
            elif c == -1:
                acc = acc - v[j]
            elif c:
                acc = acc + c * v[j]
        out.append(acc)
    return tuple(out)


def rot_neg(a: Rot) -> Rot:
    return tuple(-x for x in a)


def rot_det(a: Rot):
    return (
        a[0] * (a[4] * a[8] - a[5] * a[7])
        - a[1] * (a[3] * a[8] - a[5] * a[6])
        + a[2] * (a[3] * a[7] - a[4] * a[6])
    )


def rot_inv(a: Rot) -> Rot:
    """Exact inverse (Fractions) of a 3x3 matrix."""
    det = Fraction(rot_det(a))
    if det == 0:
        raise InputError(f"change-of-basis matrix {a} is singular")
    cof = (
        a[4] * a[8] - a[5] * a[7], a[2] * a[7] - a[1] * a[8], a[1] * a[5] - a[2] * a[4],
        a[5] * a[6] - a[3] * a[8], a[0] * a[8] - a[2] * a[6], a[2] * a[3] - a[0] * a[5],
        a[3] * a[7] - a[4] * a[6], a[1] * a[6] - a[0] * a[7], a[0] * a[4] - a[1] * a[3],
    )  # fmt: skip
    return tuple(Fraction(x) / det for x in cof)


def vec_add(a: Vec, b: Vec) -> Vec:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def vec_sub(a: Vec, b: Vec) -> Vec:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def mod_positive(v: Vec) -> Vec:
    """Each component reduced to [0, 1)."""
    return tuple(x % 1 for x in v)


def as_int_rot(a: Rot) -> Rot | None:
    """The matrix with int entries, or None when an entry is not integral."""
    out = []
    for x in a:
        x = Fraction(x)
        if x.denominator != 1:
            return None
        out.append(int(x))
    return tuple(out)


@dataclass(frozen=True)
class ChangeOfBasis:
    """x' = c x + c_t (coordinates in the new basis from the old); c_inv is the inverse operation."""

    c: Rot
    c_t: Vec
    c_inv: Rot
    c_inv_t: Vec

    @staticmethod
    def from_matrix(c: Rot, c_t: Vec = ZERO) -> ChangeOfBasis:
        c = tuple(Fraction(x) for x in c)
        c_t = tuple(Fraction(x) for x in c_t)
        c_inv = rot_inv(c)
        c_inv_t = tuple(-x for x in rot_vec(c_inv, c_t))
        return ChangeOfBasis(c, c_t, c_inv, c_inv_t)

    def inverse(self) -> ChangeOfBasis:
        return ChangeOfBasis(self.c_inv, self.c_inv_t, self.c, self.c_t)

    def translation(self, t: Vec, sign: int) -> Vec:
        """c (sign*I | t) c_inv, translation part (cctbx ``cb_op(t, sign)``)."""
        tw = vec_add(t, self.c_inv_t) if sign >= 0 else vec_sub(t, self.c_inv_t)
        return vec_add(rot_vec(self.c, tw), self.c_t)

    def apply(self, op: tuple[Rot, Vec]) -> tuple[Rot, Vec]:
        """c * op * c_inv; raises InputError when the rotation part is not integral in the new basis."""
        r, t = op
        new_r = as_int_rot(rot_mul(rot_mul(self.c, r), self.c_inv))
        if new_r is None:
            raise InputError("change of basis does not map the symmetry operations onto integer matrices")
        new_t = vec_add(rot_vec(self.c, vec_add(rot_vec(r, self.c_inv_t), t)), self.c_t)
        return new_r, new_t


def cmp_i_vec(a, b) -> bool:
    """cctbx ``utils::cmp_i_vec``: True if a sorts before b (more zeros, then non-zeros first,
    then smaller magnitudes, then larger values)."""
    za, zb = sum(x == 0 for x in a), sum(x == 0 for x in b)
    if za != zb:
        return za > zb
    for x, y in zip(a, b, strict=True):
        if (x != 0) != (y != 0):
            return x != 0
    for x, y in zip(a, b, strict=True):
        if abs(x) != abs(y):
            return abs(x) < abs(y)
    for x, y in zip(a, b, strict=True):
        if x != y:
            return x > y
    return False


def mod_short(v: Vec) -> Vec:
    """Each component reduced to (-1/2, 1/2]."""
    return tuple((x % 1) - 1 if (x % 1) > Fraction(1, 2) else x % 1 for x in v)


def rotation_info(r: Rot) -> tuple[int, tuple[int, int, int], int]:
    """cctbx ``rot_mx_info``: (type, axis direction as a primitive integer vector, sense of rotation)."""
    trace = r[0] + r[4] + r[8]
    det = rot_det(r)
    rtype = (
        {3: 1, -1: 2, 0: 3, 1: 4, 2: 6}[trace] if det == 1 else {-3: -1, 1: -2, 0: -3, -1: -4, -2: -6}[trace]
    )
    if abs(rtype) == 1:
        return rtype, (0, 0, 0), 0
    proper = r if det == 1 else rot_neg(r)
    m = [proper[3 * i : 3 * i + 3] for i in range(3)]
    m = [[m[i][j] - (i == j) for j in range(3)] for i in range(3)]
    ev = (0, 0, 0)
    for a, b in ((0, 1), (0, 2), (1, 2)):  # the axis is the cross product of two independent rows
        ra, rb = m[a], m[b]
        ev = (ra[1] * rb[2] - ra[2] * rb[1], ra[2] * rb[0] - ra[0] * rb[2], ra[0] * rb[1] - ra[1] * rb[0])
        if any(ev):
            break
    g = 0
    for x in ev:
        g = gcd(g, abs(x))
    ev = tuple(x // g for x in ev)
    if ev[2] < 0 or (ev[2] == 0 and (ev[1] < 0 or (ev[1] == 0 and ev[0] < 0))):
        ev = tuple(-x for x in ev)
    f = 1 if rtype > 0 else -1
    if f * trace in (3, -1):
        return rtype, ev, 0
    if ev[1] == 0 and ev[2] == 0:
        sense = 1 if ev[0] * f * r[7] > 0 else -1
    else:
        sense = 1 if f * (r[3] * ev[2] - r[6] * ev[1]) > 0 else -1
    return rtype, ev, sense


_TERM = re.compile(r"([+-]?)(\d+(?:/\d+)?)?(\*?)([a-z]?)")


def parse_xyz(text: str, what: str = "") -> tuple[Rot, Vec]:
    """Parse a symmetry operation or change of basis such as ``x+y,-x+y+z,z`` or ``x,y,z+1/3``."""
    rows = [p.strip().replace(" ", "") for p in text.lower().split(",")]
    if len(rows) != 3:
        raise InputError(f"{what or text!r}: expected three comma-separated expressions in {text!r}")
    r = [Fraction(0)] * 9
    t = [Fraction(0)] * 3
    for i, row in enumerate(rows):
        pos = 0
        if not row:
            raise InputError(f"{what or text!r}: empty expression in {text!r}")
        while pos < len(row):
            m = _TERM.match(row, pos)
            if not m or m.end() == pos or (m.group(3) and not m.group(4)):
                raise InputError(f"{what or text!r}: cannot parse {row!r} in {text!r}")
            sign = -1 if m.group(1) == "-" else 1
            coef = Fraction(m.group(2)) if m.group(2) else Fraction(1)
            var = m.group(4)
            if var:
                if var not in "xyz":
                    raise InputError(f"{what or text!r}: unknown variable {var!r} in {text!r}")
                r[3 * i + "xyz".index(var)] += sign * coef
            elif m.group(2):
                t[i] += sign * coef
            else:
                raise InputError(f"{what or text!r}: cannot parse {row!r} in {text!r}")
            pos = m.end()
    return tuple(r), tuple(t)


def _format_terms(coefs, letters, constant=Fraction(0)) -> str:
    out = ""
    for c, letter in zip(coefs, letters, strict=True):
        c = Fraction(c)
        if c == 0:
            continue
        sign = "-" if c < 0 else "+"
        a = abs(c)
        out += sign + (letter if a == 1 else f"{a}*{letter}")
    if constant != 0:
        c = Fraction(constant)
        out += ("-" if c < 0 else "+") + str(abs(c))
    out = out.lstrip("+")
    return out or "0"


def format_xyz(r: Rot, t: Vec = ZERO, letters: str = "xyz") -> str:
    """cctbx ``rt_mx::as_xyz``: rows of (r|t) as ``x+y,-x+y+z,z+1/3``."""
    return ",".join(_format_terms(r[3 * i : 3 * i + 3], letters, t[i]) for i in range(3))


def format_hkl(r: Rot) -> str:
    """cctbx ``rot_mx::as_hkl``: (h, k, l) @ r, one expression per column, e.g. ``h-l,k,l``."""
    return ",".join(_format_terms((r[j], r[3 + j], r[6 + j]), "hkl") for j in range(3))
