"""Storages from ``--storage`` values, recovery of dead workers' trials, and password redaction."""

from __future__ import annotations

import functools
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import GrpcStorageProxy, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from zoo_ext import storage
from zoo_ext.tracking import study_uid


def test_redact_hides_passwords_only() -> None:
    text = "python -m rl_zoo3.train --storage postgresql://bob:s3cr3t-Pw@db:5432/optuna -f logs"
    assert storage.redact(text) == "python -m rl_zoo3.train --storage postgresql://bob:***@db:5432/optuna -f logs"
    assert storage.redact("sqlite:///study.db and http://host:5000/x") == "sqlite:///study.db and http://host:5000/x"
    assert (
        storage.redact("postgresql://db/o?user=bob&password=s3cr3t-Pw&x=1")
        == "postgresql://db/o?user=bob&password=***&x=1"
    )


def test_redact_all_walks_nested_values() -> None:
    value = {"a": ["mysql://u:pw@h/db", ("http://u:pw@h",)], "b": 3, "c": None}
    assert storage.redact_all(value) == {"a": ["mysql://u:***@h/db", ("http://u:***@h",)], "b": 3, "c": None}


def test_open_storage_kinds(tmp_path: Path) -> None:
    assert storage.open_storage(None) is None
    assert isinstance(storage.open_storage(str(tmp_path / "sub" / "s.log")), JournalStorage)
    assert (tmp_path / "sub").is_dir()
    url = f"sqlite:///{tmp_path / 's.db'}"
    plain = storage.open_storage(url)
    assert isinstance(plain, RDBStorage) and plain.get_heartbeat_interval() is None
    rdb = storage.open_storage(url, heartbeat_interval=5, grace_period=11, retries=2)
    assert isinstance(rdb, RDBStorage) and rdb.get_heartbeat_interval() == 5 and rdb.grace_period == 11
    retry = rdb.heartbeat_stale_trial_callback  # zoo_ext's retry: Optuna's, without the failed run's user attrs
    assert isinstance(retry, functools.partial) and retry.func is storage.retry_trial
    assert retry.keywords == {"max_retry": 2}
    assert isinstance(storage.open_storage("grpc://127.0.0.1:13001"), GrpcStorageProxy)
    with pytest.raises(ValueError, match="grpc://HOST:PORT"):
        storage.open_storage("grpc://nowhere")
    assert [storage.is_database(s) for s in (url, "x.log", "grpc://h:1", None)] == [True, False, False, False]


def test_study_uid_ignores_credentials() -> None:
    with_password = study_uid("postgresql://zoo:s3cr3t-Pw@db:5432/optuna", "s")
    assert with_password == study_uid("postgresql://zoo@db:5432/optuna", "s")  # password from .pgpass
    assert with_password != study_uid("postgresql://zoo@db:5432/optuna", "t")


def _running_trial(study: optuna.Study, worker: dict) -> optuna.trial.FrozenTrial:
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr(storage.WORKER_ATTR, worker)
    return study.trials[trial.number]


def _gone_worker() -> dict:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return {"host": socket.gethostname(), "pid": int(gone.stdout), "started": "1"}


def test_dead_local_workers_trials_fail_and_are_retried(tmp_path: Path) -> None:
    study = optuna.create_study(storage=storage.open_storage(str(tmp_path / "s.log")), study_name="s")
    dead = _gone_worker()
    dead_trial = _running_trial(study, dead)
    alive = _running_trial(study, storage.worker_identity())  # this process: alive
    remote = _running_trial(study, {**dead, "host": "another-host"})  # cannot be checked from here
    (failed,) = storage.fail_dead_local_trials(study, retries=1)
    assert failed.number == dead_trial.number and failed.state == TrialState.FAIL
    assert f"worker process {dead['pid']}" in failed.user_attrs["fail_reason"]
    states = {t.number: t.state for t in study.trials}
    assert states[alive.number] == states[remote.number] == TrialState.RUNNING
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.params == dead_trial.params
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == dead_trial.number
    assert storage.fail_dead_local_trials(study, retries=1) == []  # once only


