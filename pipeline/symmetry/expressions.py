"""A whitelisted parser for the boolean Miller-index expressions stored in geometry.nxs.

mdx2 stores the reciprocal-space asymmetric unit and the reflection conditions as strings, e.g.
``(h>=0) & (((l>=h) & (k>h)) | ((l==h) & (k==h)))`` or ``(h + k + l) % 2 == 0``, and evaluates them
with numexpr. A string read from a file must never reach ``eval``: we parse it with :mod:`ast`
(parsing executes nothing), accept only the node types below, and evaluate the tree ourselves on
numpy integer arrays with numexpr's semantics (``/`` true division, ``%`` floor modulo, ``&``/``|``
elementwise).

Accepted: the names ``h``, ``k``, ``l``; integer, float and boolean literals; ``+ - * / // %``;
``& | ^ ~``; ``and or not``; comparisons ``== != < <= > >=`` (chained too); parentheses.
"""

from __future__ import annotations

import ast
import functools
import itertools
import operator
from dataclasses import dataclass

import numpy as np

from pipeline.errors import InputError

__all__ = ["MillerExpression", "parse_miller_expression"]

MAX_LENGTH = 4000
MAX_DEPTH = 60

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: np.true_divide,
    ast.FloorDiv: np.floor_divide,
    ast.Mod: np.mod,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
}
_UNARY = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Invert: operator.invert,
    ast.Not: np.logical_not,
}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_NAMES = ("h", "k", "l")


def _check(node: ast.AST, text: str, depth: int = 0) -> None:
    """Raise InputError unless every node of the tree is on the whitelist."""
    if depth > MAX_DEPTH:
        raise InputError(f"Miller-index expression nests deeper than {MAX_DEPTH} levels: {text!r}")
    ok = False
    if isinstance(node, ast.Expression):
        ok = True
    elif isinstance(node, ast.BinOp):
        ok = type(node.op) in _BINARY
    elif isinstance(node, ast.UnaryOp):
        ok = type(node.op) in _UNARY
    elif isinstance(node, ast.BoolOp):
        ok = isinstance(node.op, ast.And | ast.Or)
    elif isinstance(node, ast.Compare):
        ok = all(type(op) in _COMPARE for op in node.ops)
    elif isinstance(node, ast.Name):
        ok = node.id in _NAMES and isinstance(node.ctx, ast.Load)
    elif isinstance(node, ast.Constant):
        # integers beyond int64 would overflow numpy's arithmetic (an OverflowError, not an answer)
        ok = isinstance(node.value, bool | float) or (isinstance(node.value, int) and abs(node.value) < 2**62)
    elif isinstance(node, ast.operator | ast.unaryop | ast.cmpop | ast.boolop | ast.expr_context):
        ok = True
    if not ok:
        what = getattr(node, "id", None) or type(node).__name__
        raise InputError(
            f"unsupported element {what!r} in Miller-index expression {text!r}; "
            "allowed are h, k, l, numbers, arithmetic, comparisons and & | ~ and or not"
        )
    for child in ast.iter_child_nodes(node):
        _check(child, text, depth + 1)


def _evaluate(node: ast.AST, values: dict[str, np.ndarray]):
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, values)
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, values), _evaluate(node.right, values))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, values))
    if isinstance(node, ast.BoolOp):
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        result = _evaluate(node.values[0], values)
        for v in node.values[1:]:
            result = combine(result, _evaluate(v, values))
        return result
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, values)
        result = True
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(comparator, values)
            result = np.logical_and(result, _COMPARE[type(op)](left, right))
            left = right
        return result
    raise AssertionError(f"unchecked node {type(node).__name__}")  # _check rejects everything else


