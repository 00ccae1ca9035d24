"""Multi-worker studies on a real PostgreSQL server: shared budget, crash recovery, gRPC proxy, no leaked secret."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import (
    PG_PASSWORD,
    ROOT,
    STOCK,
    Postgres,
    finish,
    free_port,
    mlflow_runs,
    mlflow_server,
    mlflow_store,
    run,
    signal_mid_trial,
    start,
    study_args,
    wait_for_running_trial,
)
from mlflow import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from zoo_ext import storage as storage_module

pytestmark = pytest.mark.slow


def test_three_workers_share_one_study_one_mlflow_server(postgres: Postgres, space_dir: Path) -> None:
    storage = postgres.database("three")
    backend = postgres.database("mlflow")
    with mlflow_server(space_dir, backend) as uri:
        launcher = [str(ROOT / "scripts" / "launch_workers.sh"), "3", *study_args(storage, "multi", n=512, total=9)]
        proc = run(["bash", *launcher], space_dir, env={"MLFLOW_TRACKING_URI": uri, "PYTHON": sys.executable})
        assert proc.stdout.startswith("started 3 workers")
        study = optuna.load_study(storage=storage, study_name="multi")
        # Exactly the budget trained; a trial two workers created at once beyond it is failed unrun.
        trained = study.get_trials(states=(TrialState.COMPLETE,))
        assert len(trained) == 9
        assert all(storage_module.was_not_run(t) for t in study.trials if t.state != TrialState.COMPLETE)
        assert len({t.params["learning_rate"] for t in trained}) == 9  # each joining worker its own seed
        assert len({t.user_attrs["worker"]["pid"] for t in trained}) >= 2
        parents, children = mlflow_runs(uri)
        assert len(parents) == 1
        assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == sorted(t.number for t in trained)
        assert {r.info.status for r in children} == {"FINISHED"}
        assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    logs = [(space_dir / f"worker-{i}.log").read_text() for i in range(3)]
    finished = f"Number of finished trials:  {len(study.trials)}"
    assert all(finished in log for log in logs)  # every worker waited for the others


def test_killed_worker_trial_fails_is_retried_and_run_closed(postgres: Postgres, space_dir: Path) -> None:
    storage = postgres.database("kill")
    uri = mlflow_store(space_dir)
    args = [*study_args(storage, "kill", n=20_000, total=4), "--heartbeat-interval", "1", "--grace-period", "3"]
    env = {"MLFLOW_TRACKING_URI": uri}
    victim = start([*STOCK, *args], space_dir, env=env)
    trial = wait_for_running_trial(storage, "kill", victim.pid)
    survivor = start([*STOCK, *args], space_dir, env=env)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.time()
    victim.wait()
    deadline = time.monotonic() + 60
    while optuna.load_study(storage=storage, study_name="kill").trials[trial.number].state == TrialState.RUNNING:
        assert time.monotonic() < deadline, "the killed worker's trial is still RUNNING"
        time.sleep(0.5)
    failed = optuna.load_study(storage=storage, study_name="kill").trials[trial.number]
    assert failed.state == TrialState.FAIL
    assert failed.datetime_complete.timestamp() - killed_at < 3 + 2 * 1 + 10  # grace + intervals + start-up
    finish([survivor])
    study = optuna.load_study(storage=storage, study_name="kill")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4  # the budget is still reached
    (retry,) = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == trial.number]
    assert retry.params == failed.params and retry.state == TrialState.COMPLETE
    _, children = mlflow_runs(uri)
    status = {int(r.data.tags["optuna.trial_number"]): r.info.status for r in children}
    assert status[trial.number] == "FAILED"
    assert "RUNNING" not in status.values()


def test_interrupted_worker_resumes_without_duplicates(postgres: Postgres, space_dir: Path) -> None:
    storage = postgres.database("sigint")
    uri = mlflow_store(space_dir)
    args = study_args(storage, "sigint", n=40_000, total=3)
    env = {"MLFLOW_TRACKING_URI": uri}
    _, trial, err = signal_mid_trial([*STOCK, *args], space_dir, storage, "sigint", signal.SIGINT, env=env)
    interrupted = optuna.load_study(storage=storage, study_name="sigint").trials[trial.number]
    assert interrupted.state == TrialState.FAIL
    assert interrupted.user_attrs["fail_reason"] == "interrupted by SIGINT"
    assert "Interrupted by SIGINT: study 'sigint' is saved in postgresql://zoo:***@" in err
    run([*STOCK, *study_args(storage, "sigint", n=512, total=3)], space_dir, env=env)
    study = optuna.load_study(storage=storage, study_name="sigint")
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) == numbers[-1] + 1
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    parents, children = mlflow_runs(uri)
    status = {int(r.data.tags["optuna.trial_number"]): r.info.status for r in children}
    assert status[trial.number] == "KILLED"
    assert "RUNNING" not in status.values() and len(status) == len(numbers)
    assert [p.info.status for p in parents] == ["FINISHED"]


def test_grpc_proxy_serves_two_workers(postgres: Postgres, space_dir: Path) -> None:
    database = postgres.database("grpc", password=False)  # the proxy's password comes from PGPASSWORD
    port = free_port()
    proxy = start([sys.executable, "-m", "zoo_ext", "storage-proxy", "--storage", database, "--host", "127.0.0.1",
                   "--port", str(port)], space_dir, env={"PGPASSWORD": PG_PASSWORD})  # fmt: skip
    try:
        storage = f"grpc://127.0.0.1:{port}"
        env = {"MLFLOW_TRACKING_URI": mlflow_store(space_dir)}
        procs = [start([*STOCK, *study_args(storage, "proxied", n=512, total=4)], space_dir, env=env) for _ in range(2)]
        finish(procs)
    finally:
        proxy.send_signal(signal.SIGINT)
        proxy_out, _ = proxy.communicate(timeout=30)
    study = optuna.load_study(storage=database.replace("zoo@", f"zoo:{PG_PASSWORD}@"), study_name="proxied")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert len({t.user_attrs["worker"]["pid"] for t in study.trials}) == 2
    assert f"on grpc://127.0.0.1:{port}" in proxy_out


def test_password_appears_nowhere(postgres: Postgres, space_dir: Path) -> None:
    storage = postgres.database("secret")
    uri = mlflow_store(space_dir)
    env = {"MLFLOW_TRACKING_URI": uri}
    outputs = [run([*STOCK, *study_args(storage, "secret", n=512, total=2), "--n-workers", "2"], space_dir, env=env)]
    # Re-train trial 0 (writes args.yml, config.yml and command.txt) with the password coming from a .pgpass file.
    pgpass = space_dir / "pgpass"
    pgpass.write_text(f"127.0.0.1:{postgres.port}:secret:zoo:{PG_PASSWORD}\n")
    pgpass.chmod(0o600)
    no_password = storage.replace(f":{PG_PASSWORD}@", "@")
    outputs.append(run([*STOCK, "--algo", "a2c", "--env", "CartPole-v1", "-n", "256", "--storage", no_password,
                        "--study-name", "secret", "--trial-id", "0", "--eval-freq", "-1"], space_dir,
                       env={**env, "PGPASSFILE": str(pgpass)}))  # fmt: skip
    retrain = [*STOCK, "--algo", "a2c", "--env", "CartPole-v1", "-n", "256", "--storage", storage,
               "--study-name", "secret", "--trial-id", "1", "--eval-freq", "-1"]  # fmt: skip
    outputs.append(run(retrain, space_dir, env=env))
    pgpass.unlink()
    for proc in outputs:
        assert PG_PASSWORD not in proc.stdout + proc.stderr
    assert "zoo:***@127.0.0.1" in outputs[0].stdout  # the launcher names the storage, redacted
    study = optuna.load_study(storage=storage, study_name="secret")
    attrs = [study.user_attrs, *[t.user_attrs | t.system_attrs | t.params for t in study.trials]]
    assert PG_PASSWORD not in json.dumps(attrs, default=str)
    assert "zoo:***@" in study.user_attrs["command"]
    client = MlflowClient(uri)
    for found in client.search_runs([client.get_experiment_by_name("a2c-CartPole-v1").experiment_id]):
        assert PG_PASSWORD not in json.dumps([found.data.params, found.data.tags])
        artifacts = Path(client.download_artifacts(found.info.run_id, "", dst_path=str(space_dir / "dl")))
        for path in artifacts.rglob("*"):
            if path.is_file():
                assert PG_PASSWORD.encode() not in path.read_bytes(), path
    leaks = [p for p in (space_dir / "logs").rglob("*") if p.is_file() and PG_PASSWORD.encode() in p.read_bytes()]
    assert not leaks
    assert list((space_dir / "logs").rglob("command.txt")) and list((space_dir / "logs").rglob("args.yml"))
    assert PG_PASSWORD.encode() not in (space_dir / "mlflow.db").read_bytes()
