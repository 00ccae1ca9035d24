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
(against the allow-list of :mod:`zoo_ext.spaces._yaml_expr`) and imports, and builds the
:class:`YamlSearchSpace` of :mod:`zoo_ext.spaces._yaml_space`.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from types import CodeType
from typing import TYPE_CHECKING, Any

import yaml

from zoo_ext.attrs import TrialAttr
from zoo_ext.registry import DottedPathError, import_dotted, is_dotted_path
from zoo_ext.spaces._probe import accepted_kwargs
from zoo_ext.spaces._yaml_expr import ALLOWED, CONTEXT, RESERVED_NAMES, refused
from zoo_ext.spaces._yaml_space import Expr, Fixed, Param, SpaceFileError, When, YamlSearchSpace, same

if TYPE_CHECKING:
    from zoo_ext.spaces import _schema

__all__ = ["SpaceFileError", "YamlSearchSpace", "is_space_file", "load_space_file"]

logger = logging.getLogger(__name__)

_RESERVED_ATTRS = (str(TrialAttr.RECORD), str(TrialAttr.SEARCH_SPACE))  # user attrs zoo_ext writes itself


def is_space_file(name: str) -> bool:
    """Return True when ``name`` is a YAML file name (``.yml`` or ``.yaml``)."""
    return name.lower().endswith((".yml", ".yaml"))


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


# --- loading ------------------------------------------------------------------------------------------


class _Parser:
    """Checks what the schema cannot (names, destinations, conditions, expressions, imports) and builds entries."""

    def __init__(self, path: Path, algo_class: type | None, param_keys: set[str]) -> None:
        self.path = path
        self.algo_class = algo_class
        self.all_param_keys = param_keys
        self.params: dict[str, Param] = {}
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

    def when(self, key: str, value: Mapping[str, Any] | None) -> When:
        when: When = {}
        for name, allowed in (value or {}).items():
            if name == key:
                raise self.fail(key, "condition on itself: when may only name earlier parameters")
            if name not in self.params:
                raise self.fail(key, self._missing(name))
            values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
            parent = self.params[name]
            if parent.type == "categorical":
                for item in values:
                    if not any(same(item, label) for label in parent.labels):
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

    def param(self, key: str, spec: _schema.FloatParam | _schema.IntParam | _schema.CategoricalParam) -> Param:
        if not key.isidentifier() or keyword.iskeyword(key):
            raise self.fail(key, "parameter names must be Python identifiers (expressions use them as names)")
        if key in RESERVED_NAMES:
            raise self.fail(key, f"{key!r} is a reserved name in expressions; rename the parameter")
        param = Param(key, spec.type, transform=spec.transform)
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

    def expressions(self, section: Mapping[str, str | _schema.Entry], *, derived: bool) -> list[Expr]:
        entries = []
        for key, spec in section.items():
            if not derived and (not key.isidentifier() or key in _RESERVED_ATTRS):
                raise self.fail(key, f"user attribute names must be identifiers other than {_RESERVED_ATTRS}")
            source, when = (spec, {}) if isinstance(spec, str) else (spec.value, self.when(key, spec.when))
            code = self.compile_expr(key, source)
            entry = Expr(key, source, code, self.dest(key, key) if derived else None, when)
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
        known = set(self.params) | set(self.derived_aliases) | RESERVED_NAMES | bound
        for node in ast.walk(tree):
            why = refused(node)
            if why:
                raise self.fail(key, f"expression {source!r} uses {why}, which expressions may not use{ALLOWED}")
            if isinstance(node, ast.Name) and node.id not in known:
                names = ", ".join([*self.params, *self.derived_aliases, *CONTEXT])
                raise self.fail(key, f"unknown name {node.id!r} in expression {source!r} (known: {names})")
        return compile(tree, f"<{self.path.name}: {key}>", "eval")

    def check_duplicates(self, entries: list[tuple[str, tuple[str, ...] | None, When]]) -> None:
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
    fixed = [Fixed(key, parser.dest(key, key), parser.imported(key, value, "value"))
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
