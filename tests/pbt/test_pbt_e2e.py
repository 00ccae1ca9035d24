"""Population-based training end to end: real A2C members on CartPole-v1, worker processes, a killed worker, resume."""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import STOCK, finish, mlflow_runs, mlflow_store, run, start
from mlflow import MlflowClient
from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from zoo_ext.attrs import TrialAttr
from zoo_ext.pbt import segments
from zoo_ext.pbt._population import segment_values

pytestmark = pytest.mark.slow


def pbt_args(storage: str, name: str, *, interval: int, population: int = 3, generations: int = 3) -> list[str]:
    """Return a population study's command line: A2C on CartPole-v1, 2 envs, ``generations`` segments per member."""
    return ["--algo", "a2c", "--env", "CartPole-v1", "-optimize", "--scheduler", "pbt",
            "--population", str(population), "--perturb-interval", str(interval), "-n", str(interval * generations),
            "--eval-episodes", "2", "--sampler", "random", "--seed", "1", "--num-threads", "1",
            "--storage", storage, "--study-name", name, "--no-optim-plots", "-params", "n_envs:2"]  # fmt: skip


def assert_population_done(study: optuna.Study, *, population: int, generations: int, interval: int) -> None:
    """Every member trained every segment once, each continuing from a saved checkpoint with its own values."""
    done = segments(study, (TrialState.COMPLETE,))
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    places = sorted((t.user_attrs[TrialAttr.PBT_MEMBER], t.user_attrs[TrialAttr.PBT_GENERATION]) for t in done)
    assert places == [(m, g) for m in range(population) for g in range(generations)]
    trials = study.get_trials(deepcopy=False)
    for trial in done:
        attrs = trial.user_attrs
        assert attrs[TrialAttr.PBT_CHECKPOINT]["model"]
        assert 0 < attrs[TrialAttr.ENV_STEPS] <= interval + 2 * 5  # at most one A2C rollout (5 steps x 2 envs) over
        live = attrs[TrialAttr.PBT_LIVE]
        assert set(live) == {"learning_rate", "ent_coef", "vf_coef", "gae_lambda", "max_grad_norm"}
        if attrs[TrialAttr.PBT_GENERATION] == 0:
            assert (
                TrialAttr.PBT_PARENT_TRIAL not in attrs
                and attrs[TrialAttr.PBT_MODEL_STEPS] == attrs[TrialAttr.ENV_STEPS]
            )
            continue
        parent = trials[attrs[TrialAttr.PBT_PARENT_TRIAL]]
        assert parent.state == TrialState.COMPLETE and parent.user_attrs[TrialAttr.PBT_CHECKPOINT]
        # the model trained with the segment's values, not with those its checkpoint was saved with
        values = segment_values(trial.params)
        assert values.keys() == live.keys()
        assert all(math.isclose(values[k], live[k], rel_tol=1e-6) for k in values), (values, live)
        assert (
            attrs[TrialAttr.PBT_MODEL_STEPS]
            == parent.user_attrs[TrialAttr.PBT_MODEL_STEPS] + attrs[TrialAttr.ENV_STEPS]
        )
        if attrs[TrialAttr.PBT_EXPLOITED]:
            assert parent.user_attrs[TrialAttr.PBT_MEMBER] != attrs[TrialAttr.PBT_MEMBER]
            assert values != {k: float(parent.user_attrs[TrialAttr.RECORD][k]) for k in values}  # explored
        else:
            assert parent.user_attrs[TrialAttr.PBT_MEMBER] == attrs[TrialAttr.PBT_MEMBER]
    assert any(t.user_attrs[TrialAttr.PBT_EXPLOITED] for t in done), "no member ever copied another"


