"""Search spaces written as YAML files, loaded into callables with rl_zoo3's sampler signature.

A YAML space and a Python space are interchangeable: :func:`load_space_file` returns a
:class:`YamlSearchSpace`, called like any sampler ``space(trial, n_actions, n_envs, additional_args)``
and returning the algorithm's constructor kwargs. The whole file is checked when it is loaded, so
a typo fails with :class:`SpaceFileError` (``"{path}: {key}: {reason}"``) before any trial runs.

Complete example (``hyperparams/spaces/ppo_conditional.yml`` is a larger one)::

    name: ppo-conditional          # optional, default: the file stem
    description: PPO with a conditional learning-rate schedule   # optional, first line is shown
    algos: [ppo, a2c]              # optional: algorithms it serves (default: any)
    params:                        # Optuna parameters, suggested in file order (define-by-run)
      one_minus_gamma: {type: float, low: 0.0001, high: 0.1, log: true, to: gamma, transform: one_minus}
      n_steps_pow: {type: int, low: 5, high: 12, to: n_steps, transform: pow2}
      lr_schedule: {type: categorical, choices: [constant, linear], to: null}
      learning_rate: {type: float, low: 1.0e-5, high: 1.0e-2, log: true, when: {lr_schedule: constant}}
      learning_rate_initial: {type: float, low: 1.0e-5, high: 1.0e-2, log: true,
                              when: {lr_schedule: linear}, to: learning_rate, transform: linear}
      activation: {type: categorical, choices: {tanh: "torch.nn:Tanh", relu: "torch.nn:ReLU"},
                   to: policy_kwargs.activation_fn}
      n_layers: {type: int, low: 1, high: 3, to: null}
      width: {type: int, low: 5, high: 8, transform: pow2, to: null}
    fixed:                         # constant kwargs, always passed (dotted destinations allowed)
      policy_kwargs.ortho_init: false
    derived:                       # Python expressions; a value may be {value: EXPR, when: {...}}
      policy_kwargs.net_arch: "dict(pi=[width] * n_layers, vf=[width] * n_layers)"
      clip_range: {value: "0.2 if lr_schedule == 'constant' else 0.1", when: {activation: relu}}
    user_attrs:                    # expressions stored with trial.set_user_attr(name, value)
      n_steps_total: "n_steps_pow * n_envs"

Sections (any other top-level key is an error):

``params``
    One Optuna parameter per key (the key is the Optuna name), suggested in file order. Fields:
    ``type`` (``float`` | ``int`` | ``categorical``); ``low``/``high`` and optional ``log``
    and ``step`` (float, int; ``log`` excludes ``step``); ``choices`` (categorical: a list of
    str/int/float/bool/null, or a mapping label -> value, the Optuna parameter holding the label);
    ``transform`` (``one_minus``: ``1 - x``; ``pow2``: ``2 ** x``, int only; ``linear``: rl_zoo3's
    ``linear_schedule(x)``); ``to`` (destination kwarg, default the key; ``a.b`` nests into the
    dict ``a``; ``null``/``false``: not passed, a selector used only by conditions and
    expressions); ``when`` (see below).
``fixed``
    ``destination: value`` pairs always passed; dict values merge with other entries aimed at
    the same dict.
``derived``
    ``destination: "expression"`` or ``destination: {value: "expression", when: {...}}``.
``user_attrs``
    ``name: "expression"`` (or ``{value: ..., when: ...}``), stored on the trial with
    ``trial.set_user_attr`` (objects as readable strings, see :func:`zoo_ext.record.plain`).

``when`` maps earlier params to a value or a list of values: the entry is active only when every
named param is active in this trial and its Optuna value (the label, for a categorical) is listed.
Inactive params are never suggested, so they never appear in ``trial.params``.

A string of the form ``package.module:attr`` among categorical choice values or ``fixed`` values
is imported (``zoo_ext.registry.import_dotted``) when the file loads, and the object is passed.

Expressions are evaluated with ``eval`` in a namespace holding every param by key with its final
value (after mapping and transform, so ``n_steps_pow`` above holds ``2 ** x``; None when
inactive), earlier ``derived`` values whose destination is a plain name, ``n_envs``,
``n_actions``, ``additional_args``, and ``min max round int float abs bool len sum dict list tuple
range str log exp sqrt linear pow2``; nothing else, no other builtins. The syntax is checked
when the file loads against an allow-list: literals (numbers, strings, lists, tuples, dicts,
sets), arithmetic, comparisons, ``and``/``or``/``not``, ``x if c else y``, subscripts and slices,
comprehensions, calls, and the attributes ``get keys values items`` (for
``additional_args.get('x')``) only. Any other attribute (``().__class__``), a name starting with
``__``, ``lambda``, ``:=`` and f-strings are load errors, as are unknown names (``getattr``,
``__import__``) and syntax errors.

Per trial: params in file order, then ``fixed``, then ``derived`` in file order, then
``user_attrs``. Unlike PyYAML's default, the file reads as YAML 1.2 does for these: ``1e-5`` is
a float, and only ``true``/``false`` (``True``, ``TRUE``, ...) are booleans, so ``yes``, ``no``,
``on``, ``off``, ``y`` and ``n`` are strings (``choices: [off, on]`` gives two string choices).
A key repeated in one mapping is an error.
"""

