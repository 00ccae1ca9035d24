"""The Tracker and the RL objective wrapper, no training: rejected names and calls, start-up errors, final states.

Real MLflow SQLite store (one per module: creating one takes seconds), real in-memory Optuna studies.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from helpers import mlflow_store
from mlflow import MlflowClient
from mlflow.entities import Run

from zoo_ext import record, storage, tracking
from zoo_ext.storage import quiet_optuna

LONG = "p" * 300
HUGE_VALUE = "v" * 7000


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow SQLite store for the module, created before its first test (creating one takes seconds)."""
    return mlflow_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(autouse=True)
def _quiet_optuna() -> Any:
    """Optuna would log every trial's params, a 7000-character value included."""
    with quiet_optuna(optuna.logging.WARNING):
        yield


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "zoo_ext.tracking"]


def _tracker(uri: str, study: optuna.Study, experiment: str) -> tracking.Tracker:
    tracker = tracking.Tracker(tracking_uri=uri, experiment=experiment, study_name=study.study_name,
                               study_uid=experiment)  # fmt: skip
    tracker.start_study(tracking.study_params(study), tracking.environment_tags())
    return tracker


def _trial_runs(uri: str, experiment: str) -> dict[int, Run]:
    client = MlflowClient(uri)
    runs = client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id], "tags.`zoo_ext.role` = 'trial'"
    )
    return {int(run.data.tags["optuna.trial_number"]): run for run in runs}


def _names_artifact(uri: str, tracker: tracking.Tracker, tmp_path: Path) -> dict[str, dict[str, str]]:
    path = MlflowClient(uri).download_artifacts(tracker.parent_run_id, tracking.NAMES_ARTIFACT, str(tmp_path))
    return json.loads(Path(path).read_text())  # type: ignore[no-any-return]


def test_rejected_names_are_sanitised_and_tracking_stays_on(
    uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def objective(trial: optuna.Trial) -> float:
        trial.suggest_int("net_arch[0]", 8, 64)
        trial.suggest_float("lr (log)", 1e-4, 1e-2, log=True)
        trial.suggest_float(LONG, 0.0, 1.0)
        trial.suggest_categorical("choice", [HUGE_VALUE])
        trial.suggest_float("", 0.0, 1.0)
        trial.set_user_attr("rollout (steps)", 128)
        trial.set_user_attr(record.RECORD_ATTR, {"learning_rate": 0.001, "policy_kwargs": {"net_arch[0]": 64}})
        return 1.0

    study = optuna.create_study(direction="maximize")
    tracker = _tracker(uri, study, "names")
    tracked = tracking.TrackedObjective(objective, tracker, env_id="CartPole-v1", config={"policy": "MlpPolicy"})
    with caplog.at_level(logging.WARNING, logger="zoo_ext.tracking"):
        study.optimize(tracked, n_trials=2)
    assert tracker.enabled and not _warnings(caplog)
    runs = _trial_runs(uri, "names")
    assert sorted(runs) == [0, 1]
    long_key = tracking.mlflow_key(LONG)
    for trial in study.trials:
        run = runs[trial.number]
        assert run.info.status == "FINISHED" and run.data.tags["optuna.trial_state"] == "COMPLETE"
        params = run.data.params
        assert params["net_arch_0_"] == str(trial.params["net_arch[0]"])
        assert params["lr _log_"] == str(trial.params["lr (log)"])
        assert params[long_key] == str(trial.params[LONG]) and len(long_key) == 250
        assert params["_"] == str(trial.params[""])
        assert params["choice"] == HUGE_VALUE[:6000]
        assert params["policy_kwargs.net_arch_0_"] == "64" and params["learning_rate"] == "0.001"
        assert run.data.metrics["rollout _steps_"] == 128 and run.data.tags["user_attr.rollout _steps_"] == "128"
        artifacts = [a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id)]
        assert artifacts == ["hyperparams.yml"]
    names = _names_artifact(uri, tracker, tmp_path)
    assert names["params"] == {
        "net_arch[0]": "net_arch_0_",
        "lr (log)": "lr _log_",
        LONG: long_key,
        "": "_",
        "policy_kwargs.net_arch[0]": "policy_kwargs.net_arch_0_",
    }
    assert names["metrics"] == {"rollout (steps)": "rollout _steps_"}
    best_long = tracking.mlflow_key(f"best_params.{LONG}")
    assert names["tags"] == {
        "user_attr.rollout (steps)": "user_attr.rollout _steps_",
        "best_params.net_arch[0]": "best_params.net_arch_0_",
        "best_params.lr (log)": "best_params.lr _log_",
        f"best_params.{LONG}": best_long,
    }
    parent = MlflowClient(uri).get_run(tracker.parent_run_id).data.tags  # the best trial's params, sanitised too
    assert parent["best_params.net_arch_0_"] == str(study.best_trial.params["net_arch[0]"])
    assert parent[best_long] == str(study.best_trial.params[LONG])
    assert parent["best_params."] == str(study.best_trial.params[""])
    run_id = tracker.start_trial(99)  # still on
    assert run_id and MlflowClient(uri).get_run(run_id).info.status == "RUNNING"


