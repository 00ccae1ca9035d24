"""MLflow logging of every trial: statuses, params, metrics, threads, processes, outage and sync."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import STOCK, finish, load, mlflow_store, optimize_args, run, start
from mlflow import MlflowClient

from zoo_ext import tracking

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
    # --n-trials 4 is the study's total of complete and pruned trials: the failed trial 2 is made up by trial 4
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "FAIL", "PRUNED", "COMPLETE"]
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
    # The study's story: the best value so far at each trial's end (a staircase), the counts, the best trial.
    first, last = study.trials[0].value, study.trials[4].value
    best_history = client.get_metric_history(parents[0].info.run_id, "best_value")
    assert sorted((m.step, m.value) for m in best_history) == [(0, first), (1, first), (2, first), (3, first),
                                                                (4, max(first, last))]  # fmt: skip
    assert (parent.metrics["n_complete"], parent.metrics["n_pruned"], parent.metrics["n_failed"]) == (2, 2, 1)
    assert parent.tags["best_trial"] == str(study.best_trial.number)
    assert parent.tags["best_params.lr"] == str(study.best_trial.params["lr"])


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
    assert len(study.trials) == 3 and len(parents) == 1  # --n-trials 3 is the study's total, shared by both
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


#: Optuna and user-attribute names MLflow rejects (over 250 characters) and a categorical label over 6000.
LONG_PARAM = "learning_rate_" + "x" * 260
LONG_ATTR = "rollout_" + "y" * 300
LONG_LABEL = "tanh_" + "z" * 7000


def test_names_mlflow_rejects_are_sanitised(workdir: Path) -> None:
    space = {
        "name": "long-names",
        "algos": ["ppo"],
        "params": {
            LONG_PARAM: {"type": "float", "low": 1e-4, "high": 1e-3, "log": True, "to": "learning_rate"},
            "activation": {"type": "categorical", "choices": {LONG_LABEL: "torch.nn:Tanh", "relu": "torch.nn:ReLU"},
                           "to": "policy_kwargs.activation_fn"},
        },
        "user_attrs": {LONG_ATTR: "n_envs * 2"},
    }  # fmt: skip
    (workdir / "space.yml").write_text(yaml.safe_dump(space))
    uri = mlflow_store(workdir)
    args = [*optimize_args("ppo", "CartPole-v1", n=256, trials=2), "--sampler", "random", "--pruner", "none",
            "--search-space", "space.yml", "--mlflow-tracking-uri", uri, "-params", "n_envs:1", "n_steps:32",
            "batch_size:32"]  # fmt: skip
    proc = run([*STOCK, *args], workdir)
    assert "tracking goes on" not in proc.stderr and "without tracking" not in proc.stderr
    study = load(workdir)
    parents, children = _runs(uri, "ppo-CartPole-v1")
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    assert sorted(by_number) == [t.number for t in study.trials] == [0, 1]
    param_key, attr_key = tracking.mlflow_key(LONG_PARAM), tracking.mlflow_key(f"user_attr.{LONG_ATTR}")
    assert len(param_key) == 250 and param_key.startswith(LONG_PARAM[:200])
    for trial in study.trials:
        run_data = by_number[trial.number]
        assert run_data.info.status in ("FINISHED", "KILLED") and trial.state.name in ("COMPLETE", "PRUNED")
        assert run_data.data.params[param_key] == str(trial.params[LONG_PARAM])
        assert run_data.data.params["activation"] == trial.params["activation"][:6000]
        assert run_data.data.tags[attr_key] == "2" and run_data.data.params["n_steps"] == "32"
    (parent,) = parents
    path = MlflowClient(uri).download_artifacts(parent.info.run_id, tracking.NAMES_ARTIFACT, str(workdir))
    names = json.loads(Path(path).read_text())
    assert names["params"][LONG_PARAM] == param_key and names["tags"][f"user_attr.{LONG_ATTR}"] == attr_key


def test_two_commands_on_a_new_default_store_are_both_tracked(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # MLflow's default: sqlite:///<cwd>/mlflow.db, created by both at once
    args = [*optimize_args("ppo", "CartPole-v1", n=256, trials=2), "--sampler", "random", "--pruner", "none",
            "-params", "n_envs:1", "n_steps:32", "batch_size:32"]  # fmt: skip
    procs = [start([*STOCK, *args, "--study-name", name], workdir) for name in ("a", "b")]
    outputs = finish(procs)
    assert not any("is unavailable" in out for out in outputs), outputs
    parents, children = _runs(f"sqlite:///{workdir / 'mlflow.db'}", "ppo-CartPole-v1")
    assert sorted(p.info.run_name for p in parents) == ["a", "b"]
    for name in ("a", "b"):
        study = load(workdir, name)
        (parent,) = [p for p in parents if p.info.run_name == name]
        mine = [r for r in children if r.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        _check_runs_match_storage(study, mine, parent.info.run_id)


def test_sync_gives_runs_the_artifacts_of_live_ones(workdir: Path) -> None:
    args = [*optimize_args("ppo", "CartPole-v1", n=256, trials=2), "--sampler", "random", "--pruner", "none",
            "--no-mlflow", "-params", "n_envs:1", "n_steps:32", "batch_size:32"]  # fmt: skip
    run([*STOCK, *args], workdir)
    uri = mlflow_store(workdir)
    sync = [sys.executable, "-m", "zoo_ext", "mlflow-sync", "--storage", "study.log", "--study-name", "s",
            "--mlflow-tracking-uri", uri]  # fmt: skip
    assert "Created 2 run(s)" in run(sync, workdir).stdout
    study = load(workdir)
    parents, children = _runs(uri, "ppo-CartPole-v1")
    _check_runs_match_storage(study, children, parents[0].info.run_id)
    client = MlflowClient(uri)
    for child in children:
        assert [a.path for a in client.list_artifacts(child.info.run_id)] == ["hyperparams.yml"]
        path = client.download_artifacts(child.info.run_id, "hyperparams.yml", str(workdir))
        entry = yaml.safe_load(Path(path).read_text())["CartPole-v1"]
        sampled = study.trials[int(child.data.tags["optuna.trial_number"])].user_attrs["hyperparams"]
        assert entry["n_steps"] == sampled["n_steps"] and entry["policy"] == "MlpPolicy" and entry["n_envs"] == 1
    study_artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"trials.csv", "optimization_history.html", "optimization_history.png"} <= study_artifacts
    synced = parents[0].data  # the study's story too, replayed from the storage
    assert synced.metrics["best_value"] == max(t.value for t in study.trials) and synced.metrics["n_complete"] == 2
    assert synced.tags["best_trial"] == str(study.best_trial.number)
