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

The structure (sections, fields, types, ranges) is checked by the pydantic models of
:mod:`zoo_ext.spaces._schema`, whose JSON Schema ``python -m zoo_ext schema`` prints for editors;
this module checks the rest: names, destinations, conditions on earlier parameters, expressions
and imports.
"""

from __future__ import annotations

import ast
import copy
import difflib
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
from zoo_ext.registry import DottedPathError, import_dotted, is_dotted_path
from zoo_ext.spaces._probe import InvalidSearchSpaceError, accepted_kwargs

if TYPE_CHECKING:
    import optuna

    from zoo_ext.spaces import _schema

__all__ = ["SpaceFileError", "YamlSearchSpace", "is_space_file", "load_space_file"]

logger = logging.getLogger(__name__)

_RESERVED_ATTRS = ("hyperparams", "search_space")  # user attrs zoo_ext writes itself (zoo_ext.record)


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
    """Checks what the schema cannot (names, destinations, conditions, expressions, imports) and builds entries."""

    def __init__(self, path: Path, algo_class: type | None, param_keys: set[str]) -> None:
        self.path = path
        self.algo_class = algo_class
        self.all_param_keys = param_keys
        self.params: dict[str, _Param] = {}
        self.derived_aliases: list[str] = []

    def fail(self, key: Any, reason: str) -> SpaceFileError:
        return SpaceFileError(self.path, str(key), reason)

    def dest(self, key: str, value: str) -> tuple[str, ...]:
        parts = tuple(value.split("."))
        for part in parts:
            if not part.isidentifier() or keyword.iskeyword(part):
                raise self.fail(key, f"destination {value!r}: {part!r} is not a valid keyword argument name")
        valid = accepted_kwargs(self.algo_class) if self.algo_class is not None else None
        if valid is not None and parts[0] not in valid:
            close = difflib.get_close_matches(parts[0], sorted(valid), n=1)
            hint = f" did you mean {close[0]!r}?" if close else ""
            raise self.fail(
                key,
                f"{parts[0]!r} is a key the algorithm does not accept ({self.algo_class.__name__});"  # type: ignore[union-attr]
                f"{hint} valid keys: {', '.join(sorted(valid))}",
            )
        return parts

    def when(self, key: str, value: Mapping[str, Any] | None) -> _When:
        when: _When = {}
        for name, allowed in (value or {}).items():
            if name == key:
                raise self.fail(key, "condition on itself: when may only name earlier parameters")
            if name not in self.params:
                raise self.fail(key, self._missing(name))
            values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
            parent = self.params[name]
            if parent.type == "categorical":
                for item in values:
                    if not any(_same(item, label) for label in parent.labels):
                        choices = ", ".join(map(repr, parent.labels))
                        raise self.fail(
                            key, f"condition value {item!r} is not a choice of {name!r} (choices: {choices})"
                        )
            when[name] = values
        return when

    def _missing(self, name: str) -> str:
        if name in self.all_param_keys:
            return f"condition on parameter {name!r}, which is defined later (when may only name earlier parameters)"
        known = ", ".join(self.params) or "none"
        return f"condition on a missing parameter {name!r} (parameters defined before it: {known})"

    def param(self, key: str, spec: _schema.FloatParam | _schema.IntParam | _schema.CategoricalParam) -> _Param:
        if not key.isidentifier() or keyword.iskeyword(key):
            raise self.fail(key, "parameter names must be Python identifiers (expressions use them as names)")
        if key in _RESERVED_NAMES:
            raise self.fail(key, f"{key!r} is a reserved name in expressions; rename the parameter")
        param = _Param(key, spec.type, transform=spec.transform)
        if spec.type == "categorical":
            param.labels = tuple(label for label, _ in spec.pairs)
            param.values = tuple(self.imported(key, value) for _, value in spec.pairs)
        else:
            param.low, param.high, param.log, param.step = spec.low, spec.high, spec.log, spec.step
        to = spec.to if "to" in spec.model_fields_set else key
        param.dest = None if to is None or to is False else self.dest(key, to)
        param.when = self.when(key, spec.when)
        return param

    def imported(self, key: str, value: Any, what: str = "choice value") -> Any:
        """Return ``value`` with every ``package.module:attr`` string replaced by the object."""
        if is_dotted_path(value):
            try:
                return import_dotted(value)
            except DottedPathError as exc:
                raise self.fail(key, f"{what} {value!r} does not import: {exc}") from exc
        if isinstance(value, list):
            return [self.imported(key, item, what) for item in value]
        if isinstance(value, dict):
            return {k: self.imported(key, item, what) for k, item in value.items()}
        return value

    def expressions(self, section: Mapping[str, str | _schema.Entry], *, derived: bool) -> list[_Expr]:
        entries = []
        for key, spec in section.items():
            if not derived and (not key.isidentifier() or key in _RESERVED_ATTRS):
                raise self.fail(key, f"user attribute names must be identifiers other than {_RESERVED_ATTRS}")
            source, when = (spec, {}) if isinstance(spec, str) else (spec.value, self.when(key, spec.when))
            code = self.compile_expr(key, source)
            entry = _Expr(key, source, code, self.dest(key, key) if derived else None, when)
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


def load_space_file(path: str | Path, *, algo_class: type | None = None) -> YamlSearchSpace:
    """Return the search space in YAML file ``path``, checked whole (raises :class:`SpaceFileError`).

    With ``algo_class`` (e.g. ``stable_baselines3.PPO``), every top-level destination must also be
    a keyword argument its constructor accepts.
    """
    from zoo_ext.spaces import _schema  # pydantic: imported only when a file loads

    file = Path(path).expanduser()
    try:
        spec = _schema.validate(_read(file))
    except _schema.SchemaError as exc:
        raise SpaceFileError(file, exc.key, exc.reason) from None
    parser = _Parser(file, algo_class, set(spec.params or {}))
    params = [parser.params.setdefault(key, parser.param(key, p)) for key, p in (spec.params or {}).items()]
    fixed = [_Fixed(key, parser.dest(key, key), parser.imported(key, value, "value"))
             for key, value in (spec.fixed or {}).items()]  # fmt: skip
    derived = parser.expressions(spec.derived or {}, derived=True)
    user_attrs = parser.expressions(spec.user_attrs or {}, derived=False)
    parser.check_duplicates(
        [(p.key, p.dest, p.when) for p in params]
        + [(f.key, f.dest, {}) for f in fixed]
        + [(d.key, d.dest, d.when) for d in derived]
    )
    names = [spec.algos] if isinstance(spec.algos, str) else spec.algos
    algos = None if names is None else frozenset(a.lower() for a in names)
    name = spec.name or file.stem
    description = spec.description or f"search space from {file.name}"
    space = YamlSearchSpace(file, name, description, algos, params, fixed, derived, user_attrs)
    logger.debug("loaded search space %r from %s (%d parameters)", name, file, len(params))
    return space