from __future__ import annotations

import ast
import copy
import keyword
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType
from typing import TYPE_CHECKING, Any

import yaml

from zoo_ext.adapter import linear_schedule
from zoo_ext.registry import DottedPathError, import_dotted
from zoo_ext.spaces._probe import InvalidSearchSpaceError, accepted_kwargs

if TYPE_CHECKING:
    import optuna

__all__ = ["SpaceFileError", "YamlSearchSpace", "is_space_file", "load_space_file"]

logger = logging.getLogger(__name__)

_SECTIONS = ("name", "description", "algos", "params", "fixed", "derived", "user_attrs")
_TYPES = ("float", "int", "categorical")
_TRANSFORMS = ("one_minus", "pow2", "linear")
_NUMERIC_FIELDS = ("type", "low", "high", "log", "step", "transform", "to", "when")
_FIELDS = {
    "float": _NUMERIC_FIELDS,
    "int": _NUMERIC_FIELDS,
    "categorical": ("type", "choices", "transform", "to", "when"),
}
_ALL_FIELDS = ("type", "low", "high", "log", "step", "choices", "transform", "to", "when")
_EXPR_FIELDS = ("value", "when")
_RESERVED_ATTRS = ("hyperparams", "search_space")  # user attrs zoo_ext writes itself (zoo_ext.record)
_DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


class SpaceFileError(InvalidSearchSpaceError):
    """Raised for a search-space file that cannot be used; the message is ``"{path}: {key}: {reason}"``."""

    def __init__(self, path: str | Path, key: str, reason: str) -> None:
        super().__init__(str(path), key, reason)
        self.path = str(path)
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.key}: {self.reason}"


def is_space_file(name: str) -> bool:
    """Return True when ``name`` is a YAML file name (``.yml`` or ``.yaml``)."""
    return name.lower().endswith((".yml", ".yaml"))


# --- expression namespace ----------------------------------------------------------------------


def _pow2(x: int) -> int:
    return int(2**x)


_FUNCTIONS: dict[str, Any] = {
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
_CONTEXT = ("n_envs", "n_actions", "additional_args")
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
_RESERVED_NAMES = frozenset(_FUNCTIONS) | frozenset(_CONTEXT)

_TRANSFORM_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "one_minus": lambda x: 1 - x,
    "pow2": _pow2,
    "linear": linear_schedule,
}


_ALLOWED = (
    f" (allowed: arithmetic, comparisons, and/or/not, if-else, literals, subscripts, comprehensions, calls of"
    f" {', '.join(_FUNCTIONS)}, and attributes {', '.join(sorted(_ATTRIBUTES))})"
)


def _refused(node: ast.AST) -> str | None:
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


