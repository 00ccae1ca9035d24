"""MLflow off the critical path: the background tracker logs every finished trial, however the study ends."""

from __future__ import annotations

import logging
import os
import signal
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from helpers import STOCK, load, mlflow_store, optimize_args, run, start
from mlflow import MlflowClient
from optuna.trial import TrialState

from zoo_ext import tracking

STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def _trial_runs(uri: str, experiment: str) -> tuple[list, dict[int, list]]:
    """Return (parent runs, trial number → its runs) of ``experiment``."""
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    by_number: dict[int, list] = {}
    for r in runs:
        if r.data.tags.get("zoo_ext.role") == "trial":
            by_number.setdefault(int(r.data.tags["optuna.trial_number"]), []).append(r)
    return [r for r in runs if r.data.tags.get("zoo_ext.role") == "study"], by_number


def _assert_logged(study: optuna.Study, by_number: dict[int, list], *, zoo: bool = True) -> None:
    """Every finished trial has exactly one closed run holding its state, params and value."""
    finished = [t for t in study.trials if t.state.is_finished()]
    assert sorted(by_number) == [t.number for t in finished]
    for trial in finished:
        (run,) = by_number[trial.number]
        assert run.data.tags["optuna.trial_state"] == trial.state.name
        if trial.state == TrialState.COMPLETE:
            assert run.info.status == "FINISHED"
            assert run.data.metrics["mean_reward" if zoo else "value"] == pytest.approx(trial.value)
        for name, value in trial.params.items():
            assert run.data.params[name] == str(value)
        if zoo and trial.state == TrialState.COMPLETE:
            assert "eval/mean_reward" in run.data.metrics


# --- the background thread, with a plain Optuna objective (no training) ---------------------------------------------


def _tracked(study: optuna.Study) -> tuple[tracking.RunPerTrial, str]:
    """Return a background-tracked objective for ``study`` (new experiment in the session store) and the experiment."""
    experiment = f"bg-{uuid.uuid4().hex[:8]}"
    tracker = tracking.Tracker(tracking_uri=os.environ["MLFLOW_TRACKING_URI"], experiment=experiment,
                               study_name=study.study_name, study_uid=uuid.uuid4().hex,
                               mapping=tracking.TrialMapping(zoo=False, value_names=("value",)),
                               background=True)  # fmt: skip
    tracker.start_study({"study_name": study.study_name}, {})
    return tracking.RunPerTrial(lambda trial: trial.suggest_float("x", 0, 1) ** 2, tracker), experiment


def test_a_failing_update_is_a_warning_and_the_next_trials_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    objective, experiment = _tracked(study)
    tracker = objective.tracker
    assert tracker.background and not tracker.enabled  # nothing has connected in this thread
    study.optimize(objective, n_trials=1)

    def broken() -> None:
        raise RuntimeError("store hiccup")

    tracker.submit(broken)
    study.optimize(objective, n_trials=2)
    with caplog.at_level(logging.WARNING, logger="zoo_ext.tracking"):
        tracker.end_study(study=study)
    assert "a tracking update failed (store hiccup)" in caplog.text
    parents, by_number = _trial_runs(tracker.tracking_uri, experiment)
    _assert_logged(study, by_number, zoo=False)
    assert parents[0].info.status == "FINISHED" and parents[0].data.metrics["n_complete"] == 3


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the intended crash
def test_updates_left_by_a_dead_thread_run_on_flush() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    objective, experiment = _tracked(study)
    tracker = objective.tracker
    tracker.flush()  # connected: the next jobs queue behind a blocker that kills the thread
    go = threading.Event()

    def kill_thread() -> None:
        go.wait(30)
        raise SystemExit  # a BaseException: the worker's loop ends, as after a crash of the thread

    tracker.submit(kill_thread)
    study.optimize(objective, n_trials=3)  # queued behind the blocker
    worker = tracker._queue.worker
    assert worker is not None and worker.queue.unfinished_tasks > 3
    go.set()
    worker.thread.join(30)
    assert not worker.thread.is_alive()
    tracker.end_study(study=study)  # the caller runs what is left
    parents, by_number = _trial_runs(tracker.tracking_uri, experiment)
    _assert_logged(study, by_number, zoo=False)
    assert parents[0].info.status == "FINISHED" and parents[0].data.metrics["best_value"] == pytest.approx(
        study.best_value
    )


