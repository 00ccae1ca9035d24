"""Fixtures, and the check that fails an unmarked test over 5 s; the helpers are in ``helpers.py``."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import LR_SPACE, Postgres, SlowCheck, mlflow_store

pytest_plugins = ["pytester"]


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SlowCheck(), "zoo_ext-slow-check")


@pytest.fixture(scope="session", autouse=True)
def _mlflow_tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every zoo run of the session logs to one MLflow store per test process (MLflow is on by default)."""
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_store(tmp_path_factory.mktemp("mlflow"))
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"


@pytest.fixture(scope="session", autouse=True)
def _first_optimizer_imported() -> None:
    """Create one torch optimizer if the tests import torch: the first one imports ``torch._dynamo`` (seconds).

    Paid here, in the session's set-up, rather than by whichever test happens to build the first model
    (a test's call phase is what the 5 s check of :class:`helpers.SlowCheck` measures).
    """
    if "torch" in sys.modules:
        import torch

        torch.optim.Adam([torch.zeros(1, requires_grad=True)])


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh working directory for one zoo run."""
    return tmp_path


@pytest.fixture
def space_dir(tmp_path: Path) -> Path:
    """A working directory holding ``lr.yml``, the one-parameter space of :func:`study_args`."""
    (tmp_path / "lr.yml").write_text(LR_SPACE)
    return tmp_path


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server for the session (each test creates its own databases)."""
    server = Postgres(Path(tempfile.mkdtemp(prefix="zoo_ext_pg_")))
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