# --- YAML reading ----------------------------------------------------------------------------------


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(key, line)
        self.key = key
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-5`` as a float and rejects a key repeated in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 booleans only: yes/no/on/off/y/n stay strings (PyYAML follows YAML 1.1 there).
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise SpaceFileError(path, "file", "file not found")
    if not path.is_file():
        raise SpaceFileError(path, "file", "not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpaceFileError(path, "file", f"cannot be read: {exc}") from exc
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except _DuplicateKey as exc:
        raise SpaceFileError(path, str(exc.key), f"duplicate key (line {exc.line})") from exc
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise SpaceFileError(path, "file", f"not valid YAML: {detail}") from exc
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise SpaceFileError(path, "top level", f"must be a mapping of sections, got {kind}")
    for key in data:
        if key not in _SECTIONS:
            raise SpaceFileError(path, str(key), f"unknown section; valid sections: {', '.join(_SECTIONS)}")
    return data


# --- parsed entries ----------------------------------------------------------------------------------

_When = dict[str, tuple[Any, ...]]


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps booleans apart from 0 and 1."""
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def _active(when: _When, labels: Mapping[str, Any]) -> bool:
    return all(key in labels and any(_same(labels[key], v) for v in values) for key, values in when.items())


@dataclass
class _Param:
    key: str
    type: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    labels: tuple[Any, ...] = ()
    values: tuple[Any, ...] = ()
    transform: str | None = None
    dest: tuple[str, ...] | None = None
    when: _When = field(default_factory=dict)

    def suggest(self, trial: optuna.Trial) -> Any:
        """Return the Optuna value (the label, for a categorical)."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            step = 1 if self.step is None else int(self.step)
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=step)
        return trial.suggest_categorical(self.key, list(self.labels))

    def final(self, raw: Any) -> Any:
        """Return the kwarg value of Optuna value ``raw``: mapped, then transformed."""
        value = raw
        if self.type == "categorical":
            index = next(i for i, label in enumerate(self.labels) if _same(label, raw))
            value = copy.deepcopy(self.values[index])
        if self.transform is not None:
            value = _TRANSFORM_FUNCTIONS[self.transform](value)
        return value


@dataclass
class _Fixed:
    key: str
    dest: tuple[str, ...]
    value: Any


@dataclass
class _Expr:
    key: str
    source: str
    code: CodeType
    dest: tuple[str, ...] | None
    when: _When = field(default_factory=dict)

    @property
    def alias(self) -> str | None:
        """The plain name later expressions see this value under, if any."""
        return self.dest[0] if self.dest is not None and len(self.dest) == 1 else None


# --- the space ----------------------------------------------------------------------------------------