# --- the stock command: normal exit, signals, a failing store ------------------------------------------------------


def _args(n: int = 512, trials: int = 3) -> list[str]:
    return [*optimize_args("a2c", "CartPole-v1", n=n, trials=trials), "--sampler", "random", "--pruner", "none",
            "-params", "n_envs:1", "n_steps:32"]  # fmt: skip


@pytest.mark.slow
def test_small_study_sets_up_mlflow_while_trial_0_trains(workdir: Path) -> None:
    uri = f"sqlite:///{workdir / 'new.db'}"  # a new store: created by the tracking thread
    run([*STOCK, *_args()], workdir, env={"MLFLOW_TRACKING_URI": uri})
    study = load(workdir)
    parents, by_number = _trial_runs(uri, "a2c-CartPole-v1")
    _assert_logged(study, by_number)
    (parent,) = parents
    assert parent.info.status == "FINISHED" and parent.data.metrics["n_complete"] == 3
    client = MlflowClient(uri)
    for runs in by_number.values():
        assert "hyperparams.yml" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    # Trial 0 started before the store and the parent run existed: MLflow was not on its way.
    trial_0 = study.trials[0].datetime_start
    assert trial_0 is not None
    assert trial_0.timestamp() * 1000 < parent.info.start_time  # Optuna: naive local time


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_study_leaves_every_finished_trial_logged(workdir: Path, sig: signal.Signals) -> None:
    uri = mlflow_store(workdir)
    proc = start([*STOCK, *_args(n=4096, trials=4)], workdir, env={"MLFLOW_TRACKING_URI": uri})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # wait until trial 0 is done and trial 1 trains
        if (workdir / "study.log").exists():
            running = [t.number for t in load(workdir).get_trials(states=(TrialState.RUNNING,))]
            if running and running[0] >= 1:
                break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("trial 1 never started")
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 128 + sig, err[-3000:]
    study = load(workdir)
    assert study.trials[0].state == TrialState.COMPLETE and study.trials[1].state == TrialState.FAIL
    parents, by_number = _trial_runs(uri, "a2c-CartPole-v1")
    _assert_logged(study, by_number)
    assert by_number[1][0].info.status == "KILLED"
    assert parents[0].info.status == "KILLED"
    assert "not sent" not in err


#: Loaded with --gym-packages: the first call closing a trial's run fails (outage or another error), once.
FLAKY = textwrap.dedent(
    """
    import os

    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    _log_batch = mlflow.MlflowClient.log_batch
    _failed = []


    def log_batch(self, run_id, metrics=(), params=(), tags=(), *args, **kwargs):
        if not _failed and any(tag.key == "optuna.trial_state" and tag.value != "RUNNING" for tag in tags):
            _failed.append(run_id)
            open("failed.txt", "w").write(run_id)
            if os.environ["FLAKY"] == "outage":
                raise MlflowException("database is locked", error_code=TEMPORARILY_UNAVAILABLE)
            raise RuntimeError("disk I/O error")
        return _log_batch(self, run_id, metrics, params, tags, *args, **kwargs)


    mlflow.MlflowClient.log_batch = log_batch
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["outage", "error"])
def test_a_store_failing_once_in_the_thread_loses_no_trial(workdir: Path, failure: str) -> None:
    uri = mlflow_store(workdir)
    (workdir / "flaky_store.py").write_text(FLAKY)
    env = {"MLFLOW_TRACKING_URI": uri, "FLAKY": failure}
    proc = run([*STOCK, *_args(), "--gym-packages", "flaky_store"], workdir, env=env)
    study = load(workdir)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert (workdir / "failed.txt").exists()  # the store did fail once
    if failure == "outage":  # tracking went off: the trials ran on, mlflow-sync logs the rest
        assert proc.stderr.count("is unavailable (database is locked)") == 1 and "mlflow-sync" in proc.stderr
        sync = [sys.executable, "-m", "zoo_ext", "mlflow-sync", "--storage", "study.log", "--study-name", "s",
                "--mlflow-tracking-uri", uri]  # fmt: skip
        run(sync, workdir)
    else:  # another error: that batch is sent again item by item, and every trial is logged live
        assert "is unavailable" not in proc.stderr
    parents, by_number = _trial_runs(uri, "a2c-CartPole-v1")
    _assert_logged(study, by_number)
    assert parents[0].info.status == "FINISHED" and parents[0].data.metrics["n_complete"] == 3
