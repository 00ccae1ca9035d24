"""Objectives: what a trial's training runs are scored on, with a direction each.

An objective is a function of one training run's :class:`RunResult` and the ``--objective-metric``
(``last``, ``best`` or ``mean`` evaluation), with an Optuna direction. With ``--n-seeds K`` it is
computed per seed and aggregated (``--seed-aggregate``). Register your own::

    from zoo_ext import register_objective
    from zoo_ext.objectives import RunResult

    @register_objective("final_std", direction="minimize")
    def final_std(result: RunResult, metric: str) -> float:
        \"\"\"Std of the episode returns at the last evaluation.\"\"\"
        return result.curve[-1]["std_reward"]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zoo_ext.errors import BadInputError
from zoo_ext.registry import Registry

__all__ = [
    "AGGREGATES",
    "DIRECTIONS",
    "METRICS",
    "OBJECTIVES",
    "Objective",
    "ObjectiveError",
    "RunResult",
    "aggregate",
    "register_objective",
    "resolve_objectives",
]

METRICS = ("last", "best", "mean")
AGGREGATES = ("mean", "median", "iqm", "min")
#: The directions an Optuna study accepts.
DIRECTIONS = ("maximize", "minimize")


class ObjectiveError(BadInputError, ValueError):
    """An objective cannot be used: a direction Optuna does not know, or named twice in one study."""


@dataclass
class RunResult:
    """What one training run of a trial produced."""

    seed: int
    #: One entry per evaluation: timesteps, mean_reward, std_reward.
    curve: list[dict[str, float]] = field(default_factory=list)
    train_time: float = 0.0
    n_params: int = 0
    #: Gradient steps the run took (SB3's ``n_updates``, in mini-batches for PPO).
    n_updates: int = 0
    #: Milliseconds per ``predict`` call on one observation, measured after training.
    inference_ms: float = float("nan")
    #: The run was stopped by the pruner.
    stopped: bool = False
    #: An evaluation return was not finite.
    diverged: bool = False
    #: The discount ``VecNormalize`` normalised the training rewards with (None: no VecNormalize).
    normalize_gamma: float | None = None


@dataclass(frozen=True)
class Objective:
    """A named objective function with its Optuna direction."""

    name: str
    direction: str
    fn: Callable[[RunResult, str], float]
    #: Whether the inference time must be measured for it.
    needs_inference: bool = False

    def __post_init__(self) -> None:
        _check_direction(self.name, self.direction)

    def __call__(self, result: RunResult, metric: str) -> float:
        return float(self.fn(result, metric))


def _check_direction(name: str, direction: object) -> None:
    """Raise :class:`ObjectiveError` unless ``direction`` is one Optuna accepts."""
    if direction not in DIRECTIONS:
        raise ObjectiveError(
            f"objective {name!r} has direction {direction!r}: it must be one of {', '.join(DIRECTIONS)}"
        )


def _index(result: RunResult, metric: str) -> int:
    """Return the index of the evaluation ``metric`` selects."""
    if metric == "best":
        return int(np.argmax([p["mean_reward"] for p in result.curve]))
    return len(result.curve) - 1


def mean_reward(result: RunResult, metric: str) -> float:
    """Mean evaluation return: of the last evaluation, the best one, or the mean over all of them."""
    if metric == "mean":
        return float(np.mean([p["mean_reward"] for p in result.curve]))
    return result.curve[_index(result, metric)]["mean_reward"]


def reward_std(result: RunResult, metric: str) -> float:
    """Std of the evaluation episodes' returns (at the evaluation --objective-metric picks)."""
    if metric == "mean":
        return float(np.mean([p["std_reward"] for p in result.curve]))
    return result.curve[_index(result, metric)]["std_reward"]


def auc(result: RunResult, metric: str) -> float:
    """Mean of the evaluation curve: rewards sample efficiency."""
    return float(np.mean([p["mean_reward"] for p in result.curve]))


def train_time(result: RunResult, metric: str) -> float:
    """Training wall time in seconds."""
    return result.train_time


def n_params(result: RunResult, metric: str) -> float:
    """Trainable parameters of the policy."""
    return float(result.n_params)


def inference_time(result: RunResult, metric: str) -> float:
    """Milliseconds per ``predict`` call on one observation, after training."""
    return result.inference_ms


def _builtins(registry: Registry[Objective]) -> None:
    for fn, direction in (
        (mean_reward, "maximize"),
        (reward_std, "minimize"),
        (auc, "maximize"),
        (train_time, "minimize"),
        (n_params, "minimize"),
        (inference_time, "minimize"),
    ):
        objective = Objective(fn.__name__, direction, fn, needs_inference=fn is inference_time)
        registry.register(fn.__name__, objective, source="zoo_ext", description=f"({direction}) {fn.__doc__}")


OBJECTIVES: Registry[Objective] = Registry("objective", "zoo_ext.objectives", _builtins)


def register_objective(
    name: str, *, direction: str = "maximize", needs_inference: bool = False
) -> Callable[[Callable[[RunResult, str], float]], Callable[[RunResult, str], float]]:
    """Return a decorator registering an objective function under ``name`` with its direction.

    A direction other than ``maximize`` or ``minimize`` raises :class:`ObjectiveError` here, at registration.
    """
    _check_direction(name, direction)

    def decorator(fn: Callable[[RunResult, str], float]) -> Callable[[RunResult, str], float]:
        OBJECTIVES.register(name, Objective(name, direction, fn, needs_inference), description=fn.__doc__ or "")
        return fn

    return decorator


def resolve_objectives(names: Sequence[str]) -> list[Objective]:
    """Return the objectives named (registered, entry point or dotted path to a function or Objective).

    Raises :class:`ObjectiveError` for a name given twice or a direction Optuna does not know (a
    function's ``direction`` attribute), so the study is never created with it.
    """
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        raise ObjectiveError(
            f"objective(s) {', '.join(map(repr, repeated))} given more than once: name each objective once"
        )
    resolved = []
    for name in names:
        obj: Any = OBJECTIVES.get(name)
        if not isinstance(obj, Objective):
            obj = Objective(name, getattr(obj, "direction", "maximize"), obj)
        resolved.append(obj)
    return resolved


def aggregate(values: Sequence[float], how: str) -> float:
    """Return ``values`` (one per seed) aggregated: mean, median, iqm (interquartile mean) or min."""
    array = np.asarray(values, dtype=float)
    if how == "mean":
        return float(array.mean())
    if how == "median":
        return float(np.median(array))
    if how == "min":
        return float(array.min())
    if how == "iqm":
        from scipy.stats import trim_mean

        return float(trim_mean(array, 0.25))
    raise ValueError(f"unknown seed aggregate {how!r}: choose one of {', '.join(AGGREGATES)}")