def test_two_workers_train_a_population_and_its_best_schedule_retrains_with_stock_rl_zoo3(workdir: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": mlflow_store(workdir)}
    url = f"sqlite:///{workdir / 'pbt.db'}"
    reevaluate = ["--reevaluate-top", "1", "--eval-seeds", "2"]
    # 4 members, the bottom half copies the top half: with 12 segments a run without any exploit is very unlikely.
    flags = [*pbt_args(url, "p", interval=1024, population=4), "--pbt-quantile", "0.5", "--n-workers", "2"]
    proc = run([*STOCK, *flags, *reevaluate], workdir, env=env)
    out = proc.stdout + proc.stderr
    study = optuna.load_study(study_name="p", storage=url)
    assert_population_done(study, population=4, generations=3, interval=1024)
    done = segments(study, (TrialState.COMPLETE,))
    # Two workers asking at once for the last WAITING segment: the loser's fresh trial is failed unrun.
    assert all(t.user_attrs[TrialAttr.FAIL_KIND] == "not_run" for t in study.trials if t not in done)
    assert len({t.user_attrs[TrialAttr.WORKER]["pid"] for t in done}) == 2, out[-2000:]
    assert f"Total env steps used: {sum(t.user_attrs[TrialAttr.ENV_STEPS] for t in done)}" in out
    artifacts = list((workdir / "logs" / "artifacts").iterdir())
    assert len(artifacts) == len(done)  # one model per segment (A2C: no VecNormalize, no replay buffer)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (parent,) = mlflow_runs(env["MLFLOW_TRACKING_URI"])[0]
    assert "population.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    members = client.search_runs([parent.info.experiment_id], "tags.`zoo_ext.role` = 'pbt_member'")
    assert sorted(r.info.run_name for r in members) == ["member-0", "member-1", "member-2", "member-3"]
    for member in members:
        assert member.data.tags["mlflow.parentRunId"] == parent.info.run_id and member.info.status == "FINISHED"
        history = client.get_metric_history(member.info.run_id, "mean_reward")
        number = int(member.data.tags["pbt_member"])
        own = [t for t in study.trials if t.user_attrs[TrialAttr.PBT_MEMBER] == number]
        own.sort(key=lambda t: t.user_attrs[TrialAttr.PBT_GENERATION])
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([t.value for t in own])

    best = max((t for t in done if t.user_attrs[TrialAttr.PBT_GENERATION] == 2), key=lambda t: t.value)
    tests = study.user_attrs["test_scores"]  # the best member's schedule re-trained from scratch on 2 fresh seeds
    assert set(tests) == {str(best.number), "baseline"} and len(tests[str(best.number)]["scores"]["mean_reward"]) == 2

    exported = workdir / "best.yml"
    run([sys.executable, "-m", "zoo_ext", "export", "--storage", url, "--study-name", "p", "-o", str(exported)],
        workdir)  # fmt: skip
    entry = yaml.safe_load(exported.read_text())["CartPole-v1"]
    assert entry["n_timesteps"] == best.user_attrs[TrialAttr.PBT_MODEL_STEPS]
    chain = [best]
    while TrialAttr.PBT_PARENT_TRIAL in chain[-1].user_attrs:
        chain.append(study.trials[chain[-1].user_attrs[TrialAttr.PBT_PARENT_TRIAL]])
    changed = {
        k for k in best.user_attrs[TrialAttr.PBT_LIVE] if len({t.user_attrs[TrialAttr.RECORD][k] for t in chain}) > 1
    }
    if changed:
        (callback,) = entry["callback"]
        schedule = callback["zoo_ext.schedules.ScheduleCallback"]["schedule"]
        assert set(schedule) == changed and all(points[0][0] == 0 for points in schedule.values())
        first = chain[-1].user_attrs[TrialAttr.RECORD]
        assert all(entry[k] == first[k] for k in changed)  # the plain value is where the schedule starts
    retrain = run([*STOCK, "--algo", "a2c", "--env", "CartPole-v1", "-conf", str(exported), "-n", "256",
                   "--num-threads", "1", "-f", "retrain"], workdir)  # fmt: skip
    assert "Saving to" in retrain.stdout and list((workdir / "retrain" / "a2c").glob("CartPole-v1_1/CartPole-v1.zip"))


def _running_segment(storage: JournalStorage, name: str, launcher: int) -> FrozenTrial:
    """Wait until a worker other than the launcher trains a segment that continues from a checkpoint."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(storage=storage, study_name=name)
        except KeyError:
            time.sleep(0.3)
            continue
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            pid = trial.user_attrs.get(TrialAttr.WORKER, {}).get("pid")
            if pid not in (None, launcher) and TrialAttr.PBT_PARENT_TRIAL in trial.user_attrs:
                time.sleep(1.0)
                return trial
        time.sleep(0.3)
    raise AssertionError("no forked worker started a continuing segment")


def test_a_killed_worker_s_segment_is_retried_from_its_start_checkpoint_and_a_stopped_population_resumes(
    workdir: Path,
) -> None:
    storage = JournalStorage(JournalFileBackend(str(workdir / "pbt.log")))
    # segments of about 5 s: long enough that the kill lands mid-segment on an idle machine too
    args = [*STOCK, *pbt_args("pbt.log", "k", interval=16384), "--no-mlflow", "--trial-retries", "3"]
    launcher = start([*args, "--n-workers", "2"], workdir)
    killed = _running_segment(storage, "k", launcher.pid)
    os.kill(killed.user_attrs[TrialAttr.WORKER]["pid"], signal.SIGKILL)
    time.sleep(2)
    launcher.send_signal(signal.SIGTERM)  # stop the population midway: the same command resumes it
    _, err = launcher.communicate(timeout=300)
    assert launcher.returncode == 143, err[-3000:]
    assert "run the same command to resume it" in err
    study = optuna.load_study(storage=storage, study_name="k")
    assert study.trials[killed.number].user_attrs[TrialAttr.FAIL_KIND] == "dead_worker"
    assert len(segments(study, (TrialState.COMPLETE,))) < 9

    finish([start(args, workdir)])
    study = optuna.load_study(storage=storage, study_name="k")
    assert_population_done(study, population=3, generations=3, interval=16384)
    # Its retry may itself be interrupted by the SIGTERM and queued again: one of them completes, from the same start.
    retries = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    (retry,) = [t for t in retries if t.state == TrialState.COMPLETE]
    assert retry.params == killed.params
    assert all(t.user_attrs[TrialAttr.FAIL_KIND] == "interrupted" for t in retries if t is not retry)
    for key in (TrialAttr.PBT_MEMBER, TrialAttr.PBT_GENERATION, TrialAttr.PBT_PARENT_TRIAL, TrialAttr.PBT_EXPLOITED):
        assert retry.user_attrs[key] == killed.user_attrs[key], key


def test_budget_steps_count_the_segments_env_steps(workdir: Path) -> None:
    url = f"sqlite:///{workdir / 'pbt.db'}"
    proc = run([*STOCK, *pbt_args(url, "b", interval=1024), "--no-mlflow", "--budget-steps", "2500"], workdir)
    study = optuna.load_study(study_name="b", storage=url)
    done = segments(study, (TrialState.COMPLETE,))
    assert 3 <= len(done) < 9, [t.number for t in done]  # stopped once the segments trained 2,500 env steps
    assert sum(t.user_attrs[TrialAttr.ENV_STEPS] for t in done) >= 2500
    assert study.user_attrs["stop_reason"].startswith("budget-steps: "), proc.stderr[-2000:]
