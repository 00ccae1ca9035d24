"""The built-in ``conditional``, ``arch`` and ``replay-ratio`` spaces, sampled without training."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import optuna
import pytest
import torch
import yaml

from zoo_ext import adapter, record
from zoo_ext.spaces import SEARCH_SPACES, _common, arch, cold, conditional, replay_ratio

CLASSIC_AND_BOX2D = {
    "CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0",
    "LunarLander-v3", "LunarLanderContinuous-v3", "BipedalWalker-v3", "BipedalWalkerHardcore-v3",
}  # fmt: skip
CONTINUOUS_ONLY = {"sac", "td3", "ddpg", "tqc"}
DISCRETE_ONLY = {"dqn", "qrdqn"}
POLICY = {"ppo_lstm": "MlpLstmPolicy"}
N_SAMPLES = 200


def _ask(study: optuna.Study, space: Any, n_actions: int, n_envs: int = 1, her: bool = False) -> tuple:
    trial = study.ask()
    args = {"using_her_replay_buffer": her, "her_kwargs": {}}
    kwargs = space(trial, n_actions, n_envs, args)
    return study.tell(trial, 0.0), kwargs


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for name, module in (("conditional", conditional), ("arch", arch), ("replay-ratio", replay_ratio), ("cold", cold)):
        for algo in module.ALGOS:
            envs = ["Pendulum-v1", "CartPole-v1"]
            if algo in CONTINUOUS_ONLY:
                envs = ["Pendulum-v1"]
            elif algo in DISCRETE_ONLY:
                envs = ["CartPole-v1"]
            cases.extend((name, algo, env_id) for env_id in envs)
    return cases


@pytest.mark.slow
@pytest.mark.parametrize(("name", "algo", "env_id"), _cases())
def test_every_sample_builds_the_model(name: str, algo: str, env_id: str) -> None:
    space = SEARCH_SPACES.get(name, algo)
    env = gym.make(env_id)
    n_actions = env.action_space.shape[0] if isinstance(env.action_space, gym.spaces.Box) else 0
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    algo_class = adapter.algo_classes()[algo]
    for _ in range(N_SAMPLES):
        trial, kwargs = _ask(study, space, n_actions)
        if "buffer_size" in kwargs:
            kwargs["buffer_size"] = min(kwargs["buffer_size"], 10_000)  # same code path, less memory
        model = algo_class(POLICY.get(algo, "MlpPolicy"), env, device="cpu", **kwargs)
        record.encode(kwargs)
        if name == "arch":
            assert trial.user_attrs["net_arch"] == kwargs["policy_kwargs"]["net_arch"]
            assert model.policy is not None
    env.close()


def _branches(algo: str, n_actions: int) -> list[tuple[str, str, dict[str, set[str]]]]:
    """(parent param, value, children only present under that value) of the conditional space."""
    branches = [
        ("lr_schedule", "constant", {"learning_rate"}),
        ("lr_schedule", "linear", {"learning_rate_initial"}),
        ("optimizer", "adam", {"adam_eps"}),
        ("optimizer", "rmsprop", {"rmsprop_alpha", "rmsprop_eps"}),
    ]
    if algo in ("ppo", "a2c"):
        branches += [("entropy_bonus", "on", {"ent_coef"}), ("entropy_bonus", "off", set())]
    if algo in ("sac", "tqc"):
        branches += [("ent_coef_mode", "auto", {"target_entropy_scale"}), ("ent_coef_mode", "fixed", {"ent_coef"})]
    if algo in ("td3", "ddpg"):
        branches += [("noise_type", "normal", {"noise_std"}), ("noise_type", "none", set())]
    if algo in ("dqn", "qrdqn"):
        branches += [("target_update", "hard", {"target_update_interval"}), ("target_update", "soft", {"tau"})]
    if n_actions and algo in ("ppo", "a2c", "sac", "tqc"):
        branches += [("use_sde", True, {"sde_sample_freq", "log_std_init"}), ("use_sde", False, set())]
    return branches  # type: ignore[return-value]


@pytest.mark.parametrize("algo", ["ppo", "a2c", "sac", "td3", "dqn"])
def test_conditional_children_exist_only_under_their_parent(algo: str) -> None:
    n_actions = 0 if algo == "dqn" else 1
    space = SEARCH_SPACES.get("conditional", algo)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    branches = _branches(algo, n_actions)
    reached = set()
    for _ in range(N_SAMPLES):
        trial, kwargs = _ask(study, space, n_actions, her=algo == "sac")
        rec = record.encode(kwargs)
        for parent, value, children in branches:
            other = set().union(*(ch for p, v, ch in branches if p == parent and v != value)) - children
            if trial.params[parent] == value:
                reached.add((parent, value))
                assert children <= set(trial.params), (parent, value)
                assert not other & set(trial.params), (parent, value)
        if trial.params["lr_schedule"] == "linear":
            assert rec["learning_rate"].startswith("lin_")
        else:
            assert isinstance(rec["learning_rate"], float)
        if trial.params.get("use_sde") is False:
            assert "sde_sample_freq" not in rec and "log_std_init" not in rec["policy_kwargs"]
        if algo in ("td3",) and trial.params["noise_type"] == "none":
            assert rec["action_noise"] is None and "noise_std" not in rec
        if algo == "sac":
            assert {"n_sampled_goal", "goal_selection_strategy"} <= set(trial.params)
        if trial.params["optimizer"] == "adam":
            assert rec["policy_kwargs"]["optimizer_class"] == "torch.optim:Adam"
    assert reached == {(p, v) for p, v, _ in branches}


@pytest.mark.parametrize("n_envs", [1, 4, 16])
@pytest.mark.parametrize("algo", replay_ratio.ALGOS)
def test_replay_ratio_is_exact_for_any_n_envs(algo: str, n_envs: int) -> None:
    space = SEARCH_SPACES.get("replay-ratio", algo)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    for _ in range(N_SAMPLES):
        trial, kwargs = _ask(study, space, 1, n_envs)
        sampled, freq, steps = trial.params["replay_ratio"], kwargs["train_freq"], kwargs["gradient_steps"]
        effective = trial.user_attrs["replay_ratio"]
        assert effective == steps / (freq * n_envs)
        if freq == trial.params["train_freq"]:
            assert abs(steps - sampled * freq * n_envs) <= 0.5  # gradient_steps rounded
        else:
            assert steps == 1 and abs(freq - 1 / (sampled * n_envs)) <= 0.5  # train_freq rounded instead
        assert math.isclose(effective, sampled, rel_tol=0.5)


def _contains(bounds: _common.Bounds, key: str, value: Any) -> bool:
    """Return True when ``value`` lies in the range, or among the choices, of ``bounds[key]``."""
    spec = bounds[key]
    return bool(spec[0] <= value <= spec[1]) if isinstance(spec, tuple) else value in spec


def _widths(net: Any) -> list[int]:
    return [w for part in net.values() for w in part] if isinstance(net, dict) else list(net)


def _tuned_values(algo: str) -> list[tuple[str, str, Any]]:
    table = yaml.safe_load(adapter.default_config_path(algo).read_text())
    values = []
    for env_id, entry in table.items():
        if env_id not in CLASSIC_AND_BOX2D:
            continue
        for key, value in entry.items():
            if key == "policy_kwargs":
                kwargs = eval(value, {"dict": dict, "nn": torch.nn})  # the zoo's own format
                values.extend((env_id, k, v) for k, v in kwargs.items())
            else:
                values.append((env_id, key, value))
    return values


@pytest.mark.parametrize(
    ("module", "algo"), [(m, a) for m in (conditional, arch, replay_ratio) for a in m.ALGOS], ids=str
)
def test_spaces_contain_the_zoo_tuned_values(module: Any, algo: str) -> None:
    bounds = module.BOUNDS[algo]
    checked = 0
    for env_id, key, value in _tuned_values(algo):
        if key == "net_arch" and "width" in bounds:
            layer_lists = value.values() if isinstance(value, dict) else [value]
            assert all(_contains(bounds, "n_layers", len(layer)) for layer in layer_lists), (env_id, value)
            assert all(_contains(bounds, "width", w) for w in _widths(value)), (env_id, value)
        elif key == "activation_fn" and key in bounds:
            assert value in _common.ACTIVATIONS.values(), (env_id, value)
        elif key in bounds:
            if isinstance(value, str) and value.startswith("lin_"):
                value = float(value[4:])
            if (key, value) in {("ent_coef", 0.0), ("ent_coef", "auto")} and module is conditional:
                continue  # the entropy branches: "off" (PPO/A2C) and "auto" (SAC/TQC)
            assert _contains(bounds, key, value), (env_id, key, value, bounds[key])
        else:
            continue
        checked += 1
    assert checked or algo in ("ppo_lstm", "ars", "trpo"), "no tuned value was checked"
