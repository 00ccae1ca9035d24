"""The ``-n`` ceiling: kwargs fitted so one seed trains at most ``-n`` env steps plus one rollout of at most ``-n``."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest
from helpers import STOCK, load, mlflow_runs, mlflow_store, optimize_args, run
from optuna.trial import TrialState
from sb3_contrib import TQC
from stable_baselines3 import A2C, DQN, PPO, SAC

from zoo_ext.ceiling import BudgetError, fit_to_budget, gradient_steps


def test_an_on_policy_rollout_is_clipped_to_n() -> None:
    # The case: n_steps 4096 on 4 envs is a rollout of 16,384 steps, 32 times -n 512.
    kwargs, clipped = fit_to_budget(PPO, {"n_steps": 4096, "batch_size": 8, "n_epochs": 20}, n_timesteps=512, n_envs=4)
    assert kwargs == {"n_steps": 128, "batch_size": 8, "n_epochs": 20}
    assert clipped == {"n_steps": {"from": 4096, "to": 128}}


def test_defaults_are_fitted_too_and_batch_size_follows_the_rollout() -> None:
    kwargs, clipped = fit_to_budget(PPO, {}, n_timesteps=100, n_envs=2)  # PPO's own n_steps 2048, batch_size 64
    assert kwargs == {"n_steps": 50} and clipped == {"n_steps": {"from": 2048, "to": 50}}
    kwargs, clipped = fit_to_budget(PPO, {"n_steps": 64, "batch_size": 256}, n_timesteps=100, n_envs=1)
    assert kwargs == {"n_steps": 64, "batch_size": 64} and clipped == {"batch_size": {"from": 256, "to": 64}}
    assert fit_to_budget(A2C, {"n_steps": 8}, n_timesteps=100, n_envs=4) == ({"n_steps": 8}, {})


def test_what_fits_already_is_left_alone() -> None:
    kwargs = {"n_steps": 256, "batch_size": 64, "learning_rate": 3e-4}
    assert fit_to_budget(PPO, kwargs, n_timesteps=100_000, n_envs=4) == (kwargs, {})
    assert fit_to_budget(SAC, {"train_freq": 8, "gradient_steps": 8}, n_timesteps=10_000, n_envs=1)[1] == {}


def test_off_policy_train_freq_is_clipped_and_keeps_its_replay_ratio() -> None:
    kwargs, clipped = fit_to_budget(
        TQC, {"train_freq": (400, "step"), "gradient_steps": 200, "learning_starts": 0}, n_timesteps=400, n_envs=2
    )
    assert kwargs["train_freq"] == (200, "step") and kwargs["gradient_steps"] == 100  # replay ratio 0.25 kept
    assert clipped == {"train_freq": {"from": (400, "step"), "to": (200, "step")},
                       "gradient_steps": {"from": 200, "to": 100}}  # fmt: skip
    kwargs, _ = fit_to_budget(SAC, {"train_freq": 1000, "gradient_steps": -1}, n_timesteps=500, n_envs=1)
    assert kwargs["train_freq"] == 500 and kwargs["gradient_steps"] == -1  # -1: one per env step, already fits
    episodes = {"train_freq": (3, "episode"), "learning_starts": 0}
    assert fit_to_budget(SAC, episodes, n_timesteps=500, n_envs=1) == (episodes, {})  # episode lengths are unknown


def test_learning_starts_leaves_half_of_n_to_learn() -> None:
    kwargs, clipped = fit_to_budget(DQN, {"learning_starts": 20_000}, n_timesteps=10_000, n_envs=1)
    assert kwargs["learning_starts"] == 5_000 and clipped["learning_starts"] == {"from": 20_000, "to": 5_000}
    _, clipped = fit_to_budget(DQN, {}, n_timesteps=128, n_envs=1)  # DQN's own learning_starts 100
    assert clipped["learning_starts"] == {"from": 100, "to": 64}


def test_what_no_clipping_can_fit_is_refused_with_its_reason() -> None:
    with pytest.raises(BudgetError, match="-n 3 is less than one env step for each of the 4 envs"):
        fit_to_budget(A2C, {}, n_timesteps=3, n_envs=4)
    with pytest.raises(BudgetError, match="-n 1 leaves a rollout of 1 step: too short for a mini-batch"):
        fit_to_budget(PPO, {"batch_size": 64}, n_timesteps=1, n_envs=1)


def test_gradient_steps_counts_mini_batches_for_ppo() -> None:
    # SB3 counts PPO's n_updates in epochs: 2 rollouts x 2 epochs x (32 / 16) mini-batches = 8 gradient steps.
    env = gym.make("CartPole-v1")
    ppo = PPO("MlpPolicy", env, n_steps=32, batch_size=16, n_epochs=2, seed=0, device="cpu").learn(64)
    assert ppo._n_updates == 4 and gradient_steps(ppo) == 8
    a2c = A2C("MlpPolicy", env, n_steps=8, seed=0, device="cpu").learn(64)
    assert gradient_steps(a2c) == 8  # one per rollout


@pytest.mark.slow
def test_a_study_never_trains_past_the_ceiling(workdir: Path) -> None:
    uri = mlflow_store(workdir)
    n = 256
    args = [*optimize_args("ppo", "Pendulum-v1", n=n, trials=4), "--sampler", "random", "--pruner", "none"]
    run([*STOCK, *args], workdir, env={"MLFLOW_TRACKING_URI": uri})
    study = load(workdir)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    n_envs = 4  # the zoo's Pendulum-v1 config
    for trial in study.trials:
        kwargs = trial.user_attrs["hyperparams"]
        assert kwargs["n_steps"] * n_envs <= n and kwargs["batch_size"] <= kwargs["n_steps"] * n_envs
        assert trial.user_attrs["env_steps"] <= 2 * n  # -n plus at most one rollout of at most -n
        for key, change in trial.user_attrs.get("clipped", {}).items():
            assert change["to"] == kwargs[key] and change["from"] != change["to"]
        assert trial.user_attrs["n_updates"] > 0
    assert any("clipped" in t.user_attrs for t in study.trials)  # the zoo's space samples n_steps up to 2048
    _, children = mlflow_runs(uri, "ppo-Pendulum-v1")
    logged = {int(r.data.tags["optuna.trial_number"]): r.data.metrics["n_updates"] for r in children}
    assert logged == {t.number: t.user_attrs["n_updates"] for t in study.trials}


@pytest.mark.slow
def test_no_clip_to_budget_trains_what_was_sampled(workdir: Path) -> None:
    space = workdir / "long.yml"
    space.write_text("name: long\nalgos: [a2c]\nparams:\n  n_steps: {type: categorical, choices: [64]}\n")
    args = [*optimize_args("a2c", "CartPole-v1", n=100, trials=1), "--search-space", str(space), "-params", "n_envs:4"]
    run([*STOCK, *args, "--no-mlflow", "--no-clip-to-budget"], workdir)
    stock_like = load(workdir).trials[0]
    assert stock_like.user_attrs["hyperparams"]["n_steps"] == 64 and "clipped" not in stock_like.user_attrs
    assert stock_like.user_attrs["env_steps"] == 256  # one rollout of 64 x 4 envs: 2.56 times -n
    (workdir / "study.log").unlink()
    run([*STOCK, *args, "--no-mlflow"], workdir)
    fitted = load(workdir).trials[0]
    assert fitted.user_attrs["clipped"] == {"n_steps": {"from": 64, "to": 25}}
    assert fitted.user_attrs["env_steps"] == 100
