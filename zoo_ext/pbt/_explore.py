"""PBT's explore step: the range of each perturbable key, PBT's perturb-or-resample, and PB2's bandit over the ranges.

``gamma`` and ``gae_lambda`` are explored as ``1 - value`` on a log scale, as rl_zoo3's spaces
sample them: multiplying 0.99 by 1.2 would leave the discount's valid range at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from zoo_ext.pbt._pb2 import Bound, Observation, pb2_explore

__all__ = ["RANGES", "Bound", "Observation", "distribution", "explore_pb2", "explore_pbt", "to_search", "from_search"]

#: Where each perturbable key is explored (in the search scale: ``1 - value`` for :data:`_ONE_MINUS` keys).
RANGES: Mapping[str, Bound] = {
    "learning_rate": Bound(1e-5, 1e-2, log=True),
    "ent_coef": Bound(1e-8, 0.1, log=True),
    "vf_coef": Bound(0.1, 1.0),
    "gae_lambda": Bound(1e-3, 0.2, log=True),
    "max_grad_norm": Bound(0.1, 5.0, log=True),
    "clip_range": Bound(0.05, 0.5),
    "n_epochs": Bound(1, 30, integer=True),
    "tau": Bound(1e-3, 0.1, log=True),
    "gamma": Bound(1e-4, 0.1, log=True),
    "train_freq": Bound(1, 64, log=True, integer=True),
    "gradient_steps": Bound(1, 64, log=True, integer=True),
    "target_kl": Bound(1e-3, 0.1, log=True),
}
#: Keys explored as ``1 - value``.
_ONE_MINUS = ("gamma", "gae_lambda")
#: PBT's multiplicative steps (Jaderberg et al. 2017; Ray Tune's defaults).
_FACTORS = (0.8, 1.2)


def to_search(key: str, value: float) -> float:
    """Return ``value`` in ``key``'s search scale (``1 - value`` for a discount)."""
    return 1.0 - value if key in _ONE_MINUS else value


def from_search(key: str, value: float) -> float:
    """Return the constructor value of ``key`` for ``value`` in its search scale."""
    return 1.0 - value if key in _ONE_MINUS else value


def _bound(key: str, current: float) -> Bound:
    """Return ``key``'s range, widened to hold ``current`` (a first-generation value the space drew outside it)."""
    bound = RANGES[key]
    low = min(bound.low, current) if current > 0 or not bound.log else bound.low
    if bound.integer:
        low = max(math.floor(low), 1 if bound.log else 0)
    return Bound(low, max(bound.high, current), log=bound.log, integer=bound.integer)


def _clip(bound: Bound, value: float) -> float:
    value = min(max(value, bound.low), bound.high)
    return float(round(value)) if bound.integer else value


def _draw(bound: Bound, rng: np.random.Generator) -> float:
    if bound.log:
        value = math.exp(rng.uniform(math.log(bound.low), math.log(bound.high)))
    else:
        value = rng.uniform(bound.low, bound.high)
    return _clip(bound, value)


def explore_pbt(
    values: Mapping[str, float], *, resample_probability: float, rng: np.random.Generator
) -> dict[str, float]:
    """Return PBT's explored ``values``: each drawn anew from its range, or multiplied by 0.8 or 1.2 and clipped.

    An integer that the factor leaves unchanged moves by one instead, so exploring always explores.
    """
    explored: dict[str, float] = {}
    for key, value in values.items():
        current = to_search(key, float(value))
        bound = _bound(key, current)
        if rng.random() < resample_probability:
            new = _draw(bound, rng)
        else:
            factor = _FACTORS[int(rng.integers(len(_FACTORS)))]
            new = _clip(bound, max(current, bound.low) * factor)
            step = 1 if factor > 1 else -1
            if bound.integer and new == current:  # at a bound the step goes the other way
                new = _clip(bound, current + step) if _clip(bound, current + step) != current else current - step
        explored[key] = from_search(key, new)
    return explored


def explore_pb2(
    values: Mapping[str, float],
    history: Sequence[tuple[float, Mapping[str, float], float]],
    *,
    time: float,
    rng: np.random.Generator,
) -> dict[str, float]:
    """Return PB2's explored values for the keys of ``values``: the GP bandit's pick given ``history``.

    ``history`` holds one ``(model env steps, values trained with, reward change)`` per finished
    segment of the population; values are in the constructor scale.
    """
    bounds = {key: _bound(key, to_search(key, float(value))) for key, value in values.items()}
    observations = [
        Observation(t, {k: to_search(k, float(v)) for k, v in trained.items() if k in bounds}, change)
        for t, trained, change in history
    ]
    picked = pb2_explore(observations, bounds, time=time, rng=rng)
    return {key: from_search(key, picked[key]) for key in values}


def distribution(key: str, value: float) -> Any:
    """Return the Optuna distribution a segment records ``key`` under (its range in the constructor scale)."""
    import optuna

    bound = _bound(key, to_search(key, value))
    if key in _ONE_MINUS:
        upper = max(from_search(key, bound.low), value)  # gae_lambda 1 (A2C's default): no discount at all
        return optuna.distributions.FloatDistribution(from_search(key, bound.high), upper)
    if bound.integer:
        return optuna.distributions.IntDistribution(int(bound.low), int(bound.high), log=bound.log)
    if value <= 0:  # a coefficient that is off (ent_coef 0) lies outside its log range
        return optuna.distributions.FloatDistribution(0.0, bound.high)
    return optuna.distributions.FloatDistribution(bound.low, bound.high, log=bound.log)
