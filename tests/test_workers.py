"""``--n-workers``: worker processes on one study, the trial budget counted in total."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from conftest import STOCK, mlflow_store, run
from mlflow import MlflowClient

pytestmark = pytest.mark.slow


def test_two_workers_run_the_budget_once(workdir: Path) -> None:
    uri = mlflow_store(workdir)
    args = ["--algo", "ppo", "--env", "CartPole-v1", "-optimize", "-n", "64", "--n-trials", "4", "--n-evaluations",
            "1", "--eval-episodes", "2", "--sampler", "random", "--pruner", "none", "--seed", "5", "--study-name", "w",
            "--n-workers", "2", "--mlflow-tracking-uri", uri, "--no-optim-plots",
            "-params", "n_envs:1", "n_steps:32"]  # fmt: skip
    proc = run([*STOCK, *args], workdir)
    assert "Running 2 worker processes on study 'w'" in proc.stdout
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(workdir / "logs" / "ppo" / "w.log"))
    )
    study = optuna.load_study(storage=storage, study_name="w")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4  # workers' own sampler seeds
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ppo-CartPole-v1").experiment_id])
    parents = [r for r in runs if r.data.tags.get("zoo_ext.role") == "study"]
    children = sorted(
        int(r.data.tags["optuna.trial_number"]) for r in runs if r.data.tags.get("zoo_ext.role") == "trial"
    )
    assert len(parents) == 1 and children == [0, 1, 2, 3]
    assert "Number of finished trials:  4" in proc.stdout  # the launcher's summary, once
