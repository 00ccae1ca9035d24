"""``conditional``: define-by-run spaces whose branches exist only under a parent choice.

Branches: learning-rate schedule (``lr_schedule``: constant | linear), optimizer (``optimizer``:
adam | rmsprop, each with its own parameters), gSDE on continuous actions (``use_sde``; its
sample frequency and ``log_std_init`` only when on), entropy bonus (PPO/A2C: off | on with its
coefficient), SAC/TQC entropy coefficient (``ent_coef_mode``: auto with a target entropy, or
fixed with its value), TD3/DDPG action noise (``noise_type``; its std only when on), DQN/QR-DQN
target update (``target_update``: hard with an interval, or soft with tau), and HER parameters
only when the config uses the HER replay buffer. Optuna only sees the active parameters.
"""

from __future__ import annotations

from typing import Any

import optuna

from zoo_ext.spaces import _common as c

__all__ = ["BOUNDS", "ALGOS", "sample"]

_ON_POLICY: c.Bounds = {
    "gamma": (0.9, 0.9999),
    "gae_lambda": (0.8, 0.999),
    "learning_rate": (1e-5, 1e-2),
    "ent_coef": (1e-6, 0.1),
    "max_grad_norm": (0.3, 5.0),
    "vf_coef": (0.1, 1.0),
}
_OFF_POLICY: c.Bounds = {
    "gamma": (0.9, 0.9999),
    "learning_rate": (1e-5, 1e-2),
    "batch_size": (32, 1024),
    "buffer_size": [10_000, 50_000, 100_000, 200_000, 300_000, 1_000_000],
    "learning_starts": [0, 100, 1000, 10_000],
    "train_freq": [1, 2, 4, 8, 16, 32, 64, 128, 256],
    "gradient_steps": [-1, 1, 2, 4, 8, 10, 16, 32, 64, 128],
    "tau": (0.001, 0.1),
}
#: Range or choices of every kwarg the ``conditional`` space samples, per algorithm.
BOUNDS: dict[str, c.Bounds] = {
    "ppo": {
        **_ON_POLICY,
        "n_steps": (8, 4096),
        "batch_size": (32, 1024),
        "n_epochs": (1, 20),
        "clip_range": (0.05, 0.4),
    },
    "a2c": {**_ON_POLICY, "n_steps": (2, 256), "normalize_advantage": [False, True]},
    "sac": {**_OFF_POLICY, "ent_coef": (1e-4, 1.0)},
    "tqc": {**_OFF_POLICY, "ent_coef": (1e-4, 1.0), "top_quantiles_to_drop_per_net": (0, 5)},
    "td3": {**_OFF_POLICY, "noise_std": (0.01, 0.8)},
    "ddpg": {**_OFF_POLICY, "noise_std": (0.01, 0.8)},
    "dqn": {
        **_OFF_POLICY,
        "exploration_fraction": (0.05, 0.5),
        "exploration_final_eps": (0.0, 0.2),
        "target_update_interval": (1, 20_000),
        "tau": (0.001, 0.1),
    },
}
BOUNDS["qrdqn"] = {**BOUNDS["dqn"], "n_quantiles": (5, 200)}
ALGOS = tuple(BOUNDS)


