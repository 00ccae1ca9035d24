"""``cold``: a compact space of values that hold up across envs, for tuning without a tuned table.

Each hyperparameter is a short ladder of the values RL practitioners reach for first (the
spread of rl_zoo3's tuned tables and the SB3/CleanRL defaults), not a wide range: with a budget
of tens of trials, a sampler that spends them on learning rates of 1e-5 or minibatches of 8 finds
nothing. Discount and GAE ladders reach down to 0.9 (short-horizon envs such as Pendulum), gSDE
is a branch on continuous actions, and the optimizer is Adam with a constant learning rate.
This is the space of the ``cold`` preset (:mod:`zoo_ext.presets`).
"""

from __future__ import annotations

from typing import Any

import optuna

from zoo_ext.spaces import _common as c

__all__ = ["ALGOS", "BOUNDS", "sample"]

_ON_POLICY: c.Bounds = {
    "gamma": [0.9, 0.95, 0.98, 0.99, 0.995, 0.999],
    "gae_lambda": [0.8, 0.9, 0.95, 0.98, 1.0],
    "learning_rate": (1e-4, 3e-3),
    "ent_coef": [0.0, 0.001, 0.01],
    "max_grad_norm": [0.5, 1.0, 5.0],
    "sde_sample_freq": [-1, 4, 16],
}
#: Ladder or range of every kwarg the ``cold`` space samples, per algorithm.
BOUNDS: dict[str, c.Bounds] = {
    "ppo": {
        **_ON_POLICY,
        "n_steps": [256, 512, 1024, 2048],
        "batch_size": [32, 64, 128, 256],
        "n_epochs": [5, 10, 20],
        "clip_range": [0.1, 0.2, 0.3],
    },
    "a2c": {**_ON_POLICY, "n_steps": [5, 8, 16, 32, 64], "normalize_advantage": [False, True]},
    "dqn": {
        "gamma": [0.95, 0.98, 0.99, 0.995, 0.999],
        "learning_rate": (1e-4, 3e-3),
        "batch_size": [32, 64, 128, 256],
        "buffer_size": [10_000, 50_000, 100_000],
        "learning_starts": [0, 1000, 10_000],
        "train_freq": [1, 4, 16, 64, 256],
        "gradient_steps": [1, 4, 16, 64, 128],
        "target_update_interval": [1, 100, 1000, 10_000],
        "exploration_fraction": [0.05, 0.1, 0.2, 0.5],
        "exploration_final_eps": [0.01, 0.05, 0.1],
    },
}
ALGOS = tuple(BOUNDS)


def _on_policy(trial: optuna.Trial, algo: str, n_actions: int, n_envs: int) -> dict[str, Any]:
    b = BOUNDS[algo]
    kwargs: dict[str, Any] = {
        key: c.choice(trial, b, key) for key in ("gamma", "gae_lambda", "ent_coef", "max_grad_norm")
    }
    kwargs["learning_rate"] = c.float_log(trial, b, "learning_rate")
    if algo == "ppo":
        kwargs["n_steps"] = c.choice(trial, b, "n_steps")
        # A minibatch cannot be larger than the rollout.
        kwargs["batch_size"] = min(c.choice(trial, b, "batch_size"), kwargs["n_steps"] * n_envs)
        kwargs["n_epochs"] = c.choice(trial, b, "n_epochs")
        kwargs["clip_range"] = c.choice(trial, b, "clip_range")
    else:
        kwargs["n_steps"] = c.choice(trial, b, "n_steps")
        kwargs["normalize_advantage"] = c.choice(trial, b, "normalize_advantage")
    if n_actions > 0 and trial.suggest_categorical("use_sde", [False, True]):
        kwargs["use_sde"] = True
        kwargs["sde_sample_freq"] = c.choice(trial, b, "sde_sample_freq")
    elif n_actions > 0:
        kwargs["use_sde"] = False
    return kwargs


def _dqn(trial: optuna.Trial) -> dict[str, Any]:
    b = BOUNDS["dqn"]
    kwargs = {key: c.choice(trial, b, key) for key in b if key != "learning_rate"}
    kwargs["learning_rate"] = c.float_log(trial, b, "learning_rate")
    return kwargs


def sample(algo: str) -> Any:
    """Return the ``cold`` search space of ``algo``."""

    def space(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
        if algo == "dqn":
            return _dqn(trial)
        return _on_policy(trial, algo, n_actions, n_envs)

    space.__name__ = f"cold_{algo}"
    space.__doc__ = f"Cold-start {algo} space: short ladders of values that hold up across envs (cold preset)."
    return space
