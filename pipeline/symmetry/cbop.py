"""The canonical change of basis to a reference setting, as cctbx's ``find_best_cb_op`` chooses it.

cctbx orients the tabulated reciprocal-space asymmetric unit of a space-group type with a change of
basis from the given setting to the reference setting. Many changes of basis do that; cctbx takes
the candidates (rotations of the affine normaliser of the reference setting) x (any one change of
basis), and for monoclinic groups also a bounded family of shears, and keeps the best by
``cmp_change_of_basis_mx``: the identity, then diagonal matrices, then no origin shift, then the
most zero entries, the most +-1 entries, the most positive entries, then the origin shifts, then
the lexicographically larger matrix (cctbx sgtbx/space_group_type.cpp; normaliser generators from
sgtbx/reference_settings/normalizer.cpp after International Tables Vol. A, chapter 15).

We enumerate the same candidates and apply the same order. cctbx's origin shifts come from a
Smith-normal-form solution we do not reproduce; we only know whether a candidate needs one. That
matters only when every candidate needs a shift (settings mdx2 cannot import at all), and we
report when it could change the choice.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np

from pipeline.symmetry.hall import SpaceGroup, parse_hall, parse_hall_cached
from pipeline.symmetry.symops import IDENTITY, ChangeOfBasis, cmp_i_vec, rot_det, rot_mul

__all__ = ["best_change_of_basis"]

#: Largest shear entry tried in the monoclinic search. cctbx's range grows with the entries of its
#: (already reduced) starting change of basis; a pathological start must not make it explode.
MAX_SHEAR = 4

# Generators of the affine normalisers beyond the group (rotation parts only), from cctbx
# sgtbx/reference_settings/normalizer.cpp after International Tables Vol. A, chapter 15:
# numbers whose normaliser contains -1 ("k2l" column) and the extra rotations ("l2n" column).
_K2L_RANGES = (
    (1, 1), (3, 9), (16, 46), (75, 75), (77, 77), (79, 82), (89, 90), (93, 94), (97, 122), (143, 143),
    (146, 146), (149, 150), (155, 161), (168, 168), (173, 174), (177, 177), (182, 190), (195, 199),
    (207, 211), (214, 220),
)  # fmt: skip
_L2N = {
    **dict.fromkeys((16, 19, 22, 23, 24, 47, 48, 69, 70, 71, 73), "3* -2'"),
    **dict.fromkeys((17, 18, 20, 21, 25, 27, 32, 34, 35, 37, 42, 43, 44, 45, 49, 50, 55, 56, 58, 59, 65,
                     66, 67, 68, 72, 74, 75, 77, 79, 81, 82, 83, 84, 85, 86, 87, 88, 168, 173, 174, 175,
                     176, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 206), "-2'"),
    61: "3*",
    **dict.fromkeys((76, 78, 80, 169, 170, 171, 172), '2"'),
    **dict.fromkeys((143, 147), "2 -2'"),
    **dict.fromkeys((144, 145), '2 2"'),
    **dict.fromkeys((146, 148), '-2"'),
    **dict.fromkeys((149, 150, 151, 152, 153, 154, 156, 157, 158, 159, 162, 163, 164, 165), "2"),
}  # fmt: skip


def _in_ranges(number: int, ranges) -> bool:
    return any(a <= number <= b for a, b in ranges)


@lru_cache(maxsize=256)
def _normaliser_rotations(number: int, reference: str) -> tuple:
    """Proper rotations of the affine normaliser of the reference setting (its point group and more)."""
    target = parse_hall_cached(reference)
    generators = list(target.rotations())
    if _in_ranges(number, _K2L_RANGES):
        generators.append(tuple(-x for x in IDENTITY))
    if number in _L2N:
        extra = parse_hall(_L2N[number], no_centring=True, no_expand=True)
        generators += extra.rotations()[1:] if not extra.centric else extra.rotations()
    group = {IDENTITY}
    frontier = [IDENTITY]
    while frontier:
        new = []
        for a in frontier:
            for g in generators:
                p = rot_mul(a, g)
                if p not in group:
                    group.add(p)
                    new.append(p)
        frontier = new
    return tuple(sorted(r for r in group if rot_det(r) == 1))


def _monoclinic_trials(trial: np.ndarray, number: int):
    """cctbx's bounded search over the (infinite) monoclinic affine normaliser around one candidate.

    ``trial`` holds integer numerators over a common denominator; the shears M have integer entries,
    so the candidates M @ trial share that denominator.
    """
    r00 = r22 = 1
    for i in range(3):
        a, b = int(trial[0, i]), int(trial[2, i])
        lcm = math.lcm(a, b)
        if a:
            r00 = max(r00, abs(lcm // a))
        if b:
            r22 = max(r22, abs(lcm // b))
    r00, r22 = min(r00 + 1, MAX_SHEAR), min(r22 + 1, MAX_SHEAR)  # cap: see MAX_SHEAR
    for r0 in range(-r00, r00 + 1):
        for r2 in range(-r22, r22 + 1):
            for r6 in range(-r00, r00 + 1):
                for r8 in range(-r22, r22 + 1):
                    if number in (5, 8, 12, 9, 15) and (r0 % 2 == 0 or r6 % 2 != 0 or r8 % 2 == 0):
                        continue
                    if number in (7, 13, 14) and (r0 % 2 == 0 or r2 % 2 != 0 or r8 % 2 == 0):
                        continue
                    r4 = r0 * r8 - r2 * r6
                    if r4 in (1, -1):
                        yield np.array([[r0, 0, r2], [0, r4, 0], [r6, 0, r8]], dtype=np.int64) @ trial


def _is_diagonal(m) -> bool:
    return all(m[i] == 0 for i in (1, 2, 3, 5, 6, 7))


def _counts(m, unit: int) -> tuple[int, int, int]:
    """Zero entries, +-1 entries and positive entries of a matrix of numerators over ``unit``."""
    return sum(x == 0 for x in m), sum(abs(x) == unit for x in m), sum(x > 0 for x in m)


def _better(a, b, a_exact: bool, b_exact: bool, unit: int) -> bool:
    """cctbx cmp_change_of_basis_mx: True if change of basis a is preferred over b.

    a and b are numerators over the common denominator ``unit``. Order: identity, then diagonal,
    then no origin shift (``exact``), then most zero entries, most +-1 entries, most positive entries;
    cctbx then compares origin shifts (we only know whether they are zero) and finally prefers the
    lexicographically larger matrix (cmp_i_vec with the arguments swapped).
    """
    identity = tuple(unit * x for x in IDENTITY)
    for flag_a, flag_b in (
        (a == identity, b == identity),
        (_is_diagonal(a), _is_diagonal(b)),
        (a_exact, b_exact),
    ):
        if flag_a != flag_b:
            return flag_a
    ca, cb = _counts(a, unit), _counts(b, unit)
    if ca != cb:
        return ca > cb
    return cmp_i_vec(b, a)


def _ties_before_shift(a, b, unit: int) -> bool:
    """True when cctbx would need the origin shifts to order a and b (both shifted)."""
    identity = tuple(unit * x for x in IDENTITY)
    if (a == identity) != (b == identity) or _is_diagonal(a) != _is_diagonal(b):
        return False
    return _counts(a, unit) == _counts(b, unit)


def _adjugate(m: np.ndarray) -> np.ndarray:
    (a, b, c), (d, e, f), (g, h, i) = m.tolist()
    return np.array(
        [[e * i - f * h, c * h - b * i, b * f - c * e],
         [f * g - d * i, a * i - c * g, c * d - a * f],
         [d * h - e * g, b * g - a * h, a * e - b * d]],
        dtype=np.int64,
    )  # fmt: skip


def _numerators(values, den: int) -> np.ndarray:
    return np.array([int(Fraction(x) * den) for x in values], dtype=np.int64)


class _ExactMap:
    """Tests whether a linear change of basis maps a group exactly onto a target, in integers.

    c maps the group onto the target when c R c^-1 is an integer rotation of the target for every
    generator (R, t), c t equals that operation's translation modulo the target's lattice, and c maps
    the group's lattice into the target's; the orders being equal, the groups are then equal.
    Changes of basis come as integer numerators ``num`` over a denominator ``den``.
    """

    def __init__(self, group: SpaceGroup, target: SpaceGroup):
        ops = list(group.smx)
        if group.centric:
            ops.append((tuple(-x for x in IDENTITY), group.inv_t))
        lattice = [(1, 0, 0), (0, 1, 0), (0, 0, 1), *group.ltr[1:]]
        self.den_in = _common_denominator([t for _, t in ops] + lattice)
        self.rot = np.array([np.asarray(r).reshape(3, 3) for r, _ in ops], dtype=np.int64)
        self.trans = np.stack([_numerators(t, self.den_in) for _, t in ops])
        self.lattice = np.stack([_numerators(t, self.den_in) for t in lattice])
        target_ops = target.all_ops()
        self.den_out = _common_denominator([t for _, t in target_ops] + list(target.ltr))
        self.target: dict = {}
        for r, t in target_ops:
            self.target.setdefault(r, set()).add(
                tuple(int(v) % self.den_out for v in _numerators(t, self.den_out))
            )
        self.target_ltr = {tuple(int(v) for v in _numerators(t, self.den_out)) for t in target.ltr}

    def __call__(self, num: np.ndarray, den: int) -> bool:
        adj = _adjugate(num)
        det = round(np.linalg.det(num))
        rot = num @ self.rot @ adj
        if np.any(rot % det):
            return False
        rot //= det
        scale = den * self.den_in  # c t = num t / den, t = trans / den_in
        common = math.lcm(scale, self.den_out)
        up, down = common // scale, common // self.den_out
        target_ltr = {tuple(v * down for v in t) for t in self.target_ltr}
        for t in (self.lattice @ num.T) * up % common:
            if tuple(int(v) for v in t) not in target_ltr:
                return False
        for r, t in zip(rot, (self.trans @ num.T) * up % common, strict=True):
            allowed = self.target.get(tuple(int(x) for x in r.ravel()))
            if allowed is None or tuple(int(v) // down if v % down == 0 else -1 for v in t) not in allowed:
                return False
        return True


def _common_denominator(vectors) -> int:
    d = 1
    for v in vectors:
        for x in v:
            d = math.lcm(d, Fraction(x).denominator)
    return d


def _candidates(number: int, reference: str, start: np.ndarray) -> dict:
    """cctbx's candidate changes of basis: normaliser rotation x start (monoclinic: times bounded shears)."""
    out = {}
    for n in _normaliser_rotations(number, reference):
        trial = np.asarray(n, dtype=np.int64).reshape(3, 3) @ start
        for c in _monoclinic_trials(trial, number) if 3 <= number <= 15 else (trial,):
            out.setdefault(tuple(int(x) for x in c.ravel()), c)
    return out