def test_failure_kind_is_stored_and_old_reasons_still_read(tmp_path: Path) -> None:
    study = optuna.create_study(storage=storage.open_storage(str(tmp_path / "s.log")), study_name="s")
    _running_trial(study, _gone_worker())
    (failed,) = storage.fail_dead_local_trials(study, retries=0)
    assert failed.user_attrs["fail_kind"] == "dead_worker" and storage.is_external_failure(failed)
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}

    def failed_with(**attrs: str) -> optuna.trial.FrozenTrial:
        return optuna.create_trial(state=TrialState.FAIL, params={"x": 0.5}, distributions=distributions,
                                   user_attrs=attrs)  # fmt: skip

    old = failed_with(fail_reason="interrupted by SIGTERM")  # written before fail_kind existed
    assert storage.is_external_failure(old) and not storage.was_not_run(old)
    assert storage.was_not_run(failed_with(fail_reason="not run: the study's 1 trials were taken by other workers"))
    assert not storage.is_external_failure(failed_with(fail_reason="ValueError: diverged"))
    assert not storage.is_external_failure(failed_with(fail_kind="error", fail_reason="interrupted by myself"))


def test_a_zombie_worker_is_dead(tmp_path: Path) -> None:
    # A worker that ended but whose parent has not read its exit status yet (a launcher busy training) is a zombie:
    # same pid, same start time in /proc. It must count as dead, or its RUNNING trial is waited for forever.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        worker = {"host": socket.gethostname(), "pid": child.pid, "started": storage._start_time(child.pid)}
        assert worker["started"] is not None
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not end"
            time.sleep(0.05)
        assert storage._is_dead_local(worker)
        assert not storage.is_live_local(worker)
        study = optuna.create_study(storage=storage.open_storage(str(tmp_path / "s.log")), study_name="s")
        trial = _running_trial(study, worker)
        (failed,) = storage.fail_dead_local_trials(study, retries=1)
        assert failed.number == trial.number and failed.state == TrialState.FAIL
    finally:
        child.wait()


def test_retry_keeps_the_warm_start_mark_but_not_the_failed_runs_attributes() -> None:
    study = optuna.create_study()
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    attrs = {"warm_start": True, "fail_reason": "interrupted by SIGTERM", "seed": 3, "hyperparams": {"x": 0.5}}
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"x": 0.5}, distributions=distributions,
                                        user_attrs=attrs))  # fmt: skip
    assert storage.retry_trial(study, study.trials[0], max_retry=1)
    retry = study.trials[1]
    assert retry.state == TrialState.WAITING and retry.params == {"x": 0.5}
    assert retry.user_attrs == {"warm_start": True}  # the warm start is retried as the warm start
    assert retry.system_attrs["failed_trial"] == 0 and retry.system_attrs["retry_history"] == [0]
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"x": 0.5}, distributions=distributions,
                                        system_attrs=retry.system_attrs))  # fmt: skip
    assert not storage.retry_trial(study, study.trials[2], max_retry=1)  # --trial-retries 1: once only


def test_a_failed_trials_export_hint_is_a_copyable_command_naming_the_storage(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="my study")
    study.add_trial(optuna.create_trial(state=TrialState.FAIL))
    url = "postgresql://zoo:s3cret@db.example/optuna"
    with pytest.raises(storage.StudyError) as error:
        storage.finished_trial(study, 0, storage=url)
    command = str(error.value).split("`")[1]
    assert shlex.split(command) == ["python", "-m", "zoo_ext", "export", "--storage",
                                    "postgresql://zoo:***@db.example/optuna", "--study-name", "my study", "--trial",
                                    "0", "-o", "trial_0.yml", "--force"]  # fmt: skip
    assert "s3cret" not in str(error.value)
