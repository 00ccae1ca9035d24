"""A loaded YAML search space: its parsed entries and :class:`YamlSearchSpace`, the sampler they make."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType
from typing import TYPE_CHECKING, Any

from zoo_ext.spaces._probe import InvalidSearchSpaceError
from zoo_ext.spaces._yaml_expr import FUNCTIONS, TRANSFORMS

if TYPE_CHECKING:
    import optuna

__all__ = ["Expr", "Fixed", "Param", "SpaceFileError", "When", "YamlSearchSpace", "active", "same"]


class SpaceFileError(InvalidSearchSpaceError):
    """Raised for a search-space file that cannot be used; the message is ``"{path}: {key}: {reason}"``."""

    def __init__(self, path: str | Path, key: str, reason: str) -> None:
        super().__init__(str(path), key, reason)
        self.path = str(path)
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.key}: {self.reason}"


#: A ``when`` condition: earlier param key -> the Optuna values (labels) it may hold.
When = dict[str, tuple[Any, ...]]


def same(a: Any, b: Any) -> bool:
    """Equality that keeps booleans apart from 0 and 1."""
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def active(when: When, labels: Mapping[str, Any]) -> bool:
    """Return True if ``when`` holds for ``labels``, the Optuna values of the params active so far."""
    return all(key in labels and any(same(labels[key], v) for v in values) for key, values in when.items())


@dataclass
class Param:
    """A ``params`` entry: an Optuna parameter, the kwarg it goes to and its condition."""

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
    when: When = field(default_factory=dict)

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
            index = next(i for i, label in enumerate(self.labels) if same(label, raw))
            value = copy.deepcopy(self.values[index])
        if self.transform is not None:
            value = TRANSFORMS[self.transform](value)
        return value


@dataclass
class Fixed:
    """A ``fixed`` entry: a constant kwarg."""

    key: str
    dest: tuple[str, ...]
    value: Any


@dataclass
class Expr:
    """A ``derived`` or ``user_attrs`` entry: a checked, compiled expression, its destination and condition."""

    key: str
    source: str
    code: CodeType
    dest: tuple[str, ...] | None
    when: When = field(default_factory=dict)

    @property
    def alias(self) -> str | None:
        """The plain name later expressions see this value under, if any."""
        return self.dest[0] if self.dest is not None and len(self.dest) == 1 else None


class YamlSearchSpace:
    """A search space read from a YAML file; call it like any rl_zoo3 sampler."""

    def __init__(
        self,
        path: Path,
        name: str,
        description: str,
        algos: frozenset[str] | None,
        params: list[Param],
        fixed: list[Fixed],
        derived: list[Expr],
        user_attrs: list[Expr],
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
            **FUNCTIONS,
            "n_actions": n_actions,
            "n_envs": n_envs,
            "additional_args": additional_args,
        }
        labels: dict[str, Any] = {}
        kwargs: dict[str, Any] = {}
        for param in self._params:
            if not active(param.when, labels):
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
            if not active(expr.when, labels):
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
                if active(expr.when, labels):
                    trial.set_user_attr(expr.key, plain(self._eval(expr, namespace)))
        return kwargs

    def _eval(self, expr: Expr, namespace: dict[str, Any]) -> Any:
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