def _is_linear(node: ast.AST) -> bool:
    """True for sums and differences of h, k, l times integer constants."""
    if isinstance(node, ast.Name):
        return True
    if isinstance(node, ast.Constant):
        return type(node.value) is int
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, ast.USub | ast.UAdd) and _is_linear(node.operand)
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Add | ast.Sub):
            return _is_linear(node.left) and _is_linear(node.right)
        if isinstance(node.op, ast.Mult):
            sides = (node.left, node.right)
            constant = [isinstance(side, ast.Constant) and type(side.value) is int for side in sides]
            return any(constant) and _is_linear(node.left) and _is_linear(node.right)
    return False


def _as_int(v) -> np.ndarray:
    """Integer arrays stay as they are (int32 is enough for Miller indices); others become int64."""
    v = np.asarray(v)
    return v if v.dtype in (np.int32, np.int64) else v.astype(np.int64)


@dataclass(frozen=True)
class MillerExpression:
    """A parsed expression; call it with integer arrays h, k, l to get a boolean array."""

    text: str
    tree: ast.Expression

    def __call__(self, h, k, l) -> np.ndarray:
        values = {name: _as_int(v) for name, v in zip(_NAMES, (h, k, l), strict=True)}
        result = _evaluate(self.tree, values)
        return np.broadcast_to(np.asarray(result, dtype=bool), np.broadcast(*values.values()).shape)

    @functools.cached_property
    def _planes(self) -> list[tuple[ast.AST, ast.AST]] | None:
        """The two sides of every comparison, if the expression is a boolean combination of
        comparisons between linear forms of h, k, l with no constant term (each splits space at a
        plane through the origin); otherwise None."""
        nodes = linear_comparisons(self.tree, allow_constants=True)
        if nodes is None:
            return None
        return [pair for node in nodes for pair in itertools.pairwise([node.left, *node.comparators])]

    def on_planes(self, h, k, l) -> np.ndarray | None:
        """Where some comparison of the expression holds with equality (``a == b`` for ``a >= b``,
        say): the boundaries between the regions of constant truth value. None when the expression
        is not made of comparisons of linear forms through the origin (then no such boundary exists).
        """
        if self._planes is None:
            return None
        values = {name: _as_int(v) for name, v in zip(_NAMES, (h, k, l), strict=True)}
        shape = np.broadcast(*values.values()).shape
        out = np.zeros(shape, dtype=bool)
        for left, right in self._planes:
            out |= _evaluate(left, values) == _evaluate(right, values)
        return out


def linear_comparisons(tree: ast.AST, allow_constants: bool = False) -> list[ast.Compare] | None:
    """The comparisons of ``tree`` in walk order, if it is a boolean combination (and, or, ``&``,
    ``|``, ``^``, not, ``~``) of comparisons between linear forms of h, k, l with no constant term;
    otherwise None. ``allow_constants``: ``True`` and ``False`` may stand among them too."""
    zero = {name: np.zeros(1, dtype=np.int64) for name in _NAMES}
    found: list[ast.Compare] = []

    def walk(node) -> bool:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BoolOp):
            return all(walk(v) for v in node.values)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd | ast.BitOr | ast.BitXor):
            return walk(node.left) and walk(node.right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.Invert):
            return walk(node.operand)
        if isinstance(node, ast.Constant):
            return allow_constants and type(node.value) is bool
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if not all(_is_linear(side) and not np.any(_evaluate(side, zero)) for side in sides):
                return False
            found.append(node)
            return True
        return False

    return found if walk(tree) else None


def parse_miller_expression(text: str) -> MillerExpression:
    """Parse ``text`` (from a file) into a :class:`MillerExpression`, accepting only the whitelist."""
    if not isinstance(text, str):
        raise InputError(f"Miller-index expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise InputError(f"Miller-index expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise InputError(f"cannot parse Miller-index expression {text!r}: {exc.msg}") from None
    except (RecursionError, MemoryError):  # e.g. thousands of unary minus signs in a row
        raise InputError(
            f"Miller-index expression nests deeper than {MAX_DEPTH} levels: {text[:200]!r}..."
        ) from None
    _check(tree, text)
    return MillerExpression(text, tree)
