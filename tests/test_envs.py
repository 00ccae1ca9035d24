"""Several envs per trial (``--tune-envs``): env lists, score ranges, normalisation, and a study on two real envs."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import STOCK, free_port, load, mlflow_store, optimize_args, run, running_server
from mlflow import MlflowClient
from stable_baselines3.common.env_util import make_vec_env

from zoo_ext import envs
from zoo_ext.objectives import aggregate


def test_the_env_of_env_comes_first_and_an_env_counts_once() -> None:
    assert envs.tune_envs("CartPole-v1", ["Acrobot-v1"]) == ("CartPole-v1", "Acrobot-v1")
    assert envs.tune_envs("CartPole-v1", ["Acrobot-v1", "CartPole-v1"]) == ("CartPole-v1", "Acrobot-v1")
    assert envs.tune_envs("CartPole-v1", []) == ()
    with pytest.raises(envs.EnvError, match="--tune-envs lists Acrobot-v1 more than once"):
        envs.tune_envs("CartPole-v1", ["Acrobot-v1", "Acrobot-v1"])


def test_env_scores_take_negative_numbers_and_env_ids_with_a_colon() -> None:
    tuned = ("CartPole-v1", "Acrobot-v1", "my_pkg:Env-v0")
    specs = ["Acrobot-v1:-500:0", "my_pkg:Env-v0:-1.5:2e3", "CartPole-v1:0:500"]
    assert envs.parse_env_scores(specs, tuned) == {
        "Acrobot-v1": (-500.0, 0.0),
        "my_pkg:Env-v0": (-1.5, 2000.0),
        "CartPole-v1": (0.0, 500.0),
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("Acrobot-v1", "write ENV:LO:HI"),
        ("Acrobot-v1:a:0", "LO and HI must be numbers"),
        ("Acrobot-v1:0:0", "HI must be a finite number above LO"),
        ("Acrobot-v1:0:inf", "HI must be a finite number above LO"),
        ("Pendulum-v1:0:1", "names 'Pendulum-v1', which is not tuned on: the envs are CartPole-v1, Acrobot-v1"),
    ],
)
def test_a_bad_env_score_says_why(spec: str, message: str) -> None:
    with pytest.raises(envs.EnvError, match=message):
        envs.parse_env_scores([spec], ("CartPole-v1", "Acrobot-v1"))


def test_an_unknown_env_names_the_closest_ones() -> None:
    envs.check_env_id("Acrobot-v1")
    with pytest.raises(envs.EnvError, match="did you mean Acrobot-v1"):
        envs.check_env_id("Acrobat-v1")


def test_the_value_aggregates_seeds_then_envs() -> None:
    assert envs.normalize(250.0, 0.0, 500.0) == 0.5
    assert envs.normalize(-250.0, -500.0, 0.0) == 0.5
    assert envs.normalize(3.0, 5.0, 5.0) == 0.0  # an empty range scores 0
    scores = {"a": [0.2, 0.4], "b": [1.0, 0.0], "c": [0.9, 0.9], "d": [0.0, 0.0]}
    per_env = [0.3, 0.5, 0.9, 0.0]
    assert envs.env_value(scores, seed_aggregate="mean", env_aggregate="min") == 0.0
    assert envs.env_value(scores, seed_aggregate="mean", env_aggregate="iqm") == pytest.approx(
        aggregate(per_env, "iqm")
    )
    assert envs.env_value(scores, seed_aggregate="min", env_aggregate="mean") == pytest.approx((0.2 + 0 + 0.9) / 4)


def test_a_random_policy_scores_what_random_actions_score_on_cartpole() -> None:
    def make_env(n_envs: int, *, eval_env: bool = False) -> Any:
        return make_vec_env("CartPole-v1", n_envs=n_envs)

    experiment: Any = SimpleNamespace(make_env=make_env, n_eval_episodes=20)
    first = envs.random_policy_return(experiment, seed=3)
    assert 10 < first < 40  # random CartPole episodes last ~22 steps; a trained policy reaches 500
    assert envs.random_policy_return(experiment, seed=3) == first


def _per_env_value(per_env: dict[str, Any]) -> float:
    return float(np.mean([np.mean(entry["normalized"]) for entry in per_env.values()]))


@pytest.mark.slow
def test_a_study_tunes_one_config_on_two_envs(workdir: Path) -> None:
    uri = mlflow_store(workdir)
    args = optimize_args("a2c", "CartPole-v1", n=512, trials=2)
    flags = ["--sampler", "random", "--pruner", "none", "--n-seeds", "2", "--tune-envs", "Acrobot-v1",
             "--env-scores", "CartPole-v1:0:500", "Acrobot-v1:-500:0", "--env-aggregate", "mean",
             "--mlflow-tracking-uri", uri, "--reevaluate-top", "1", "--eval-seeds", "2"]  # fmt: skip
    proc = run([*STOCK, *args, *flags], workdir)
    study = load(workdir)
    assert study.metric_names == ["mean_reward"]
    port = free_port()  # optuna-dashboard names the objective, not "Objective 0"
    dashboard = [str(Path(sys.executable).with_name("optuna-dashboard")), "study.log", "--port", str(port)]
    with running_server(dashboard, workdir, f"http://127.0.0.1:{port}/api/meta", timeout=120):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study._study_id}", timeout=10) as answer:
            assert json.load(answer)["objective_names"] == ["mean_reward"]
    assert study.user_attrs["env_scores"]["Acrobot-v1"] == {"lo": -500.0, "hi": 0.0, "source": "--env-scores"}
    for trial in study.trials:
        per_env = trial.user_attrs["per_env"]
        assert list(per_env) == ["CartPole-v1", "Acrobot-v1"]
        for env, (lo, hi) in {"CartPole-v1": (0, 500), "Acrobot-v1": (-500, 0)}.items():
            entry = per_env[env]
            assert entry["seeds"] == trial.user_attrs["seeds"] and len(entry["raw"]) == 2
            assert entry["normalized"] == pytest.approx([(x - lo) / (hi - lo) for x in entry["raw"]])
        assert trial.value == pytest.approx(_per_env_value(per_env))
        # --budget-steps counts every env: 2 envs x 2 seeds x -n, each run at least -n
        assert trial.user_attrs["env_steps"] >= 4 * 512
        assert set(trial.user_attrs["hyperparams_per_env"]) == {"Acrobot-v1"}
    assert "Envs (value: mean over envs of the seeds' normalised scores): CartPole-v1 0 = 0, 1 = 500" in proc.stdout
    # re-evaluated on 2 fresh seeds on both envs: per seed, the mean of the two envs' normalised scores
    tests = study.user_attrs["test_scores"]
    (number,) = [key for key in tests if key != "baseline"]
    scores = tests[number]["scores"]["mean_reward"]
    assert len(scores) == 2 and all(0 <= score <= 1 for score in scores)
    assert len(tests["baseline"]["scores"]["mean_reward"]) == 2
    assert "a2c on CartPole-v1 + Acrobot-v1" in proc.stdout
    # each env keeps its own rl_zoo3 config: A2C's Acrobot-v1 entry normalises and runs 16 envs, CartPole-v1's 8
    out = workdir / "best.yml"
    export = [sys.executable, "-m", "zoo_ext", "export", "--storage", "study.log", "--study-name", "s", "-o", str(out)]
    run(export, workdir)
    entries = yaml.safe_load(out.read_text())
    assert (entries["CartPole-v1"]["n_envs"], entries["Acrobot-v1"]["n_envs"]) == (8, 16)
    assert entries["Acrobot-v1"]["normalize"] and "normalize" not in entries["CartPole-v1"]
    for key in ("learning_rate", "gamma", "ent_coef"):  # the same sampled values on both
        assert entries["CartPole-v1"][key] == entries["Acrobot-v1"][key]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("a2c-CartPole-v1")
    runs = client.search_runs([experiment.experiment_id], "tags.`optuna.trial_number` = '0'")
    (trial_run,) = runs
    history = client.get_metric_history(trial_run.info.run_id, "env/Acrobot-v1/normalized")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        study.trials[0].user_attrs["per_env"]["Acrobot-v1"]["normalized"]
    )


@pytest.mark.slow
def test_racing_runs_env_seed_pairs_in_a_fixed_order_with_measured_ranges(workdir: Path) -> None:
    args = optimize_args("a2c", "CartPole-v1", n=512, trials=3)
    flags = ["--sampler", "random", "--tune-envs", "Acrobot-v1", "--n-seeds", "1", "--seed-racing", "--no-mlflow"]
    proc = run([*STOCK, *args, *flags], workdir)
    study = load(workdir)
    ranges = study.user_attrs["env_scores"]
    assert ranges["Acrobot-v1"] == {"lo": -500.0, "hi": None, "source": envs.MEASURED}  # random actions never swing up
    assert 5 < ranges["CartPole-v1"]["lo"] < 60
    for trial in study.trials:
        per_env = trial.user_attrs["per_env"]
        # step 0 is CartPole-v1, step 1 Acrobot-v1, in every trial: the racing pruner compares like with like
        order = [per_env[env]["normalized"][0] for env in ("CartPole-v1", "Acrobot-v1") if env in per_env]
        assert [trial.intermediate_values[k] for k in sorted(trial.intermediate_values)] == pytest.approx(order)
        for entry in per_env.values():
            assert entry["hi"] >= max(entry["raw"])
    assert "CartPole-v1 0 = " in proc.stdout and "(a random policy), 1 = " in proc.stdout
