"""Warm start: the zoo's tuned hyperparameters expressed as a search space's Optuna parameters.

A space does not say how to invert it, so the mapping follows the naming conventions of the
zoo's and zoo_ext's spaces: a parameter named like the kwarg (``learning_rate``), ``one_minus_<kwarg>``
(``1 - value``), ``<kwarg>_pow`` (``log2(value)``), ``learning_rate_initial`` with
``lr_schedule=linear`` for ``lin_<x>`` values, and the branch parents of the ``conditional``
space. A value is used only if it lies in the parameter's distribution; everything else is left
to the sampler.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from optuna.distributions import BaseDistribution, CategoricalDistribution

__all__ = ["WarmStart", "warm_start"]


@dataclass
class WarmStart:
    """Trial-0 parameters, and which tuned kwargs they represent (or not)."""

    params: dict[str, Any] = field(default_factory=dict)
    represented: list[str] = field(default_factory=list)
    not_represented: list[str] = field(default_factory=list)


def _flatten(tuned: Mapping[str, Any]) -> dict[str, Any]:
    values = dict(tuned)
    policy_kwargs = values.pop("policy_kwargs", None)
    if isinstance(policy_kwargs, str):
        policy_kwargs = eval(policy_kwargs, {"dict": dict, "nn": torch.nn})  # rl_zoo3's own format
    if isinstance(policy_kwargs, Mapping):
        values.update(policy_kwargs)
    for key in ("n_timesteps", "policy", "n_envs", "normalize", "env_wrapper", "frame_stack", "callback"):
        values.pop(key, None)
    return values


def _candidates(key: str, value: Any) -> list[tuple[str, Any]]:
    """Return (param name, param value) pairs that would produce ``key=value``."""
    out: list[tuple[str, Any]] = []
    if isinstance(value, str) and value.startswith("lin_"):
        x = float(value[4:])
        if key == "learning_rate":
            out += [("lr_schedule", "linear"), ("learning_rate_initial", x)]
        return out
    if key == "learning_rate" and isinstance(value, (int, float)):
        out.append(("lr_schedule", "constant"))
    if key == "ent_coef":
        if value == "auto":
            return [("ent_coef_mode", "auto")]
        if value == 0:
            return [("entropy_bonus", "off")]
        out += [("entropy_bonus", "on"), ("ent_coef_mode", "fixed")]
    if key == "target_update_interval":
        out.append(("target_update", "hard"))
    if key == "noise_type":
        out.append(("noise_type", value))
    if key == "activation_fn" and isinstance(value, type):
        out += [(key, name) for name in ("tanh", "relu", "elu", "leaky_relu", "gelu")
                if getattr(torch.nn, {"tanh": "Tanh", "relu": "ReLU", "elu": "ELU",
                                      "leaky_relu": "LeakyReLU", "gelu": "GELU"}[name]) is value]  # fmt: skip
        return out
    out.append((key, value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out.append((f"one_minus_{key}", 1 - value))
        if value > 0 and float(math.log2(value)).is_integer():
            out.append((f"{key}_pow", int(math.log2(value))))
    return out


def _fits(distribution: BaseDistribution, value: Any) -> bool:
    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def warm_start(tuned: Mapping[str, Any], distributions: Mapping[str, BaseDistribution]) -> WarmStart:
    """Return trial-0 params representing as much of ``tuned`` (a zoo env entry) as ``distributions`` allow."""
    result = WarmStart()
    for key, value in _flatten(tuned).items():
        pairs = [(name, v) for name, v in _candidates(key, value) if name in distributions]
        fitting = [(name, v) for name, v in pairs if _fits(distributions[name], v)]
        if fitting and {name for name, _ in fitting} == {name for name, _ in pairs}:
            result.params.update(fitting)
            result.represented.append(key)
        else:
            result.not_represented.append(key)
    return result