def test_a_rejected_call_is_a_warning_and_tracking_stays_on(uri: str, caplog: pytest.LogCaptureFixture) -> None:
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    tracker = _tracker(uri, study, "rejected")
    run_id = tracker.start_trial(0)
    first, second = study.trials
    with caplog.at_level(logging.WARNING, logger="zoo_ext.tracking"):
        tracker.end_trial(run_id, first, first.state, first.values)
        tracker.end_trial(run_id, second, second.state, second.values)  # param x changes value: MLflow refuses
    assert tracker.enabled
    assert [m for m in _warnings(caplog) if m.startswith("MLflow: log_batch failed")]
    assert not [m for m in _warnings(caplog) if "is unavailable" in m]
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.params["x"] == str(first.params["x"]) and run.info.status == "FINISHED"
    assert run.data.metrics["mean_reward"] == pytest.approx(second.value)  # the rest of the batch got in


def test_start_up_errors_leave_the_study_untracked_with_one_warning(uri: str, caplog: pytest.LogCaptureFixture) -> None:
    for where, experiment in (("nosuchscheme://host/x", "ok"), (uri, "e" * 600)):  # no such store; name too long
        caplog.clear()
        study = optuna.create_study()
        with caplog.at_level(logging.WARNING, logger="zoo_ext.tracking"):
            tracker = _tracker(where, study, experiment)
            tracked = tracking.TrackedObjective(lambda t: t.suggest_float("x", 0, 1), tracker, env_id="E", config={})
            study.optimize(tracked, n_trials=2)
        assert not tracker.enabled and [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
        (warning,) = _warnings(caplog)
        assert "without tracking" in warning and "in memory (no --storage): nothing can log it later" in warning


def _raise(exc: BaseException) -> Any:
    def objective(trial: optuna.Trial) -> float:
        raise exc

    return objective


def test_final_states_match_optuna(uri: str) -> None:
    """A trial failing before its record, an interrupted one, one returning NaN: the run's tag is Optuna's state."""
    study = optuna.create_study()
    tracker = _tracker(uri, study, "states")

    def tracked(objective: Any) -> tracking.TrackedObjective:
        return tracking.TrackedObjective(objective, tracker, env_id="E", config={})

    study.optimize(tracked(_raise(ValueError("the space broke"))), n_trials=1, catch=(ValueError,))
    with pytest.raises(KeyboardInterrupt):
        study.optimize(tracked(_raise(KeyboardInterrupt())), n_trials=1)
    study.optimize(tracked(lambda t: math.nan), n_trials=1)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL", "FAIL"]
    runs = _trial_runs(uri, "states")
    assert [runs[n].info.status for n in range(3)] == ["FAILED", "KILLED", "FAILED"]
    assert [runs[n].data.tags["optuna.trial_state"] for n in range(3)] == ["FAIL", "FAIL", "FAIL"]
    failed = runs[0].data.tags
    assert failed["user_attr.fail_reason"] == "ValueError: the space broke"
    assert failed["mlflow.note.content"] == "FAILED: ValueError: the space broke"
    assert runs[1].data.tags["user_attr.fail_reason"] == "interrupted by SIGINT"
    assert "NaN" in runs[2].data.tags["user_attr.fail_reason"]


def test_a_trial_never_run_gets_no_run(uri: str) -> None:
    """A trial failed unrun (another worker took the budget's last place) is not a trial to browse."""
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=1.0))
    reason = f"{storage.NOT_RUN}the study's 1 trials were taken by other workers first"
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"fail_reason": reason}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"fail_reason": "boom"}))
    tracker = _tracker(uri, study, "not-run")
    assert tracker.log_finished(study) == [0, 2]
    assert sorted(_trial_runs(uri, "not-run")) == [0, 2]


