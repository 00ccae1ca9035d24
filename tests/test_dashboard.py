"""optuna-dashboard (a dependency) serves zoo_ext's studies, from a SQLite database and from a journal file."""

from __future__ import annotations

import contextlib
import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from helpers import free_port, running_server

#: Each test starts an optuna-dashboard server.
pytestmark = pytest.mark.slow

#: The console script pip installs next to the interpreter (optuna_dashboard has no ``__main__``).
DASHBOARD = Path(sys.executable).with_name("optuna-dashboard")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@contextlib.contextmanager
def dashboard(storage: str, cwd: Path) -> Iterator[str]:
    """Run ``optuna-dashboard STORAGE`` on a free port of 127.0.0.1; yield its URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(DASHBOARD), storage, "--host", "127.0.0.1", "--port", str(port)]
    with running_server(cmd, cwd, f"{url}/api/meta", timeout=120):
        yield url


def _tuning_study(storage: Any) -> optuna.Study:
    """Create the demo's study shape: PPO Pendulum, conditional space, 4 evaluations, one trial pruned."""
    study = optuna.create_study(
        storage=storage, study_name="ppo-pendulum", direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    study.set_user_attr("algo", "ppo")
    study.set_user_attr("env_id", "Pendulum-v1")
    study.set_user_attr("objectives", ["mean_reward"])

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
        if trial.suggest_categorical("use_sde", [False, True]):
            trial.suggest_int("sde_sample_freq", 1, 8)
        trial.set_user_attr("hyperparams", {"learning_rate": lr})
        for step in range(4):
            trial.report(-1000.0 + 100 * step + trial.number, step)
        if trial.number == 2:
            raise optuna.TrialPruned()
        return -600.0 + trial.number

    study.optimize(objective, n_trials=4)
    return study


def _check_served(url: str, study: optuna.Study) -> None:
    """Assert the dashboard's API lists ``study`` and returns its trials as the storage holds them."""
    (summary,) = [s for s in _get(f"{url}/api/studies")["study_summaries"] if s["study_name"] == "ppo-pendulum"]
    assert summary["directions"] == ["maximize"]
    assert {a["key"]: a["value"] for a in summary["user_attrs"]}["env_id"] == "Pendulum-v1"
    detail = _get(f"{url}/api/studies/{summary['study_id']}")
    assert detail["name"] == "ppo-pendulum"
    assert len(detail["trials"]) == len(study.trials) == 4
    assert [t["state"] for t in detail["trials"]] == ["Complete", "Complete", "Pruned", "Complete"]
    for served, trial in zip(detail["trials"], study.trials, strict=True):
        assert {p["name"] for p in served["params"]} == set(trial.params)
        assert [v["step"] for v in served["intermediate_values"]] == [0, 1, 2, 3]
    assert [t["number"] for t in detail["best_trials"]] == [study.best_trial.number]
    assert detail["has_intermediate_values"] is True


def test_dashboard_serves_sqlite_study(tmp_path: Path) -> None:
    study = _tuning_study(f"sqlite:///{tmp_path / 'demo.db'}")
    with dashboard(f"sqlite:///{tmp_path / 'demo.db'}", tmp_path) as url:
        _check_served(url, study)


def test_dashboard_serves_journal_file(tmp_path: Path) -> None:
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log")))
    study = _tuning_study(journal)
    with dashboard("study.log", tmp_path) as url:  # a journal file is given as a plain path
        _check_served(url, study)
