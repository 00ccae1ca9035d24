"""Building blocks of the built-in search spaces: bounds in kwarg units, and branches.

Each space module declares ``BOUNDS``: per algorithm, the range (``(low, high)``) or choices
(a list) of every constructor kwarg it samples, in the kwarg's own units. The suggest helpers
below read those bounds, so the table is the one place a range is written, and the test that
checks the zoo's tuned values against the spaces reads the same table.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
import torch
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

from zoo_ext.adapter import linear_schedule

__all__ = [
    "ACTIVATIONS",
    "Bounds",
    "action_noise",
    "choice",
    "float_log",
    "float_uniform",
    "gsde",
    "her",
    "learning_rate",
    "one_minus",
    "optimizer",
    "pow2",
]

Bounds = dict[str, tuple[float, float] | list[Any]]

ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "tanh": torch.nn.Tanh,
    "relu": torch.nn.ReLU,
    "elu": torch.nn.ELU,
    "leaky_relu": torch.nn.LeakyReLU,
    "gelu": torch.nn.GELU,
}


def _range(bounds: Bounds, key: str) -> tuple[float, float]:
    value = bounds[key]
    assert isinstance(value, tuple), f"{key} has choices, not a range"
    return value


def one_minus(trial: optuna.Trial, bounds: Bounds, key: str) -> float:
    """Return ``key`` (e.g. gamma) sampled as ``1 - x`` with x on a log scale (param ``one_minus_<key>``)."""
    low, high = _range(bounds, key)
    return 1 - trial.suggest_float(f"one_minus_{key}", 1 - high, 1 - low, log=True)


def pow2(trial: optuna.Trial, bounds: Bounds, key: str, name: str | None = None) -> int:
    """Return a power of two within ``bounds[key]``, sampled as its exponent (param ``<name>_pow``)."""
    low, high = _range(bounds, key)
    return int(2 ** trial.suggest_int(f"{name or key}_pow", int(math.log2(low)), int(math.log2(high))))


def float_log(trial: optuna.Trial, bounds: Bounds, key: str, name: str | None = None) -> float:
    """Return a float of ``bounds[key]`` on a log scale."""
    low, high = _range(bounds, key)
    return trial.suggest_float(name or key, low, high, log=True)


def float_uniform(trial: optuna.Trial, bounds: Bounds, key: str, name: str | None = None) -> float:
    """Return a float of ``bounds[key]`` on a linear scale."""
    low, high = _range(bounds, key)
    return trial.suggest_float(name or key, low, high)


def int_log(trial: optuna.Trial, bounds: Bounds, key: str, name: str | None = None) -> int:
    """Return an int of ``bounds[key]`` on a log scale."""
    low, high = _range(bounds, key)
    return trial.suggest_int(name or key, int(low), int(high), log=True)


def int_uniform(trial: optuna.Trial, bounds: Bounds, key: str, name: str | None = None) -> int:
    """Return an int of ``bounds[key]`` on a linear scale."""
    low, high = _range(bounds, key)
    return trial.suggest_int(name or key, int(low), int(high))


def choice(trial: optuna.Trial, bounds: Bounds, key: str, name: str | None = None) -> Any:
    """Return one of the choices listed in ``bounds[key]``."""
    choices = bounds[key]
    assert isinstance(choices, list), f"{key} has a range, not choices"
    return trial.suggest_categorical(name or key, choices)


def learning_rate(trial: optuna.Trial, bounds: Bounds) -> float | Any:
    """Return a constant learning rate or rl_zoo3's linear schedule (branch ``lr_schedule``)."""
    if trial.suggest_categorical("lr_schedule", ["constant", "linear"]) == "constant":
        return float_log(trial, bounds, "learning_rate")
    return linear_schedule(float_log(trial, bounds, "learning_rate", "learning_rate_initial"))


def optimizer(trial: optuna.Trial) -> dict[str, Any]:
    """Return ``policy_kwargs`` for Adam (``adam_eps``) or RMSprop (``rmsprop_alpha``, ``rmsprop_eps``)."""
    if trial.suggest_categorical("optimizer", ["adam", "rmsprop"]) == "adam":
        eps = trial.suggest_float("adam_eps", 1e-8, 1e-4, log=True)
        return {"optimizer_class": torch.optim.Adam, "optimizer_kwargs": {"eps": eps}}
    alpha = trial.suggest_float("rmsprop_alpha", 0.9, 0.999)
    eps = trial.suggest_float("rmsprop_eps", 1e-8, 1e-3, log=True)
    return {"optimizer_class": torch.optim.RMSprop, "optimizer_kwargs": {"alpha": alpha, "eps": eps}}


def gsde(trial: optuna.Trial, n_actions: int, *, warmup: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (kwargs, policy_kwargs) of the gSDE branch; only continuous actions (n_actions > 0) have one."""
    if n_actions <= 0:
        return {}, {}
    if not trial.suggest_categorical("use_sde", [False, True]):
        return {"use_sde": False}, {}
    kwargs: dict[str, Any] = {
        "use_sde": True,
        "sde_sample_freq": trial.suggest_categorical("sde_sample_freq", [-1, 1, 4, 8, 16, 32, 64]),
    }
    if warmup:
        kwargs["use_sde_at_warmup"] = trial.suggest_categorical("use_sde_at_warmup", [False, True])
    return kwargs, {"log_std_init": trial.suggest_float("log_std_init", -4.0, 1.0)}


def action_noise(trial: optuna.Trial, n_actions: int, bounds: Bounds) -> Any:
    """Return TD3/DDPG exploration noise, or None (branch ``noise_type``, std only when on)."""
    kind = trial.suggest_categorical("noise_type", ["none", "normal", "ornstein-uhlenbeck"])
    if kind == "none" or n_actions <= 0:
        return None
    std = float_uniform(trial, bounds, "noise_std")
    noise_class = NormalActionNoise if kind == "normal" else OrnsteinUhlenbeckActionNoise
    return noise_class(mean=np.zeros(n_actions), sigma=std * np.ones(n_actions))


def her(trial: optuna.Trial, additional_args: dict[str, Any]) -> dict[str, Any]:
    """Return ``replay_buffer_kwargs`` with HER parameters, only when the config uses HER."""
    if not additional_args.get("using_her_replay_buffer"):
        return {}
    kwargs = dict(additional_args.get("her_kwargs", {}))
    kwargs["n_sampled_goal"] = trial.suggest_int("n_sampled_goal", 1, 8)
    kwargs["goal_selection_strategy"] = trial.suggest_categorical(
        "goal_selection_strategy", ["final", "episode", "future"]
    )
    return {"replay_buffer_kwargs": kwargs}


def layers(trial: optuna.Trial, bounds: Bounds, prefix: str) -> list[int]:
    """Return a layer list: ``<prefix>_n_layers`` layers, each width a power of two (``<prefix>_width_<i>_pow``)."""
    low, high = _range(bounds, "n_layers")
    n_layers = trial.suggest_int(f"{prefix}_n_layers", int(low), int(high))
    return [pow2(trial, bounds, "width", f"{prefix}_width_{i}") for i in range(1, n_layers + 1)]


def net_arch(trial: optuna.Trial, bounds: Bounds, critic: str) -> list[int] | dict[str, list[int]]:
    """Return ``net_arch``: one layer list for actor and critic (``same``) or one each (``separate``)."""
    if trial.suggest_categorical("arch_layout", ["same", "separate"]) == "same":
        return layers(trial, bounds, "net")
    return {"pi": layers(trial, bounds, "pi"), critic: layers(trial, bounds, critic)}
