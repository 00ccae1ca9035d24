"""The expression language of YAML search spaces: the names an expression sees and the syntax it may use."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import Any

from zoo_ext.adapter import linear_schedule

__all__ = ["ALLOWED", "CONTEXT", "FUNCTIONS", "RESERVED_NAMES", "TRANSFORMS", "refused"]


def _pow2(x: int) -> int:
    return int(2**x)


#: The functions an expression may call (no other builtins).
FUNCTIONS: dict[str, Any] = {
    "min": min,
    "max": max,
    "round": round,
    "int": int,
    "float": float,
    "abs": abs,
    "bool": bool,
    "len": len,
    "sum": sum,
    "dict": dict,
    "list": list,
    "tuple": tuple,
    "range": range,
    "str": str,
    "log": math.log,
    "exp": math.exp,
    "sqrt": math.sqrt,
    "linear": linear_schedule,
    "pow2": _pow2,
}
#: The names of the sampler's own arguments an expression sees.
CONTEXT = ("n_envs", "n_actions", "additional_args")
#: The only attributes an expression may read (mapping methods, e.g. ``additional_args.get('x')``).
_ATTRIBUTES = frozenset({"get", "keys", "values", "items"})
#: The only syntax an expression may use: no lambda, walrus, f-string or ``await``.
_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Store, ast.Attribute, ast.Subscript, ast.Slice,
    ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension,
    ast.Tuple, ast.List, ast.Dict, ast.Set, ast.Starred, ast.Call, ast.keyword,
    ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is, ast.IsNot,
    ast.IfExp,
)  # fmt: skip
#: Names a parameter may not take: expressions see them already.
RESERVED_NAMES = frozenset(FUNCTIONS) | frozenset(CONTEXT)

#: A parameter's ``transform``, by name.
TRANSFORMS: dict[str, Callable[[Any], Any]] = {
    "one_minus": lambda x: 1 - x,
    "pow2": _pow2,
    "linear": linear_schedule,
}

#: What an expression may use, appended to the message refusing one.
ALLOWED = (
    f" (allowed: arithmetic, comparisons, and/or/not, if-else, literals, subscripts, comprehensions, calls of"
    f" {', '.join(FUNCTIONS)}, and attributes {', '.join(sorted(_ATTRIBUTES))})"
)


def refused(node: ast.AST) -> str | None:
    """Return what ``node`` does that an expression may not do, or None if it is allowed."""
    if not isinstance(node, _NODES):
        return f"{type(node).__name__} syntax"
    if isinstance(node, ast.Attribute) and node.attr not in _ATTRIBUTES:
        return f"attribute {node.attr!r}"
    if isinstance(node, ast.Name) and node.id.startswith("__"):
        return f"name {node.id!r}"
    if isinstance(node, ast.comprehension) and node.is_async:
        return "async for"
    return None
