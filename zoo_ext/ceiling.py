"""The ``-n`` ceiling: a trial's constructor kwargs fitted so that one seed trains at most ``-n`` env steps.

SB3 collects whole rollouts, so a sampled ``n_steps`` 4096 on 4 envs trains 16,384 env steps
whatever ``-n`` says (and, with ``batch_size`` 8 and 20 epochs, 40,000 gradient steps). Before a
model is built, :func:`fit_to_budget` changes the keys that would break the ceiling, per key:

========================  ==========================================================================
on-policy ``n_steps``     clipped so that one rollout, ``n_steps`` x ``n_envs``, is at most ``-n``
on-policy ``batch_size``  clipped to the rollout (PPO, TRPO, RecurrentPPO: one mini-batch of it all)
off-policy ``train_freq`` in steps: clipped so that ``train_freq`` x ``n_envs`` is at most ``-n``, and
                          ``gradient_steps`` scaled by the same factor (the replay ratio is kept); in
                          episodes: kept (an episode's length is not known before training)
``learning_starts``       clipped to half of ``-n``: the agent learns from at least half its budget
========================  ==========================================================================

A trial that no clipping can fit (fewer env steps than envs, a PPO rollout of one step) is
pruned with its reason. A trial so trains at most ``-n`` env steps per seed plus one rollout of
at most ``-n``. ``--no-clip-to-budget`` keeps stock rl_zoo3's behaviour.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

__all__ = ["BudgetError", "fit_to_budget", "gradient_steps"]


class BudgetError(ValueError):
    """No clipping fits the trial's kwargs under ``-n`` without changing what they mean; the message says why."""


@functools.cache
def _defaults(algo_class: type[BaseAlgorithm]) -> dict[str, Any]:
    """Return the algorithm's constructor defaults (read once per class)."""
    parameters = inspect.signature(algo_class.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _is_on_policy(algo_class: type[BaseAlgorithm]) -> bool:
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

    return issubclass(algo_class, OnPolicyAlgorithm)


def _is_off_policy(algo_class: type[BaseAlgorithm]) -> bool:
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    return issubclass(algo_class, OffPolicyAlgorithm)


def fit_to_budget(
    algo_class: type[BaseAlgorithm], kwargs: dict[str, Any], *, n_timesteps: int, n_envs: int
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Return ``kwargs`` fitted under the ``-n`` ceiling, and what changed: ``{key: {"from": old, "to": new}}``.

    Keys the kwargs leave out are read from the algorithm's defaults (PPO's ``n_steps`` 2048).
    Raise :class:`BudgetError` when only a change of meaning would fit (see the module's table).

    Example::

        >>> from stable_baselines3 import PPO
        >>> fit_to_budget(PPO, {"n_steps": 4096, "batch_size": 8}, n_timesteps=512, n_envs=4)[1]
        {'n_steps': {'from': 4096, 'to': 128}}
    """
    fitted = dict(kwargs)
    clipped: dict[str, dict[str, Any]] = {}

    def value(key: str) -> Any:
        return fitted[key] if key in fitted else _defaults(algo_class).get(key)

    def clip(key: str, new: Any) -> None:
        clipped[key] = {"from": value(key), "to": new}
        fitted[key] = new

    if n_timesteps < n_envs:
        raise BudgetError(f"-n {n_timesteps} is less than one env step for each of the {n_envs} envs")
    if _is_on_policy(algo_class):
        n_steps = value("n_steps")
        if isinstance(n_steps, int) and n_steps * n_envs > n_timesteps:
            clip("n_steps", n_timesteps // n_envs)
        rollout = int(value("n_steps") or 0) * n_envs
        batch_size = value("batch_size")
        if isinstance(batch_size, int) and rollout and batch_size > rollout:
            if rollout < 2:
                raise BudgetError(f"-n {n_timesteps} leaves a rollout of {rollout} step: too short for a mini-batch")
            clip("batch_size", rollout)
    elif _is_off_policy(algo_class):
        _fit_train_freq(value, clip, n_timesteps=n_timesteps, n_envs=n_envs)
        learning_starts = value("learning_starts")
        if isinstance(learning_starts, int) and learning_starts > n_timesteps // 2:
            clip("learning_starts", n_timesteps // 2)
    return fitted, clipped


def _fit_train_freq(value: Any, clip: Any, *, n_timesteps: int, n_envs: int) -> None:
    """Clip a step-unit ``train_freq`` (int or (int, "step")) to fit ``-n``; scale ``gradient_steps`` alike."""
    train_freq = value("train_freq")
    if isinstance(train_freq, int):
        frequency, unit = train_freq, None
    elif isinstance(train_freq, Sequence) and len(train_freq) == 2 and isinstance(train_freq[0], int):
        frequency, unit = train_freq[0], str(getattr(train_freq[1], "value", train_freq[1]))
    else:
        return
    most = n_timesteps // n_envs
    if unit not in (None, "step") or frequency <= most:
        return
    clip("train_freq", most if unit is None else (most, train_freq[1]))
    steps = value("gradient_steps")
    if isinstance(steps, int) and steps > 0:
        clip("gradient_steps", max(1, round(steps * most / frequency)))


def gradient_steps(model: BaseAlgorithm) -> int:
    """Return the gradient steps ``model`` took so far: SB3's ``n_updates``, in mini-batches for PPO.

    SB3 counts ``n_updates`` in gradient steps for A2C, TRPO and off-policy algorithms, but in
    epochs for PPO and RecurrentPPO; there it is multiplied by the mini-batches of one rollout.
    """
    updates = int(getattr(model, "_n_updates", 0))
    n_epochs, batch_size, n_steps = (getattr(model, key, None) for key in ("n_epochs", "batch_size", "n_steps"))
    if isinstance(n_epochs, int) and isinstance(batch_size, int) and isinstance(n_steps, int) and batch_size > 0:
        updates *= math.ceil(n_steps * model.n_envs / batch_size)
    return updates