def best_change_of_basis(group: SpaceGroup, number: int, reference: str, c0: ChangeOfBasis):
    """cctbx's canonical change of basis from ``group`` to the setting ``reference`` (a Hall symbol).

    ``c0`` is any change of basis onto the reference (up to an origin shift). Returns the rotation
    part (Fractions), whether it maps the group exactly (no origin shift), and whether the choice is
    certain (False only when cctbx would break a tie on origin shifts, which we do not rank).
    """
    den = _common_denominator([c0.c])
    start = _numerators(c0.c, den).reshape(3, 3)
    use_inverse = rot_det(c0.c) < 1  # cctbx compares c_inv when det(c) < det(c_inv)
    det = round(np.linalg.det(start))  # the same for every candidate (normaliser elements have det 1)
    unit = Fraction(abs(det), den) if use_inverse else den  # the numerator of an entry equal to 1
    maps_exactly = _ExactMap(group, parse_hall_cached(reference))
    pool = []
    for key, c in _candidates(number, reference, start).items():
        # c_inv = den * adj(c) / det(c): numerators adj(c) * sign(det) over |det| / den
        compare = tuple(int(x) * (1 if det > 0 else -1) for x in _adjugate(c).ravel()) if use_inverse else key
        pool.append((key, compare, maps_exactly(c, den)))
    best = pool[0]
    for item in pool[1:]:
        if not _better(best[1], item[1], best[2], item[2], unit):
            best = item
    certain = best[2] or not any(
        item[0] != best[0] and not item[2] and _ties_before_shift(item[1], best[1], unit) for item in pool
    )
    return tuple(Fraction(x, den) for x in best[0]), best[2], certain
