"""``replay-ratio``: off-policy spaces that sample the replay ratio itself.

Replay ratio = gradient steps per collected transition = ``gradient_steps / (train_freq * n_envs)``.
The zoo's spaces tie ``gradient_steps`` to ``train_freq``, so the ratio silently changes with the
number of parallel envs. Here ``replay_ratio`` is sampled on a log scale (1/16 … 8) with
``train_freq``, and ``gradient_steps`` is derived for the run's ``n_envs``:
``round(replay_ratio * train_freq * n_envs)``. When that is below one, one gradient step is
made every ``round(1 / (replay_ratio * n_envs))`` env steps instead. The effective ratio is
recorded as user attribute ``replay_ratio``.
"""

from __future__ import annotations

from typing import Any

import optuna

from zoo_ext.attrs import TrialAttr
from zoo_ext.spaces import _common as c

__all__ = ["ALGOS", "BOUNDS", "derive", "sample"]

_BASE: c.Bounds = {
    "replay_ratio": (1 / 16, 8.0),
    "train_freq": [1, 2, 4, 8, 16, 32, 64, 128, 256],
    "gamma": (0.9, 0.9999),
    "learning_rate": (1e-5, 1e-2),
    "batch_size": (32, 1024),
    "buffer_size": [10_000, 50_000, 100_000, 200_000, 300_000, 1_000_000],
    "learning_starts": [0, 100, 1000, 10_000],
    "tau": (0.001, 0.1),
}
_DQN: c.Bounds = {
    **_BASE,
    "tau": (0.001, 1.0),
    "target_update_interval": (1, 20_000),
    "exploration_fraction": (0.05, 0.5),
    "exploration_final_eps": (0.0, 0.2),
}
BOUNDS: dict[str, c.Bounds] = {
    **{algo: dict(_BASE) for algo in ("sac", "td3", "ddpg", "tqc")},
    "dqn": _DQN,
    "qrdqn": dict(_DQN),
}
ALGOS = tuple(BOUNDS)


def derive(replay_ratio: float, train_freq: int, n_envs: int) -> tuple[int, int]:
    """Return ``(train_freq, gradient_steps)`` realising ``replay_ratio`` with ``n_envs`` envs.

    Example: ratio 0.5 with ``train_freq=4`` and 4 envs gives 8 gradient steps every 4 steps.
    """
    steps = replay_ratio * train_freq * n_envs
    if steps >= 1:
        return train_freq, round(steps)
    # Less than one gradient step per collection: collect longer instead of rounding the ratio away.
    return max(1, round(1 / (replay_ratio * n_envs))), 1


def sample(algo: str) -> Any:
    """Return the ``replay-ratio`` search space of ``algo``."""
    b = BOUNDS[algo]

    def space(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
        ratio = c.float_log(trial, b, "replay_ratio")
        train_freq, gradient_steps = derive(ratio, c.choice(trial, b, "train_freq"), n_envs)
        trial.set_user_attr(TrialAttr.REPLAY_RATIO, gradient_steps / (train_freq * n_envs))
        kwargs: dict[str, Any] = {
            "train_freq": train_freq,
            "gradient_steps": gradient_steps,
            "gamma": c.one_minus(trial, b, "gamma"),
            "learning_rate": c.float_log(trial, b, "learning_rate"),
            "batch_size": c.pow2(trial, b, "batch_size"),
            "buffer_size": c.choice(trial, b, "buffer_size"),
            "learning_starts": c.choice(trial, b, "learning_starts"),
            "tau": c.float_log(trial, b, "tau"),
        }
        if algo in ("dqn", "qrdqn"):
            kwargs["target_update_interval"] = c.int_log(trial, b, "target_update_interval")
            kwargs["exploration_fraction"] = c.float_uniform(trial, b, "exploration_fraction")
            kwargs["exploration_final_eps"] = c.float_uniform(trial, b, "exploration_final_eps")
        return kwargs

    space.__name__ = f"replay_ratio_{algo}"
    space.__doc__ = f"{algo} with the replay ratio sampled directly (1/16 to 8), correct for any n_envs."
    return space