def test_an_error_while_tracking_never_changes_the_trial(uri: str, caplog: pytest.LogCaptureFixture) -> None:
    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(record.RECORD_ATTR, {"learning_rate": 0.001})
        return 2.0

    study = optuna.create_study()
    tracker = _tracker(uri, study, "broken-config")
    config: Any = ["not", "a", "mapping"]  # hyperparams.yml cannot be written from it
    with caplog.at_level(logging.WARNING, logger="zoo_ext.tracking"):
        study.optimize(tracking.TrackedObjective(objective, tracker, env_id="E", config=config), n_trials=1)
    assert study.trials[0].state.name == "COMPLETE" and study.trials[0].value == 2.0
    run = _trial_runs(uri, "broken-config")[0]
    assert run.info.status == "FINISHED" and run.data.params["learning_rate"] == "0.001"
    assert any("no MLflow artifacts" in m for m in _warnings(caplog)) and tracker.enabled


def test_the_study_progress_never_fails_a_trial(uri: str, caplog: pytest.LogCaptureFixture) -> None:
    """The parent run deleted mid-study (from the UI): MLflow refuses its progress, the trials and their runs go on."""
    study = optuna.create_study()
    tracker = _tracker(uri, study, "deleted-parent")
    tracked = tracking.TrackedObjective(lambda t: t.suggest_float("x", 0, 1), tracker, env_id="E", config={})
    study.optimize(tracked, n_trials=1)
    client = MlflowClient(uri)
    assert client.get_run(tracker.parent_run_id).data.metrics["n_complete"] == 1
    client.delete_run(tracker.parent_run_id)
    with caplog.at_level(logging.WARNING, logger="zoo_ext.tracking"):
        study.optimize(tracked, n_trials=2)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3 and tracker.enabled
    assert [m for m in _warnings(caplog) if m.startswith("MLflow: log_batch failed")]
    runs = _trial_runs(uri, "deleted-parent")
    assert [runs[n].info.status for n in range(3)] == ["FINISHED"] * 3


def _sync_command(message: str) -> list[str]:
    """Return the ``mlflow-sync`` command quoted in backticks in ``message``, split as a shell would."""
    command = message.split("`")[1]
    assert command.startswith("python -m zoo_ext mlflow-sync "), message
    return shlex.split(command)


