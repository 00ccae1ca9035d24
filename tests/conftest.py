"""Shared helpers: run the stock rl_zoo3 command (or ``python -m zoo_ext``) in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]
STOCK = [sys.executable, "-m", "rl_zoo3.train"]


def run(
    cmd: Sequence[str],
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``cwd`` with a clean, offline-friendly environment; return its output."""
    full_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "OPTUNAHUB_CACHE_HOME": str(cwd / "optunahub-cache"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    if "ZOO_EXT_DISABLE" not in (env or {}):
        full_env.pop("ZOO_EXT_DISABLE", None)
    proc = subprocess.run(
        list(cmd), cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        output = f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{output}")
    return proc


def optimize_args(algo: str, env_id: str, *, n: int = 256, trials: int = 2, seed: int = 3) -> list[str]:
    """Return stock ``-optimize`` flags for a tiny study stored in ``study.log``."""
    return [
        "--algo", algo, "--env", env_id, "-optimize", "-n", str(n), "--n-trials", str(trials),
        "--n-evaluations", "2", "--eval-episodes", "2", "--seed", str(seed), "--num-threads", "1",
        "--storage", "study.log", "--study-name", "s", "--no-optim-plots",
    ]  # fmt: skip


def load(cwd: Path, name: str = "s") -> optuna.Study:
    """Return the study a run in ``cwd`` wrote to ``study.log``."""
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(cwd / "study.log")))
    return optuna.load_study(storage=storage, study_name=name)


def mlflow_store(folder: Path) -> str:
    """Create an MLflow SQLite store in ``folder`` (once: creation takes seconds) and return its URI."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


@pytest.fixture(scope="session", autouse=True)
def _mlflow_tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every zoo run of the session logs to one MLflow store per test process (MLflow is on by default)."""
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_store(tmp_path_factory.mktemp("mlflow"))
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh working directory for one zoo run."""
    return tmp_path
