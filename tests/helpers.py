"""Test helpers (``from helpers import ...``): run the stock rl_zoo3 command (or ``python -m zoo_ext``) in a
subprocess, load its study, start PostgreSQL, MLflow and other servers; the fixtures are in ``conftest.py``."""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from zoo_ext.options import ZooOptions

ROOT = Path(__file__).resolve().parents[1]
STOCK = [sys.executable, "-m", "rl_zoo3.train"]


def zoo_env(cwd: Path, env: dict[str, str] | None) -> dict[str, str]:
    """Return a clean, offline-friendly environment for a zoo run in ``cwd``."""
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
    return full_env


def run(
    cmd: Sequence[str],
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``cwd`` with a clean, offline-friendly environment; return its output."""
    proc = subprocess.run(
        list(cmd), cwd=cwd, env=zoo_env(cwd, env), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        output = f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{output}")
    return proc


def start(
    cmd: Sequence[str], cwd: Path, *, env: dict[str, str] | None = None, new_session: bool = False
) -> subprocess.Popen[str]:
    """Start ``cmd`` in ``cwd`` like :func:`run` does, without waiting; output is captured.

    ``new_session``: in a process group of its own, which ``os.killpg`` can signal like a terminal's Ctrl-C.
    """
    return subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=zoo_env(cwd, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


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


#: A one-parameter space: every trial costs the same, so a test can kill a worker mid-trial.
LR_SPACE = """\
name: lr-only
algos: [a2c]
params:
  learning_rate: {type: float, low: 0.0001, high: 0.001, log: true}
"""


def study_args(storage: str, name: str, *, n: int, total: int, seed: int = 1) -> list[str]:
    """Return the command line every worker runs (identical on every host, seed included)."""
    return ["--algo", "a2c", "--env", "CartPole-v1", "-optimize", "-n", str(n), "--n-trials", "100",
            "--max-total-trials", str(total), "--n-evaluations", "2", "--eval-episodes", "2",
            "--sampler", "random", "--pruner", "none", "--search-space", "lr.yml", "--seed", str(seed),
            "--num-threads", "1", "--storage", storage, "--study-name", name, "--no-optim-plots",
            "-params", "n_envs:2"]  # fmt: skip


def mlflow_runs(uri: str, experiment: str = "a2c-CartPole-v1") -> tuple[list, list]:
    """Return (study runs, trial runs) of ``experiment``."""
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    return (
        [r for r in runs if r.data.tags.get("zoo_ext.role") == "study"],
        [r for r in runs if r.data.tags.get("zoo_ext.role") == "trial"],
    )


def finish(procs: list[subprocess.Popen[str]], timeout: float = 600) -> list[str]:
    """Wait for ``procs``; return their stdout+stderr, failing the test on a non-zero exit."""
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        outputs.append(out + err)
        assert proc.returncode == 0, f"worker exited {proc.returncode}:\n{(out + err)[-5000:]}"
    return outputs


def wait_for_running_trial(storage: Any, name: str, pid: int, timeout: float = 120) -> optuna.trial.FrozenTrial:
    """Return the first RUNNING trial of process ``pid`` once it has trained for a moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(storage=storage, study_name=name)
        except KeyError:
            time.sleep(0.5)
            continue
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.user_attrs.get("worker", {}).get("pid") == pid and "seed" in trial.user_attrs:
                time.sleep(1.0)
                return trial
        time.sleep(0.3)
    raise AssertionError(f"process {pid} started no trial")


#: The test role's password: tests check it never leaks into output, attributes or stores.
PG_PASSWORD = "s3cr3t-Pw"
PG_USER = "zoo"


def _pg_bin(name: str) -> str:
    """Return the path of a PostgreSQL server program (Debian keeps them off PATH)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    path = found[-1] if found else shutil.which(name)
    if path is None:
        pytest.fail(f"PostgreSQL's {name} not found: install Debian's postgresql (scripts/setup.sh --test does)")
    return path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1 with a password-protected role ``zoo``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        # initdb refuses to run as root: run the server as Debian's postgres user then.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.admin_password = "admin-" + os.urandom(6).hex()

    def start(self) -> None:
        data, pwfile = self.root / "data", self.root / "pwfile"
        pwfile.write_text(self.admin_password)
        if self.as_user:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        subprocess.run([*self.as_user, _pg_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "scram-sha-256",
                        f"--pwfile={pwfile}", "--no-sync"], check=True, capture_output=True)  # fmt: skip
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        subprocess.run([*self.as_user, _pg_bin("pg_ctl"), "-D", str(data), "-l", str(self.root / "server.log"),
                        "-o", options, "-w", "start"], check=True, capture_output=True)  # fmt: skip
        self.admin(f"CREATE ROLE {PG_USER} LOGIN PASSWORD '{PG_PASSWORD}'")

    def stop(self) -> None:
        subprocess.run([*self.as_user, _pg_bin("pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"],
                       check=False, capture_output=True)  # fmt: skip

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", password=self.admin_password,
                             dbname="postgres", autocommit=True) as conn:  # fmt: skip
            conn.execute(sql)  # type: ignore[arg-type]

    def database(self, name: str, *, password: bool = True) -> str:
        """Create database ``name`` owned by ``zoo``; return its URL (with the password unless told not to)."""
        self.admin(f'CREATE DATABASE "{name}" OWNER {PG_USER}')
        secret = f":{PG_PASSWORD}" if password else ""
        return f"postgresql://{PG_USER}{secret}@127.0.0.1:{self.port}/{name}"


@contextlib.contextmanager
def running_server(
    cmd: Sequence[str], folder: Path, ready: str, *, env: dict[str, str] | None = None, timeout: float = 180
) -> Iterator[str]:
    """Run server ``cmd`` in ``folder`` (output in ``<folder>/server.log``) until URL ``ready`` answers; yield it.

    Stops it (terminate, then kill) on exit; fails the test with the log if it exits or never answers.
    """  # fmt: skip
    log_path = folder / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(list(cmd), cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(ready, timeout=2):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"{cmd[0]} did not start:\n{log_path.read_text()}") from None
                    time.sleep(0.3)
            yield ready
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@contextlib.contextmanager
def mlflow_server(folder: Path, backend_store_uri: str) -> Iterator[str]:
    """Run a throw-away ``mlflow server`` on 127.0.0.1 with ``backend_store_uri``; yield its URL."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(folder / "artifacts")]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with running_server(cmd, folder, f"{url}/health", env=env):
        yield url


def signal_mid_trial(
    cmd: Sequence[str], cwd: Path, storage: Any, name: str, sig: signal.Signals, *, env: dict[str, str]
) -> tuple[subprocess.Popen[str], optuna.trial.FrozenTrial, str]:
    """Start ``cmd``, send ``sig`` once its first trial trains; return the ended process, that trial, its stderr."""
    proc = start(cmd, cwd, env=env)
    trial = wait_for_running_trial(storage, name, proc.pid)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=180)
    return proc, trial, err