def _on_policy(trial: optuna.Trial, algo: str, n_actions: int, n_envs: int) -> dict[str, Any]:
    b = BOUNDS[algo]
    kwargs: dict[str, Any] = {
        "gamma": c.one_minus(trial, b, "gamma"),
        "gae_lambda": c.one_minus(trial, b, "gae_lambda"),
        "learning_rate": c.learning_rate(trial, b),
        "max_grad_norm": c.float_uniform(trial, b, "max_grad_norm"),
        "vf_coef": c.float_uniform(trial, b, "vf_coef"),
    }
    entropy = trial.suggest_categorical("entropy_bonus", ["off", "on"])
    kwargs["ent_coef"] = c.float_log(trial, b, "ent_coef") if entropy == "on" else 0.0
    if algo == "ppo":
        kwargs["n_steps"] = c.pow2(trial, b, "n_steps")
        # A minibatch cannot be larger than the rollout.
        kwargs["batch_size"] = min(c.pow2(trial, b, "batch_size"), kwargs["n_steps"] * n_envs)
        kwargs["n_epochs"] = c.int_uniform(trial, b, "n_epochs")
        kwargs["clip_range"] = c.float_uniform(trial, b, "clip_range")
    else:
        kwargs["n_steps"] = c.int_log(trial, b, "n_steps")
        kwargs["normalize_advantage"] = c.choice(trial, b, "normalize_advantage")
    sde_kwargs, policy_kwargs = c.gsde(trial, n_actions)
    kwargs.update(sde_kwargs)
    kwargs["policy_kwargs"] = {**c.optimizer(trial), **policy_kwargs}
    return kwargs


def _off_policy(trial: optuna.Trial, algo: str, n_actions: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    b = BOUNDS[algo]
    kwargs: dict[str, Any] = {
        "gamma": c.one_minus(trial, b, "gamma"),
        "learning_rate": c.learning_rate(trial, b),
        "batch_size": c.pow2(trial, b, "batch_size"),
        "buffer_size": c.choice(trial, b, "buffer_size"),
        "learning_starts": c.choice(trial, b, "learning_starts"),
        "train_freq": c.choice(trial, b, "train_freq"),
        "gradient_steps": c.choice(trial, b, "gradient_steps"),
    }
    policy_kwargs = c.optimizer(trial)
    if algo in ("sac", "tqc"):
        kwargs["tau"] = c.float_log(trial, b, "tau")
        if trial.suggest_categorical("ent_coef_mode", ["auto", "fixed"]) == "auto":
            kwargs["ent_coef"] = "auto"
            kwargs["target_entropy"] = -trial.suggest_float("target_entropy_scale", 0.25, 2.0) * max(n_actions, 1)
        else:
            kwargs["ent_coef"] = c.float_log(trial, b, "ent_coef")
        sde_kwargs, sde_policy_kwargs = c.gsde(trial, n_actions, warmup=True)
        kwargs.update(sde_kwargs)
        policy_kwargs.update(sde_policy_kwargs)
        if algo == "tqc":
            kwargs["top_quantiles_to_drop_per_net"] = c.int_uniform(trial, b, "top_quantiles_to_drop_per_net")
    elif algo in ("td3", "ddpg"):
        kwargs["tau"] = c.float_log(trial, b, "tau")
        kwargs["action_noise"] = c.action_noise(trial, n_actions, b)
    else:
        kwargs["exploration_fraction"] = c.float_uniform(trial, b, "exploration_fraction")
        kwargs["exploration_final_eps"] = c.float_uniform(trial, b, "exploration_final_eps")
        if trial.suggest_categorical("target_update", ["hard", "soft"]) == "hard":
            kwargs["tau"] = 1.0
            kwargs["target_update_interval"] = c.int_log(trial, b, "target_update_interval")
        else:
            kwargs["tau"] = c.float_log(trial, b, "tau")
            kwargs["target_update_interval"] = 1
        if algo == "qrdqn":
            policy_kwargs["n_quantiles"] = c.int_log(trial, b, "n_quantiles")
    kwargs["policy_kwargs"] = policy_kwargs
    kwargs.update(c.her(trial, additional_args))
    return kwargs


def sample(algo: str) -> Any:
    """Return the ``conditional`` search space of ``algo``."""

    def space(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
        if algo in ("ppo", "a2c"):
            return _on_policy(trial, algo, n_actions, n_envs)
        return _off_policy(trial, algo, n_actions, additional_args)

    space.__name__ = f"conditional_{algo}"
    space.__doc__ = f"Conditional {algo} space: LR schedule, optimizer, gSDE, entropy/noise/target branches."
    return space
