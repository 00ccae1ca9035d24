"""``python -m zoo_ext mlflow-mirror``: workers that track nothing, one process (or two) mirroring their study."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import STOCK, load, mlflow_store, optimize_args, run, start, zoo_env
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def _mirror(workdir: Path, uri: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "zoo_ext", "mlflow-mirror", "--storage", "study.log", "--study-name", "s",
           "--mlflow-tracking-uri", uri, "--interval", "0.5", "--idle", "4"]  # fmt: skip
    return subprocess.Popen(cmd, cwd=workdir, env=zoo_env(workdir, None), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait_for_study(workdir: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            load(workdir)
            return
        except Exception:  # noqa: BLE001 - not created yet
            time.sleep(0.5)
    pytest.fail("the study was never created")


def test_two_mirrors_follow_a_study_whose_workers_track_nothing(workdir: Path) -> None:
    uri = mlflow_store(workdir)
    args = [*optimize_args("a2c", "CartPole-v1", n=4096, trials=4), "--no-mlflow", "-params", "n_envs:2"]
    study_proc = start([*STOCK, *args], workdir)
    _wait_for_study(workdir)
    mirrors = [_mirror(workdir, uri), _mirror(workdir, uri)]  # one too many: still one run per trial
    client = MlflowClient(uri)
    seen_running = False
    while study_proc.poll() is None:
        experiment = client.get_experiment_by_name("a2c-CartPole-v1")
        if experiment is not None:
            runs = client.search_runs([experiment.experiment_id], "tags.`zoo_ext.role` = 'trial'")
            seen_running |= any(r.info.status == "RUNNING" for r in runs)
        time.sleep(0.3)
    assert study_proc.returncode == 0, study_proc.stderr.read() if study_proc.stderr else ""
    outputs = [proc.communicate(timeout=120) for proc in mirrors]
    assert [proc.returncode for proc in mirrors] == [0, 0], outputs
    assert "Mirroring study 's' (study.log) into experiment 'a2c-CartPole-v1'" in outputs[0][0]
    assert seen_running  # a trial's run exists while it trains
    study = load(workdir)
    experiment = client.get_experiment_by_name("a2c-CartPole-v1")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("zoo_ext.role") == "study"]
    trials = [r for r in runs if r.data.tags.get("zoo_ext.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in trials) == [t.number for t in study.trials]
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in trials}
    for trial in study.trials:
        mirrored = by_number[trial.number]
        assert mirrored.info.status == STATUS[trial.state.name]
        assert mirrored.data.tags["optuna.trial_state"] == trial.state.name
        assert "eval/mean_reward" in mirrored.data.metrics and "hyperparams.yml" in {
            a.path for a in client.list_artifacts(mirrored.info.run_id)
        }
        assert trial.datetime_complete is not None
        latency = mirrored.info.end_time / 1000 - trial.datetime_complete.timestamp()
        assert latency < 5, f"trial {trial.number}'s run closed {latency:.1f} s after it ended"
    assert parents[0].data.metrics["best_value"] == pytest.approx(study.best_value)
    assert parents[0].data.metrics["n_complete"] == sum(t.state.name == "COMPLETE" for t in study.trials)


def test_a_mirror_refuses_a_study_zoo_ext_never_made(workdir: Path) -> None:
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(workdir / "study.log")))
    optuna.create_study(storage=storage, study_name="s")
    cmd = [sys.executable, "-m", "zoo_ext", "mlflow-mirror", "--storage", "study.log", "--study-name", "s"]
    proc = run(cmd, workdir, check=False)
    assert proc.returncode == 2 and "zoo_ext: error: study 's' was not created by zoo_ext" in proc.stderr


def test_the_rl_command_tracks_through_its_own_mirror_and_imports_no_mlflow(workdir: Path) -> None:
    uri = mlflow_store(workdir)
    args = [*optimize_args("a2c", "CartPole-v1", n=2048, trials=3), "--mlflow-mirror", "--mlflow-tracking-uri", uri,
            "--reevaluate-top", "1", "--eval-seeds", "2"]  # fmt: skip
    proc = run([*STOCK, *args, "-params", "n_envs:2"], workdir, env={"PYTHONPROFILEIMPORTTIME": "1"})
    imported = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert len(imported) > 500  # the training process's own imports (the mirror's go to its log file)
    assert not [line for line in imported if "mlflow" in line]
    (log,) = (workdir / "logs" / "a2c").glob("*-mlflow-mirror.log")
    assert "Stopped by SIGTERM: a last pass\nThe runs are up to date with the storage\n" in log.read_text()
    study = load(workdir)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("a2c-CartPole-v1").experiment_id])
    trials = {int(r.data.tags["optuna.trial_number"]): r for r in runs if r.data.tags["zoo_ext.role"] == "trial"}
    assert sorted(trials) == [t.number for t in study.trials]
    for trial in study.trials:
        assert trials[trial.number].info.status == STATUS[trial.state.name]
        assert trials[trial.number].data.tags["zoo_ext.synced"] == "true"  # made by the mirror, not in-process
    (parent,) = [r for r in runs if r.data.tags["zoo_ext.role"] == "study"]
    assert parent.info.status == "FINISHED" and parent.data.metrics["n_complete"] == len(study.trials)
    assert "trials.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}  # the report, at the end
    # the first trial is a new best: its model, left by the worker, is on its run, and no model file is left over
    first = study.trials[0]
    assert first.state.name == "COMPLETE"
    assert f"trial_{first.number}.zip" in {a.path for a in client.list_artifacts(trials[first.number].info.run_id)}
    assert list((workdir / "logs" / "a2c").glob("*-models/*.zip")) == []
    (tested,) = [int(key) for key in study.user_attrs["test_scores"] if key.isdigit()]
    assert "test_score/mean_reward" in client.get_run(trials[tested].info.run_id).data.metrics