#: A test not marked ``slow`` whose call phase (not its fixtures) takes longer than this many seconds fails.
SLOW_SECONDS = 5.0


class SlowCheck:
    """A pytest plugin (registered by ``conftest.py``): an unmarked test over ``seconds`` fails, asking to mark it.

    Measured: the wall time of the test's call phase, as ``--durations`` shows it; set-up and
    tear-down (a PostgreSQL server, an MLflow store) are not. A test that failed already keeps its own
    failure. Enforced where it matters and is fair: in the fast tier (``-m "not slow"``, what
    ``bash scripts/test.sh --fast`` runs), so that tier stays fast. In a full run the slow tests load
    every core and stretch their neighbours' wall time, so there an unmarked test over the limit is
    reported in the summary instead of failed (``enforce`` overrides the choice).
    """

    def __init__(self, seconds: float = SLOW_SECONDS, *, enforce: bool | None = None) -> None:
        self.seconds = seconds
        self.enforce = enforce
        self.reported: list[str] = []

    def _enforced(self, config: pytest.Config) -> bool:
        if self.enforce is not None:
            return self.enforce
        return "not slow" in " ".join(str(config.getoption("markexpr", "") or "").split())

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
        report: pytest.TestReport = yield
        if (
            call.when == "call"
            and report.passed
            and call.duration > self.seconds
            and item.get_closest_marker("slow") is None
        ):
            message = (
                f"{item.nodeid} took {call.duration:.1f} s, over the {self.seconds:g} s allowed to a test not marked "
                "slow: mark it @pytest.mark.slow (or make it faster); `bash scripts/test.sh --fast` skips slow tests"
            )
            if self._enforced(item.config):
                report.outcome = "failed"
                report.longrepr = message
            else:
                self.reported.append(message)
        return report

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for message in self.reported:
            terminalreporter.write_line(f"slow check: {message}")


def _builds_nothing(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("FakeExperiment builds no env, model nor worker: the engine tests train nothing")


@dataclass
class FakeExperiment:
    """A :class:`zoo_ext.experiment.Experiment` that trains nothing, for in-process tests of the engine.

    One field per member of the protocol, each with a default, so a test sets only what it reads
    (``FakeExperiment(n_trials=4, options=ZooOptions(patience=2))``). A member added to the protocol
    is one more field here: ``tests/study/test_engine.py`` fails while one is missing. Building an
    env, a model or a worker fails the test.
    """

    options: ZooOptions = field(default_factory=ZooOptions)
    config: dict[str, Any] = field(default_factory=dict)
    algo: str = "a2c"
    env_id: str = "CartPole-v1"
    seed: int = 1
    n_envs: int = 1
    n_actions: int = 2
    n_timesteps: int = 256
    n_evaluations: int = 2
    n_eval_episodes: int = 2
    n_eval_envs: int = 1
    deterministic_eval: bool = True
    device: Any = "cpu"
    verbose: int = 0
    storage: str | None = None
    study_name: str | None = "s"
    n_trials: int = 3
    max_total_trials: int | None = None
    n_jobs: int = 1
    n_startup_trials: int = 0
    log_folder: str = "logs"
    optimization_log_path: str | None = None
    no_optim_plots: bool = True
    tuned_config_path: Path = Path("hyperparams/a2c.yml")  # rl_zoo3's: read by the warm start only
    worker_main: Callable[[], object] = _builds_nothing

    @property
    def algo_class(self) -> Any:
        return _builds_nothing()

    def base_kwargs(self) -> dict[str, Any]:
        return {}

    def additional_args(self) -> dict[str, Any]:
        return {}

    def make_env(self, n_envs: int, *, eval_env: bool = False, gamma: float | None = None) -> Any:
        return _builds_nothing()

    def extra_callbacks(self) -> list[Any]:
        return []

    def learn_kwargs(self, model: Any) -> dict[str, Any]:
        return {}

    def for_env(self, env_id: str) -> FakeExperiment:
        return dataclasses.replace(self, env_id=env_id)