class YamlSearchSpace:
    """A search space read from a YAML file; call it like any rl_zoo3 sampler."""

    def __init__(
        self,
        path: Path,
        name: str,
        description: str,
        algos: frozenset[str] | None,
        params: list[_Param],
        fixed: list[_Fixed],
        derived: list[_Expr],
        user_attrs: list[_Expr],
    ) -> None:
        self.path = path
        self.name = name
        self.__name__ = name
        self.__doc__ = description
        self.description = description.strip().splitlines()[0] if description.strip() else ""
        self.algos = algos
        self._params = params
        self._fixed = fixed
        self._derived = derived
        self._user_attrs = user_attrs

    def __repr__(self) -> str:
        return f"YamlSearchSpace({self.name!r}, path={str(self.path)!r})"

    @property
    def param_names(self) -> tuple[str, ...]:
        """Return the Optuna parameter names the file defines, in file order."""
        return tuple(p.key for p in self._params)

    def __call__(
        self, trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]
    ) -> dict[str, Any]:
        """Return the constructor kwargs for ``trial``, suggesting only the active parameters."""
        namespace: dict[str, Any] = {
            "__builtins__": {},
            **_FUNCTIONS,
            "n_actions": n_actions,
            "n_envs": n_envs,
            "additional_args": additional_args,
        }
        labels: dict[str, Any] = {}
        kwargs: dict[str, Any] = {}
        for param in self._params:
            if not _active(param.when, labels):
                namespace[param.key] = None
                continue
            labels[param.key] = raw = param.suggest(trial)
            namespace[param.key] = value = param.final(raw)
            if param.dest is not None:
                self._put(kwargs, param.dest, value, param.key)
        for entry in self._fixed:
            self._put(kwargs, entry.dest, copy.deepcopy(entry.value), entry.key)
        for expr in self._derived:
            alias = expr.alias
            if not _active(expr.when, labels):
                if alias is not None:
                    namespace.setdefault(alias, None)
                continue
            value = self._eval(expr, namespace)
            assert expr.dest is not None
            self._put(kwargs, expr.dest, value, expr.key)
            if alias is not None:
                namespace[alias] = value
        if self._user_attrs:
            from zoo_ext.record import plain

            for expr in self._user_attrs:
                if _active(expr.when, labels):
                    trial.set_user_attr(expr.key, plain(self._eval(expr, namespace)))
        return kwargs

    def _eval(self, expr: _Expr, namespace: dict[str, Any]) -> Any:
        try:
            return eval(expr.code, namespace)  # the file's own expression, no builtins
        except Exception as exc:
            raise SpaceFileError(
                self.path, expr.key, f"expression {expr.source!r} raised {type(exc).__name__}: {exc}"
            ) from exc

    def _put(self, kwargs: dict[str, Any], dest: tuple[str, ...], value: Any, key: str) -> None:
        node = kwargs
        for depth, part in enumerate(dest[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(dest[: depth + 1])
                raise SpaceFileError(self.path, key, f"cannot nest into {where!r}, which holds {child!r}, not a dict")
            node = child
        leaf = dest[-1]
        if leaf not in node:
            node[leaf] = value
        elif isinstance(node[leaf], dict) and isinstance(value, dict):
            for sub_key, sub_value in value.items():
                self._put(node[leaf], (str(sub_key),), sub_value, key)
        else:
            raise SpaceFileError(self.path, key, f"destination {'.'.join(dest)!r} is already set in this trial")


# --- loading ------------------------------------------------------------------------------------------


class _Parser:
    """Checks one file's sections and builds the entries of a :class:`YamlSearchSpace`."""

    def __init__(self, path: Path, algo_class: type | None) -> None:
        self.path = path
        self.algo_class = algo_class
        self.params: dict[str, _Param] = {}
        self.all_param_keys: set[str] = set()
        self.derived_aliases: list[str] = []

    def fail(self, key: Any, reason: str) -> SpaceFileError:
        return SpaceFileError(self.path, str(key), reason)

    def section(self, data: dict[str, Any], name: str) -> dict[Any, Any]:
        value = data.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(name, f"must be a mapping, got {type(value).__name__}")
        return value

    # destinations

    def dest(self, key: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"destination must be a kwarg name such as policy_kwargs.net_arch, got {value!r}")
        parts = tuple(value.split("."))
        for part in parts:
            if not part.isidentifier() or keyword.iskeyword(part):
                raise self.fail(key, f"destination {value!r}: {part!r} is not a valid keyword argument name")
        valid = accepted_kwargs(self.algo_class) if self.algo_class is not None else None
        if valid is not None and parts[0] not in valid:
            raise self.fail(
                key,
                f"{parts[0]!r} is a key the algorithm does not accept ({self.algo_class.__name__});"  # type: ignore[union-attr]
                f" valid keys: {', '.join(sorted(valid))}",
            )
        return parts

    # conditions

    def when(self, key: str, value: Any) -> _When:
        if not isinstance(value, dict) or not value:
            raise self.fail(key, f"when must be a non-empty mapping of parameter -> value(s), got {value!r}")
        when: _When = {}
        for name, allowed in value.items():
            if name == key:
                raise self.fail(key, "condition on itself: when may only name earlier parameters")
            if name not in self.params:
                raise self.fail(key, self._missing(str(name)))
            values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
            if not values:
                raise self.fail(key, f"condition on {name!r} lists no values")
            for item in values:
                if item is not None and not isinstance(item, (str, int, float, bool)):
                    raise self.fail(key, f"condition on {name!r}: values must be scalars, got {item!r}")
            parent = self.params[name]
            if parent.type == "categorical":
                for item in values:
                    if not any(_same(item, label) for label in parent.labels):
                        choices = ", ".join(map(repr, parent.labels))
                        raise self.fail(
                            key, f"condition value {item!r} is not a choice of {name!r} (choices: {choices})"
                        )
            when[str(name)] = values
        return when

    def _missing(self, name: str) -> str:
        if name in self.all_param_keys:
            return f"condition on parameter {name!r}, which is defined later (when may only name earlier parameters)"
        known = ", ".join(self.params) or "none"
        return f"condition on a missing parameter {name!r} (parameters defined before it: {known})"

    # params

    def parse_params(self, section: dict[Any, Any]) -> list[_Param]:
        self.all_param_keys = {str(k) for k in section}
        for key, spec in section.items():
            self.params[str(key)] = self.param(key, spec)
        return list(self.params.values())

    def param(self, key: Any, spec: Any) -> _Param:
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
            raise self.fail(key, "parameter names must be Python identifiers (expressions use them as names)")
        if key in _RESERVED_NAMES:
            raise self.fail(key, f"{key!r} is a reserved name in expressions; rename the parameter")
        if not isinstance(spec, dict):
            raise self.fail(key, f"spec must be a mapping such as {{type: float, low: 0, high: 1}}, got {spec!r}")
        for name in spec:
            if name not in _ALL_FIELDS:
                raise self.fail(key, f"unknown field {name!r}; valid fields: {', '.join(_ALL_FIELDS)}")
        kind = spec.get("type")
        if kind is None:
            raise self.fail(key, f"missing type (one of {', '.join(_TYPES)})")
        if kind not in _TYPES:
            raise self.fail(key, f"unknown type {kind!r}; valid types: {', '.join(_TYPES)}")
        for name in spec:
            if name not in _FIELDS[kind]:
                raise self.fail(key, f"field {name!r} does not apply to {kind} parameters")
        param = _Param(key, kind)
        if kind == "categorical":
            self.choices(param, spec)
        else:
            self.bounds(param, spec)
        transform = spec.get("transform")
        if transform is not None:
            self.check_transform(param, transform)
            param.transform = transform
        to = spec.get("to", key)
        param.dest = None if to is None or to is False else self.dest(key, to)
        if "when" in spec:
            param.when = self.when(key, spec["when"])
        return param

    def bounds(self, param: _Param, spec: dict[str, Any]) -> None:
        key, kind = param.key, param.type
        for name in ("low", "high"):
            if name not in spec:
                raise self.fail(key, f"missing {name} ({kind} parameters need low and high)")
            value = spec[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.fail(key, f"{name} must be a number, got {value!r}")
            if kind == "int" and not isinstance(value, int):
                raise self.fail(key, f"{name} must be an integer for an int parameter, got {value!r}")
            if not math.isfinite(value):
                raise self.fail(key, f"{name} must be finite, got {value!r}")
        param.low, param.high = spec["low"], spec["high"]
        if param.low > param.high:
            raise self.fail(key, f"low > high ({param.low} > {param.high})")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise self.fail(key, f"log must be true or false, got {log!r}")
        param.log = log
        step = spec.get("step")
        if step is not None:
            if log:
                raise self.fail(key, "log and step cannot be used together (a log scale has no grid)")
            if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
                raise self.fail(key, f"step must be a positive number, got {step!r}")
            if kind == "int" and not isinstance(step, int):
                raise self.fail(key, f"step must be an integer for an int parameter, got {step!r}")
            param.step = step
        if log and param.low <= 0:
            raise self.fail(key, f"log scale needs low > 0, got low={param.low}")

    def choices(self, param: _Param, spec: dict[str, Any]) -> None:
        key = param.key
        if "choices" not in spec:
            raise self.fail(key, "missing choices (categorical parameters need a list or a mapping label -> value)")
        choices = spec["choices"]
        if isinstance(choices, list):
            pairs = [(item, item) for item in choices]
        elif isinstance(choices, dict):
            pairs = list(choices.items())
        else:
            raise self.fail(key, f"choices must be a list or a mapping label -> value, got {choices!r}")
        if not pairs:
            raise self.fail(key, "empty choices")
        labels: list[Any] = []
        for label, _ in pairs:
            if label is not None and not isinstance(label, (str, int, float, bool)):
                raise self.fail(
                    key,
                    f"choice {label!r}: Optuna choices must be str, int, float, bool or null;"
                    " map labels to other values with {label: value}",
                )
            if any(_same(label, seen) for seen in labels):
                raise self.fail(key, f"duplicate choice {label!r}")
            labels.append(label)
        param.labels = tuple(labels)
        param.values = tuple(self.imported(key, value) for _, value in pairs)

    def imported(self, key: str, value: Any, what: str = "choice value") -> Any:
        """Return ``value`` with every ``package.module:attr`` string replaced by the object."""
        if isinstance(value, str) and _DOTTED.match(value):
            try:
                return import_dotted(value)
            except DottedPathError as exc:
                raise self.fail(key, f"{what} {value!r} does not import: {exc}") from exc
        if isinstance(value, list):
            return [self.imported(key, item, what) for item in value]
        if isinstance(value, dict):
            return {k: self.imported(key, item, what) for k, item in value.items()}
        return value

    def check_transform(self, param: _Param, transform: Any) -> None:
        key = param.key
        if transform not in _TRANSFORMS:
            raise self.fail(key, f"unknown transform {transform!r}; valid transforms: {', '.join(_TRANSFORMS)}")
        if transform == "pow2" and param.type != "int":
            raise self.fail(key, f"transform pow2 needs an int parameter, not {param.type}")
        if param.type == "categorical":
            for value in param.values:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise self.fail(key, f"transform {transform} needs numeric choices, got {value!r}")

    # fixed, derived, user attrs

    def parse_fixed(self, section: dict[Any, Any]) -> list[_Fixed]:
        entries = []
        for key, value in section.items():
            name = str(key)
            value = self.imported(name, value, "value")
            entries.append(_Fixed(name, self.dest(name, key), value))
        return entries

    def parse_exprs(self, section: dict[Any, Any], *, derived: bool) -> list[_Expr]:
        entries = []
        for key, spec in section.items():
            name = str(key)
            if not derived and (not name.isidentifier() or name in _RESERVED_ATTRS):
                raise self.fail(name, f"user attribute names must be identifiers other than {_RESERVED_ATTRS}")
            when: _When = {}
            if isinstance(spec, dict):
                for field_name in spec:
                    if field_name not in _EXPR_FIELDS:
                        raise self.fail(name, f"unknown field {field_name!r}; valid fields: {', '.join(_EXPR_FIELDS)}")
                if "value" not in spec:
                    raise self.fail(name, "missing value (the expression)")
                if "when" in spec:
                    when = self.when(name, spec["when"])
                source = spec["value"]
            else:
                source = spec
            if not isinstance(source, str):
                hint = " (put constants in fixed:)" if derived else ""
                raise self.fail(name, f"expression must be a string of Python, got {source!r}{hint}")
            code = self.compile_expr(name, source)
            dest = self.dest(name, key) if derived else None
            entry = _Expr(name, source, code, dest, when)
            entries.append(entry)
            if derived and entry.alias is not None:
                self.derived_aliases.append(entry.alias)
        return entries

    def compile_expr(self, key: str, source: str) -> CodeType:
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise self.fail(key, f"expression {source!r} does not compile: {exc.msg}") from exc
        bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        known = set(self.params) | set(self.derived_aliases) | _RESERVED_NAMES | bound
        for node in ast.walk(tree):
            refused = _refused(node)
            if refused:
                raise self.fail(key, f"expression {source!r} uses {refused}, which expressions may not use{_ALLOWED}")
            if isinstance(node, ast.Name) and node.id not in known:
                names = ", ".join([*self.params, *self.derived_aliases, *_CONTEXT])
                raise self.fail(key, f"unknown name {node.id!r} in expression {source!r} (known: {names})")
        return compile(tree, f"<{self.path.name}: {key}>", "eval")

    def check_duplicates(self, entries: list[tuple[str, tuple[str, ...] | None, _When]]) -> None:
        owners: dict[tuple[str, ...], str] = {}
        for key, dest, when in entries:
            if dest is None or when:
                continue
            if dest in owners:
                raise self.fail(key, f"destination {'.'.join(dest)!r} is also set by {owners[dest]!r}")
            owners[dest] = key

    def header(self, data: dict[str, Any]) -> tuple[str, str, frozenset[str] | None]:
        name = data.get("name", self.path.stem)
        if not isinstance(name, str) or not name.strip():
            raise self.fail("name", f"must be a non-empty string, got {name!r}")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise self.fail("description", f"must be a string, got {description!r}")
        algos = data.get("algos")
        algo_set: frozenset[str] | None = None
        if algos is not None:
            items = [algos] if isinstance(algos, str) else algos
            if not isinstance(items, list) or not items or not all(isinstance(a, str) and a for a in items):
                raise self.fail("algos", f"must be an algorithm name or a non-empty list of names, got {algos!r}")
            algo_set = frozenset(a.lower() for a in items)
        return name.strip(), description or f"search space from {self.path.name}", algo_set


def load_space_file(path: str | Path, *, algo_class: type | None = None) -> YamlSearchSpace:
    """Return the search space in YAML file ``path``, checked whole (raises :class:`SpaceFileError`).

    With ``algo_class`` (e.g. ``stable_baselines3.PPO``), every top-level destination must also be
    a keyword argument its constructor accepts.
    """
    file = Path(path).expanduser()
    data = _read(file)
    parser = _Parser(file, algo_class)
    name, description, algos = parser.header(data)
    params = parser.parse_params(parser.section(data, "params"))
    fixed = parser.parse_fixed(parser.section(data, "fixed"))
    derived = parser.parse_exprs(parser.section(data, "derived"), derived=True)
    user_attrs = parser.parse_exprs(parser.section(data, "user_attrs"), derived=False)
    parser.check_duplicates(
        [(p.key, p.dest, p.when) for p in params]
        + [(f.key, f.dest, {}) for f in fixed]
        + [(d.key, d.dest, d.when) for d in derived]
    )
    space = YamlSearchSpace(file, name, description, algos, params, fixed, derived, user_attrs)
    logger.debug("loaded search space %r from %s (%d parameters)", name, file, len(params))
    return space
