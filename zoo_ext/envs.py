"""Several environments per trial (``--tune-envs``): which envs, their score ranges and the normalised score.

A multi-env trial trains the same sampled config on every env of ``--tune-envs`` (the ``--env``
one first), ``--n-seeds`` seeds each. A run's return ``x`` on env ``e`` becomes
``(x - lo_e) / (hi_e - lo_e)``: 0 is the env's ``lo``, 1 its ``hi``. ``--env-scores ENV:LO:HI``
fixes both; otherwise ``lo`` is a random policy's return (measured once when the study is
created, stored in the study) and ``hi`` the best return reached on that env so far (every
finished trial and the running one), as CleanRL's tuner does with its ``target_scores``. The
trial's value aggregates the envs' normalised scores (``--env-aggregate``, default IQM)::

    python -m rl_zoo3.train --algo ppo --env CartPole-v1 -optimize -n 20000 --n-seeds 2 \\
        --tune-envs Acrobot-v1 --env-scores CartPole-v1:0:500 Acrobot-v1:-500:0
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo_ext.errors import BadInputError
from zoo_ext.objectives import aggregate

if TYPE_CHECKING:
    from zoo_ext.experiment import Experiment

__all__ = [
    "NORMALIZED_OBJECTIVES",
    "EnvError",
    "ScoreRange",
    "check_env_id",
    "env_value",
    "normalize",
    "parse_env_scores",
    "random_policy_return",
    "tune_envs",
]

#: Objectives on the env's return scale: normalised per env before the envs are aggregated.
NORMALIZED_OBJECTIVES = ("mean_reward", "auc")
#: Where a range's ``lo`` and ``hi`` came from.
GIVEN, MEASURED = "--env-scores", "random policy .. best so far"


class EnvError(BadInputError, ValueError):
    """A ``--tune-envs`` or ``--env-scores`` value cannot be used; the message says which and why."""


@dataclass(frozen=True)
class ScoreRange:
    """The returns that map to 0 (``lo``) and 1 (``hi``) on one env; ``hi`` None: the best so far."""

    lo: float
    hi: float | None
    source: str

    def as_dict(self) -> dict[str, Any]:
        """Return the range as a JSON-able dict (the study's ``env_scores`` attribute)."""
        return {"lo": self.lo, "hi": self.hi, "source": self.source}

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> ScoreRange:
        """Return the range :meth:`as_dict` stored."""
        return cls(float(data["lo"]), None if data["hi"] is None else float(data["hi"]), str(data["source"]))


def normalize(value: float, lo: float, hi: float) -> float:
    """Return ``value`` on the ``lo`` (0) .. ``hi`` (1) scale; 0 while the range is empty (``hi <= lo``)."""
    return (value - lo) / (hi - lo) if hi > lo else 0.0


def tune_envs(main: str, listed: Sequence[str]) -> tuple[str, ...]:
    """Return the envs a trial trains on: ``main`` (``--env``) first, then ``listed`` in order; () for none.

    An env listed twice is refused: it would weigh twice in the aggregate.
    """
    if not listed:
        return ()
    repeated = sorted({env for env in listed if list(listed).count(env) > 1})
    if repeated:
        raise EnvError(f"--tune-envs lists {', '.join(repeated)} more than once: name each env once")
    return (main, *(env for env in listed if env != main))


def check_env_id(env_id: str) -> None:
    """Raise :class:`EnvError` if gymnasium does not know ``env_id``, naming the closest registered ids."""
    import gymnasium

    if env_id in gymnasium.envs.registry:
        return
    close = difflib.get_close_matches(env_id, list(gymnasium.envs.registry), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else " (register it with --gym-packages)"
    raise EnvError(f"--tune-envs: gymnasium has no env {env_id!r}{hint}")


def parse_env_scores(specs: Iterable[str], envs: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Return ``{env: (lo, hi)}`` from ``ENV:LO:HI`` strings; raise :class:`EnvError` for a bad one.

    An env id may itself hold ``:`` (``module:Env-v0``): the last two fields are the numbers.
    """
    scores: dict[str, tuple[float, float]] = {}
    for spec in specs:
        head, _, hi_text = spec.rpartition(":")
        env, _, lo_text = head.rpartition(":")
        if not (env and lo_text and hi_text):
            raise EnvError(f"--env-scores {spec!r}: write ENV:LO:HI, e.g. CartPole-v1:0:500")
        try:
            lo, hi = float(lo_text), float(hi_text)
        except ValueError:
            raise EnvError(f"--env-scores {spec!r}: LO and HI must be numbers") from None
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
            raise EnvError(f"--env-scores {spec!r}: HI must be a finite number above LO")
        if env not in envs:
            raise EnvError(f"--env-scores names {env!r}, which is not tuned on: the envs are {', '.join(envs)}")
        if env in scores:
            raise EnvError(f"--env-scores gives {env!r} twice")
        scores[env] = (lo, hi)
    return scores


class _RandomPolicy:
    """What ``evaluate_policy`` needs of a model: uniformly random actions, seeded."""

    def __init__(self, action_space: Any, n_envs: int, seed: int) -> None:
        self.action_space = action_space
        self.n_envs = n_envs
        self.action_space.seed(seed)

    def predict(
        self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False
    ) -> Any:
        return np.array([self.action_space.sample() for _ in range(self.n_envs)]), state


def random_policy_return(exp: Experiment, *, seed: int) -> float:
    """Return the mean return of uniformly random actions on ``exp``'s eval env (its ``--eval-episodes``)."""
    from stable_baselines3.common.evaluation import evaluate_policy

    env = exp.make_env(1, eval_env=True)
    try:
        env.seed(seed)
        policy = _RandomPolicy(env.action_space, env.num_envs, seed)
        rewards, _ = evaluate_policy(
            policy,  # type: ignore[arg-type]
            env,
            n_eval_episodes=exp.n_eval_episodes,
            return_episode_rewards=True,
            warn=False,
        )
    finally:
        env.close()
    return float(np.mean(rewards))


def env_value(scores: Mapping[str, Sequence[float]], *, seed_aggregate: str, env_aggregate: str) -> float:
    """Return the trial's value from each env's normalised per-seed scores: seeds aggregated, then envs."""
    return aggregate([aggregate(values, seed_aggregate) for values in scores.values()], env_aggregate)
