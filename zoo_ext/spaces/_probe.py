"""Checks on a search space that run before any training: accepted keys, parameter kinds."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import CategoricalDistribution

if TYPE_CHECKING:
    from zoo_ext.spaces import SearchSpace

__all__ = ["InvalidSearchSpaceError", "SpaceInfo", "accepted_kwargs", "check_keys", "probe_space"]


class InvalidSearchSpaceError(ValueError):
    """Raised when a search space returns something the algorithm cannot be built with."""


def accepted_kwargs(algo_class: type) -> frozenset[str] | None:
    """Return the keyword arguments ``algo_class`` accepts (None when it takes ``**kwargs``)."""
    params = inspect.signature(algo_class).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.name != "env")


def check_keys(keys: Iterable[str], algo_class: type, space_name: str) -> None:
    """Raise :class:`InvalidSearchSpaceError` naming any key ``algo_class`` does not accept."""
    valid = accepted_kwargs(algo_class)
    if valid is None:
        return
    unknown = sorted(set(keys) - valid)
    if unknown:
        raise InvalidSearchSpaceError(
            f"search space {space_name!r} returned {', '.join(map(repr, unknown))}, which "
            f"{algo_class.__name__} does not accept. Valid keys: {', '.join(sorted(valid))}"
        )


@dataclass
class SpaceInfo:
    """What probing a space showed: its parameters, and whether some are conditional."""

    distributions: dict[str, optuna.distributions.BaseDistribution] = field(default_factory=dict)
    conditional: bool = False

    @property
    def categorical(self) -> bool:
        return any(isinstance(d, CategoricalDistribution) for d in self.distributions.values())

    def describe(self) -> str:
        kinds = "conditional" if self.conditional else "unconditional"
        n_cat = sum(isinstance(d, CategoricalDistribution) for d in self.distributions.values())
        return f"{len(self.distributions)} parameters ({n_cat} categorical, {kinds})"


def probe_space(
    space: SearchSpace,
    space_name: str,
    algo_class: type,
    n_actions: int,
    n_envs: int,
    additional_args: dict[str, Any],
    *,
    n_samples: int = 16,
    seed: int = 0,
) -> SpaceInfo:
    """Sample ``space`` ``n_samples`` times in memory and return what it holds.

    Fails with :class:`InvalidSearchSpaceError` if the space raises or returns a key the
    algorithm does not accept, so a broken space stops the study before any training.
    """
    info = SpaceInfo()
    seen: list[frozenset[str]] = []
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    finally:
        optuna.logging.set_verbosity(verbosity)
    for _ in range(n_samples):
        trial = study.ask()
        try:
            kwargs = space(trial, n_actions, n_envs, dict(additional_args))
        except Exception as exc:
            raise InvalidSearchSpaceError(f"search space {space_name!r} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(kwargs, dict):
            raise InvalidSearchSpaceError(
                f"search space {space_name!r} must return a dict of keyword arguments, got {type(kwargs).__name__}"
            )
        check_keys(kwargs, algo_class, space_name)
        info.distributions.update(trial.distributions)
        seen.append(frozenset(trial.params))
        study.tell(trial, 0.0)
    info.conditional = len(set(seen)) > 1
    return info
