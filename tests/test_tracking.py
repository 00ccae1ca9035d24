"""MLflow logging of every trial: statuses, params, metrics, threads, processes, outage and sync."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from conftest import STOCK, load, mlflow_store, optimize_args, run
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

HELPERS = textwrap.dedent(
    '''
    import math

    import optuna


    def space(trial, n_actions, n_envs, additional_args):
        """Trial 2 diverges (NaN learning rate); the others train."""
        lr = trial.suggest_float("lr", 1e-4, 1e-3, log=True)
        return {"learning_rate": math.nan if trial.number == 2 else lr, "n_steps": 32, "batch_size": 32}


    class OddPruner(optuna.pruners.BasePruner):
        """Prunes every odd-numbered trial at its first evaluation."""

        def prune(self, study, trial):
            return trial.number % 2 == 1
    '''
)
STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def _runs(uri: str, experiment: str) -> tuple[list, list]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("zoo_ext.role") == "study"]
    children = [r for r in runs if r.data.tags.get("zoo_ext.role") == "trial"]
    return parents, children


def _check_runs_match_storage(study: optuna.Study, children: list, parent_id: str) -> None:
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    assert sorted(by_number) == [t.number for t in study.trials] and len(children) == len(study.trials)
    for trial in study.trials:
        run = by_number[trial.number]
        assert run.info.run_name == f"trial-{trial.number}"
        assert run.info.status == STATUS[trial.state.name]
        assert run.data.tags["optuna.trial_state"] == trial.state.name
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        for name, value in trial.params.items():
            assert run.data.params[name] == str(value)
        if trial.state.name == "COMPLETE":
            assert run.data.metrics["mean_reward"] == pytest.approx(trial.value)


def test_every_trial_is_a_run_with_its_status(workdir: Path) -> None:
    (workdir / "helpers.py").write_text(HELPERS)
    uri = mlflow_store(workdir)
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=4), "--sampler", "random"]
    args = [a for a in args if a != "--no-optim-plots"]
    flags = ["--search-space", "helpers:space", "--pruner", "helpers:OddPruner", "--mlflow-tracking-uri", uri,
             "--mlflow-experiment", "tracked", "-params", "n_envs:1"]  # fmt: skip
    run([*STOCK, *args, *flags], workdir, env={"PYTHONPATH": str(workdir)})
    study = load(workdir)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "FAIL", "PRUNED"]
    parents, children = _runs(uri, "tracked")
    assert len(parents) == 1
    _check_runs_match_storage(study, children, parents[0].info.run_id)
    client = MlflowClient(uri)
    complete = next(r for r in children if r.data.tags["optuna.trial_number"] == "0")
    history = client.get_metric_history(complete.info.run_id, "eval/mean_reward")
    assert [m.step for m in history] == [p["timesteps"] for p in study.trials[0].user_attrs["evaluations"]]
    assert complete.data.params["policy"] == "MlpPolicy" and complete.data.params["n_steps"] == "32"
    assert "train_time" in complete.data.metrics and "steps_per_second" in complete.data.metrics
    artifacts = {a.path for a in client.list_artifacts(complete.info.run_id)}
    assert "hyperparams.yml" in artifacts and "trial_0.zip" in artifacts  # the best trial keeps its model
    failed = next(r for r in children if r.data.tags["optuna.trial_number"] == "2")
    assert failed.data.tags["user_attr.fail_reason"].startswith(("training failed", "diverged"))
    study_artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"trials.csv", "optimization_history.html", "optimization_history.png"} <= study_artifacts
    parent = parents[0].data
    assert parent.params["zoo_ext.search_space"] == "helpers:space" and parent.params["directions"] == "maximize"
    assert parent.tags["version.optuna"] == optuna.__version__


def test_threads_do_not_cross_params(workdir: Path) -> None:
    uri = mlflow_store(workdir)
    args = [*optimize_args("ppo", "CartPole-v1", n=64, trials=8), "--sampler", "random", "--pruner", "none",
            "--n-jobs", "4", "--mlflow-tracking-uri", uri, "-params", "n_envs:1", "n_steps:32"]  # fmt: skip
    run([*STOCK, *args], workdir)
    study = load(workdir)
    parents, children = _runs(uri, "ppo-CartPole-v1")
    assert len(parents) == 1 and len(study.trials) == 8
    _check_runs_match_storage(study, children, parents[0].info.run_id)


def test_two_processes_share_one_parent_run(workdir: Path) -> None:
    uri = mlflow_store(workdir)
    args = [*optimize_args("ppo", "CartPole-v1", n=64, trials=3), "--sampler", "random", "--pruner", "none",
            "--mlflow-tracking-uri", uri, "-params", "n_envs:1", "n_steps:32"]  # fmt: skip
    first = subprocess.Popen([*STOCK, *args, "--seed", "1"], cwd=workdir, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    run([*STOCK, *args, "--seed", "2"], workdir)
    assert first.wait(timeout=600) == 0, first.stderr.read() if first.stderr else ""
    study = load(workdir)
    parents, children = _runs(uri, "ppo-CartPole-v1")
    assert len(study.trials) == 6 and len(parents) == 1
    _check_runs_match_storage(study, children, parents[0].info.run_id)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_outage_then_sync_creates_each_run_once(workdir: Path) -> None:
    down = f"http://127.0.0.1:{_closed_port()}"
    args = [*optimize_args("ppo", "CartPole-v1", n=64, trials=3), "--sampler", "random", "--pruner", "none",
            "--mlflow-tracking-uri", down, "-params", "n_envs:1", "n_steps:32"]  # fmt: skip
    proc = run([*STOCK, *args], workdir)
    assert proc.stderr.count("is unavailable") == 1
    study = load(workdir)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    uri = mlflow_store(workdir)
    sync = [sys.executable, "-m", "zoo_ext", "mlflow-sync", "--storage", "study.log", "--study-name", "s",
            "--mlflow-tracking-uri", uri]  # fmt: skip
    assert "Created 3 run(s)" in run(sync, workdir).stdout
    assert "Created 0 run(s)" in run(sync, workdir).stdout
    parents, children = _runs(uri, "ppo-CartPole-v1")
    assert len(parents) == 1
    _check_runs_match_storage(study, children, parents[0].info.run_id)