def test_sync_hints_are_copyable_and_name_the_real_storage(caplog: pytest.LogCaptureFixture) -> None:
    down = "http://127.0.0.1:9"  # nothing listens there
    cases = {  # --storage value given to the tracker -> the one the printed command must hold
        "my runs/study.log": "my runs/study.log",
        "postgresql://zoo:s3cr3t-Pw@127.0.0.1:9/optuna": "postgresql://zoo:***@127.0.0.1:9/optuna",
    }
    for given, shown in cases.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="zoo_ext.tracking"):
            tracker = tracking.Tracker(tracking_uri=down, experiment="my exp", study_name="my study", study_uid="u",
                                       storage=given)  # fmt: skip
        (warning,) = _warnings(caplog)
        assert not tracker.enabled and "s3cr3t-Pw" not in warning
        expected = ["--storage", shown, "--study-name", "my study", "--mlflow-tracking-uri", down]
        assert _sync_command(warning)[4:] == [*expected, "--mlflow-experiment", "my exp"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zoo_ext.tracking"):
        tracking.Tracker(tracking_uri=down, experiment="e", study_name="s", study_uid="u")  # in memory: no command
    (warning,) = _warnings(caplog)
    assert "nothing can log it later" in warning and "mlflow-sync" not in warning

    # Updates still queued when the study ends: the same command, to log the finished trials.
    tracker = tracking.Tracker(tracking_uri=down, experiment="e", study_name="s", study_uid="u",
                               background=True, storage="my runs/study.log")  # fmt: skip
    tracker.submit(time.sleep, 1.0)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zoo_ext.tracking"):
        assert not tracker.flush(timeout=0.05)
    (warning,) = [m for m in _warnings(caplog) if "not sent" in m]
    assert _sync_command(warning)[4:8] == ["--storage", "my runs/study.log", "--study-name", "s"]
    tracker.flush()


def _runs_of(uri: str, experiment: str, number: int) -> list[Run]:
    client = MlflowClient(uri)
    query = f"tags.`optuna.trial_number` = '{number}'"
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id], query)


def _finished_trial(study: optuna.Study, worker: dict[str, Any]) -> None:
    trial = study.ask()
    trial.set_user_attr("worker", worker)
    study.tell(trial, 1.0)


def test_a_create_mlflow_retried_leaves_one_run(uri: str) -> None:
    study = optuna.create_study(study_name="retried")
    tracker = _tracker(uri, study, "retried")
    create_run = tracker.client.create_run

    def retried(*args: Any, **kwargs: Any) -> Any:  # the server made the run, its answer came too late: sent again
        create_run(*args, **kwargs)
        return create_run(*args, **kwargs)

    tracker.client.create_run = retried  # type: ignore[method-assign]
    run_id = tracker.start_trial(0)
    (run,) = _runs_of(uri, "retried", 0)
    assert run.info.run_id == run_id and run.data.tags["zoo_ext.create_id"]


def test_the_trials_own_run_wins_over_one_synced_from_the_storage(uri: str) -> None:
    study = optuna.create_study(study_name="owned")
    _finished_trial(study, {"host": "another-host", "pid": 1, "started": "1"})
    syncer, owner = _tracker(uri, study, "owned"), _tracker(uri, study, "owned")
    syncer.close_stale_runs(study)  # the owner's tracking thread lags: the trial has no run yet
    (synced,) = _runs_of(uri, "owned", 0)
    assert synced.data.tags["zoo_ext.synced"] == "true"
    own = owner.start_trial(0)  # the owner's queued create comes after: the synced run goes
    assert [run.info.run_id for run in _runs_of(uri, "owned", 0)] == [own]
    # the other order: a synced create that finds the trial's own run removes itself
    assert syncer.start_trial(0, tags={"zoo_ext.synced": "true"}) == ""
    assert [run.info.run_id for run in _runs_of(uri, "owned", 0)] == [own]


def test_a_finished_trial_whose_process_runs_on_this_host_is_left_to_it(uri: str) -> None:
    import subprocess
    import sys

    study = optuna.create_study(study_name="alive")
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        identity = {**storage.worker_identity(), "pid": worker.pid, "started": storage._start_time(worker.pid)}
        _finished_trial(study, identity)
        tracker = _tracker(uri, study, "alive")
        tracker.close_stale_runs(study)
        assert _runs_of(uri, "alive", 0) == []  # its process creates it
    finally:
        worker.kill()
        worker.wait()
    tracker.close_stale_runs(study)
    (run,) = _runs_of(uri, "alive", 0)
    assert run.data.tags["zoo_ext.synced"] == "true" and run.info.status == "FINISHED"
