"""``arch``: network architecture search; every other hyperparameter comes from the env's config.

Samples the number of layers and the width of each layer (powers of two), one layer list for
actor and critic (``arch_layout=same``) or one each (``separate``: pi/vf on-policy, pi/qf for
SAC/TD3/DDPG/TQC), the activation function, ``ortho_init`` (on-policy), ``n_critics``
(SAC/TD3/TQC) and the LSTM size (ppo_lstm). Records ``net_arch`` as a trial user attribute;
the trial adds ``n_params``, the policy's trainable-parameter count.
"""

from __future__ import annotations

from typing import Any

import optuna

from zoo_ext.attrs import TrialAttr
from zoo_ext.spaces import _common as c

__all__ = ["ALGOS", "BOUNDS", "sample"]

_LAYERS: c.Bounds = {"n_layers": (1, 3), "width": (8, 512), "activation_fn": list(c.ACTIVATIONS)}
BOUNDS: dict[str, c.Bounds] = {
    **{algo: {**_LAYERS, "ortho_init": [False, True]} for algo in ("a2c", "ppo", "trpo")},
    "ppo_lstm": {**_LAYERS, "ortho_init": [False, True], "lstm_hidden_size": (16, 256)},
    **{algo: {**_LAYERS, "n_critics": (1, 3)} for algo in ("sac", "td3", "tqc")},
    **{algo: dict(_LAYERS) for algo in ("ddpg", "dqn", "qrdqn", "ars")},
}
ALGOS = tuple(BOUNDS)
_ON_POLICY = ("a2c", "ppo", "trpo", "ppo_lstm")
_ACTOR_CRITIC = ("sac", "td3", "tqc", "ddpg")


def sample(algo: str) -> Any:
    """Return the ``arch`` search space of ``algo``."""
    b = BOUNDS[algo]

    def space(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
        if algo in _ON_POLICY:
            net_arch: Any = c.net_arch(trial, b, "vf")
        elif algo in _ACTOR_CRITIC:
            net_arch = c.net_arch(trial, b, "qf")
        else:
            net_arch = c.layers(trial, b, "net")
        policy_kwargs: dict[str, Any] = {
            "net_arch": net_arch,
            "activation_fn": c.ACTIVATIONS[c.choice(trial, b, "activation_fn")],
        }
        if "ortho_init" in b:
            policy_kwargs["ortho_init"] = c.choice(trial, b, "ortho_init")
        if "n_critics" in b:
            policy_kwargs["n_critics"] = c.int_uniform(trial, b, "n_critics")
        if "lstm_hidden_size" in b:
            policy_kwargs["lstm_hidden_size"] = c.pow2(trial, b, "lstm_hidden_size")
            policy_kwargs["enable_critic_lstm"] = trial.suggest_categorical("enable_critic_lstm", [False, True])
        trial.set_user_attr(TrialAttr.NET_ARCH, net_arch)
        return {"policy_kwargs": policy_kwargs}

    space.__name__ = f"arch_{algo}"
    space.__doc__ = f"Architecture search for {algo}: layers, widths, layout, activation."
    return space
