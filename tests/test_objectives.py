"""Multi-objective studies, several seeds per trial, objective metrics, re-evaluation on fresh seeds."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from helpers import STOCK, load, optimize_args, run
from mlflow import MlflowClient
from scipy.stats import trim_mean
from stable_baselines3 import PPO

from zoo_ext.objectives import (
    OBJECTIVES,
    Objective,
    ObjectiveError,
    RunResult,
    aggregate,
    register_objective,
    resolve_objectives,
)
from zoo_ext.registry import import_dotted

TINY = ["-params", "n_envs:1", "n_steps:32", "batch_size:32"]


def _args(trials: int, *extra: str) -> list[str]:
    return [*optimize_args("ppo", "CartPole-v1", n=96, trials=trials), "--sampler", "random", *TINY, *extra]


def _policy_kwargs(record: dict) -> dict:
    kwargs = dict(record.get("policy_kwargs", {}))
    return {k: import_dotted(v) if isinstance(v, str) and ":" in v else v for k, v in kwargs.items()}


def _non_dominated(points: dict[int, tuple[float, float]]) -> set[int]:
    """Trials not dominated (maximise the first value, minimise the second)."""

    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] >= b[0] and a[1] <= b[1] and a != b

    return {n for n, p in points.items() if not any(dominates(q, p) for m, q in points.items() if m != n)}


@pytest.mark.slow
def test_two_objectives_give_a_pareto_front(workdir: Path) -> None:
    proc = run([*STOCK, *_args(5, "--objectives", "mean_reward", "n_params", "--pruner", "median")], workdir)
    assert "pruner 'median' disabled: it prunes on one objective" in proc.stderr
    assert "-random-none_" in proc.stdout.split("Writing report to")[1]  # the pruner actually used
    assert "A new study created in memory" not in proc.stdout + proc.stderr
    study = load(workdir)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    env = gym.make("CartPole-v1")
    for trial in study.trials:
        assert trial.state.name == "COMPLETE"
        model = PPO("MlpPolicy", env, policy_kwargs=_policy_kwargs(trial.user_attrs["hyperparams"]), device="cpu")
        assert trial.values[1] == sum(p.numel() for p in model.policy.parameters() if p.requires_grad)
    expected = _non_dominated({t.number: (t.values[0], t.values[1]) for t in study.trials})
    assert {t.number for t in study.best_trials} == expected
    table = proc.stdout.split("Pareto-optimal trials")[1].split("Writing report")[0]
    printed = {int(line.split()[0]) for line in table.strip().splitlines()[2:]}
    assert printed == expected
    report = run([sys.executable, "-m", "zoo_ext", "report", "--storage", "study.log", "--study-name", "s"], workdir)
    lines = report.stdout.split("Pareto-optimal trials")[1].strip().splitlines()[2:]
    assert {int(line.split()[0]) for line in lines if line.split()[0].isdigit()} == expected
    assert (workdir / "report_s" / "pareto_front.png").exists()
    client = MlflowClient()
    query = f"tags.`zoo_ext.study_uid` = '{study.user_attrs['zoo_ext_uid']}' and tags.`zoo_ext.role` = 'trial'"
    runs = client.search_runs([client.get_experiment_by_name("ppo-CartPole-v1").experiment_id], query)
    assert len(runs) == 5
    for mlflow_run in runs:
        trial = study.trials[int(mlflow_run.data.tags["optuna.trial_number"])]
        assert mlflow_run.data.metrics["mean_reward"] == pytest.approx(trial.values[0])
        assert mlflow_run.data.metrics["n_params"] == trial.values[1]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["mean", "median", "iqm", "min"])
def test_several_seeds_are_aggregated(workdir: Path, how: str) -> None:
    run([*STOCK, *_args(1, "--n-seeds", "3", "--seed-aggregate", how, "--pruner", "none")], workdir)
    (trial,) = load(workdir).trials
    per_seed = trial.user_attrs["per_seed"]["mean_reward"]
    assert len(per_seed) == 3
    expected = {"mean": np.mean, "median": statistics.median, "min": min,
                "iqm": lambda v: trim_mean(v, 0.25)}[how](per_seed)  # fmt: skip
    assert trial.value == pytest.approx(expected)
    seeds = trial.user_attrs["seeds"]
    assert len(set(seeds)) == 3 and trial.user_attrs["seed"] == seeds[0]


@pytest.mark.slow
def test_objective_metric_best_and_auc(workdir: Path) -> None:
    extra = ["--n-evaluations", "3", "--pruner", "none"]
    best_dir, auc_dir = workdir / "best", workdir / "auc"
    best_dir.mkdir()
    auc_dir.mkdir()
    run([*STOCK, *_args(2, *extra, "--objective-metric", "best")], best_dir)
    run([*STOCK, *_args(2, *extra, "--objectives", "auc")], auc_dir)
    for trial in load(best_dir).trials:
        assert len(trial.intermediate_values) >= 3
        assert trial.value == pytest.approx(max(trial.intermediate_values.values()))
    for trial in load(auc_dir).trials:
        assert trial.value == pytest.approx(np.mean(list(trial.intermediate_values.values())))


@pytest.mark.slow
def test_reevaluate_top_on_fresh_seeds(workdir: Path) -> None:
    proc = run([*STOCK, *_args(3, "--pruner", "none", "--reevaluate-top", "2", "--eval-seeds", "2")], workdir)
    study = load(workdir)
    tests = {k: v for k, v in study.user_attrs["test_scores"].items() if k != "baseline"}
    assert len(tests) == 2
    tuning_seeds = {s for t in study.trials for s in t.user_attrs["seeds"]}
    best = sorted(study.trials, key=lambda t: t.value, reverse=True)[:2]
    assert set(tests) == {str(t.number) for t in best}
    for scores in tests.values():
        assert len(scores["scores"]["mean_reward"]) == 2 and not set(scores["seeds"]) & tuning_seeds
        assert scores["aggregate"]["mean_reward"] == pytest.approx(np.mean(scores["scores"]["mean_reward"]))
    assert "Re-evaluated on fresh seeds" in proc.stdout
    out = run([sys.executable, "-m", "zoo_ext", "export", "--storage", "study.log", "--study-name", "s",
               "--pick", "test", "-o", "t.yml"], workdir).stdout  # fmt: skip
    winner = max(tests, key=lambda n: tests[n]["aggregate"]["mean_reward"])
    assert f"Wrote trial {winner} " in out


def test_aggregates() -> None:
    values = [1.0, 2.0, 3.0, 10.0]
    assert aggregate(values, "mean") == 4.0 and aggregate(values, "median") == 2.5 and aggregate(values, "min") == 1
    assert aggregate(values, "iqm") == pytest.approx(2.5)


def test_register_objective_and_builtins() -> None:
    @register_objective("unit-final-std", direction="minimize")
    def final_std(result: RunResult, metric: str) -> float:
        """Std at the last evaluation."""
        return result.curve[-1]["std_reward"]

    result = RunResult(seed=0, curve=[{"timesteps": 10, "mean_reward": 1.0, "std_reward": 0.5},
                                      {"timesteps": 20, "mean_reward": 3.0, "std_reward": 0.1}],
                       train_time=2.0, n_params=7)  # fmt: skip
    (custom,) = resolve_objectives(["unit-final-std"])
    assert custom.direction == "minimize" and custom(result, "last") == 0.1
    by_name = {o.name: o for o in resolve_objectives(["mean_reward", "auc", "train_time", "n_params"])}
    assert by_name["mean_reward"](result, "best") == 3.0 and by_name["mean_reward"](result, "mean") == 2.0
    assert by_name["auc"](result, "last") == 2.0 and by_name["n_params"](result, "last") == 7
    assert {"inference_time", "reward_std"} <= set(OBJECTIVES.names())


def test_bad_directions_and_repeated_objectives_are_refused() -> None:
    with pytest.raises(ObjectiveError, match="'unit-up' has direction 'up': it must be one of maximize, minimize"):
        register_objective("unit-up", direction="up")
    assert "unit-up" not in OBJECTIVES.names()
    with pytest.raises(ObjectiveError, match="direction 'max'"):
        Objective("unit-max", "max", lambda result, metric: 0.0)
    with pytest.raises(ObjectiveError, match="objective\\(s\\) 'auc' given more than once"):
        resolve_objectives(["auc", "mean_reward", "auc"])
    assert [o.name for o in resolve_objectives(["auc", "mean_reward"])] == ["auc", "mean_reward"]
