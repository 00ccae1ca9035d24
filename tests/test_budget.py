"""Budgets and stopping: ``--budget-steps`` (env steps of every trial), ``--target-value``, ``--patience``."""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from helpers import STOCK, load, mlflow_runs, optimize_args, run, start, study_args, wait_for_running_trial
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState, create_trial

from zoo_ext import adapter, options, storage
from zoo_ext.study._loop import _queue_interrupted, over_budget, within_budget
from zoo_ext.study._rules import (
    budget_steps_spent,
    consecutive_failures,
    env_steps_used,
    out_of_patience,
    stop_rule,
    target_reached,
)
from zoo_ext.trial import TrialFailed

#: Test helpers the stock command imports from its working directory (dotted paths).
HELPERS = '''\
import optuna


class PruneEveryThird(optuna.pruners.BasePruner):
    """Prunes trials 1, 4, 7, ... at their first evaluation."""

    def prune(self, study, trial):
        return trial.number % 3 == 1


def fail_every_third(result, metric):
    """The last mean reward; raises after training for trials 2, 5, 8, ... (study seed 3: seed = 3 + number)."""
    if (result.seed - 3) % 3 == 2:
        raise RuntimeError("boom")
    return result.curve[-1]["mean_reward"]


def constant(result, metric):
    """The same value for every trial: no trial ever improves on the first."""
    return 1.0
'''


def _study(direction: str = "maximize") -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction=direction)


def _add(study: optuna.Study, state: TrialState, value: float | None = None, **attrs: object) -> None:
    study.add_trial(create_trial(state=state, value=value, user_attrs=attrs))


def test_budget_steps_count_every_trial_state() -> None:
    study = _study()
    _add(study, TrialState.COMPLETE, 1.0, env_steps=300)
    _add(study, TrialState.PRUNED, env_steps=100)
    _add(study, TrialState.FAIL, env_steps=250, fail_reason="objective failed: boom")
    _add(study, TrialState.FAIL, env_steps=50, fail_reason="worker process 12 on h died while running this trial")
    _add(study, TrialState.WAITING)
    running = study.ask()
    running.set_user_attr("env_steps", 40)
    assert env_steps_used(study) == 740
    assert budget_steps_spent(study, 741) is None and budget_steps_spent(study, 0) is None
    assert budget_steps_spent(study, 740) == "budget-steps: 740 of 740 env steps used"
    opts = options.ZooOptions(budget_steps=700)
    assert stop_rule(study, opts) == "budget-steps: 740 of 700 env steps used"
    assert stop_rule(study, options.ZooOptions()) is None  # no rule by default


def test_target_value_follows_the_direction() -> None:
    up = _study("maximize")
    for value in (-300.0, -190.5, -150.0):
        _add(up, TrialState.COMPLETE, value)
    _add(up, TrialState.PRUNED)
    assert target_reached(up, None) is None and target_reached(up, -100.0) is None
    assert target_reached(up, -200.0) == "target-value: trial 1 reached -190.5 >= -200"
    down = _study("minimize")
    _add(down, TrialState.COMPLETE, 5.0)
    _add(down, TrialState.COMPLETE, 2.0)
    assert target_reached(down, 1.0) is None
    assert target_reached(down, 2.0) == "target-value: trial 1 reached 2 <= 2"
    assert stop_rule(down, options.ZooOptions(target_value=3.0)) == "target-value: trial 1 reached 2 <= 3"


def test_patience_counts_finished_trials_since_the_best() -> None:
    study = _study("maximize")
    _add(study, TrialState.PRUNED)  # before any completed trial: not counted
    _add(study, TrialState.COMPLETE, 1.0)
    _add(study, TrialState.COMPLETE, 5.0)  # trial 2: the best
    _add(study, TrialState.COMPLETE, 5.0)  # a tie does not improve
    _add(study, TrialState.PRUNED)
    assert out_of_patience(study, 3) is None and out_of_patience(study, 0) is None
    _add(study, TrialState.FAIL, fail_reason="interrupted by SIGINT")  # says nothing about its configuration
    assert out_of_patience(study, 3) is None
    _add(study, TrialState.FAIL, fail_reason="diverged: the evaluation return of seed 9 is not finite")
    assert out_of_patience(study, 3) == "patience: 3 trials without improving trial 2"
    _add(study, TrialState.COMPLETE, 6.0)  # trial 7 improves: the count starts again
    assert out_of_patience(study, 1) is None
    _add(study, TrialState.COMPLETE, 0.0)
    assert stop_rule(study, options.ZooOptions(patience=1)) == "patience: 1 trial without improving trial 7"
    down = _study("minimize")
    for value in (3.0, 1.0, 2.0, 4.0):
        _add(down, TrialState.COMPLETE, value)
    assert out_of_patience(down, 2) == "patience: 2 trials without improving trial 1"


def test_a_trial_created_beyond_the_trial_budget_is_failed_unrun() -> None:
    """Two workers finishing together both create a trial: the one numbered beyond the budget never runs."""
    study = _study()
    _add(study, TrialState.COMPLETE, 1.0)
    study.ask()  # trial 1: another worker's, still running
    ran: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        ran.append(trial.number)
        return trial.suggest_float("x", 0, 1)

    study.optimize(within_budget(objective, 2), n_trials=1, catch=(TrialFailed,))
    unrun = study.trials[2]
    assert ran == [] and unrun.state == TrialState.FAIL and unrun.params == {}
    assert storage.was_not_run(unrun)
    assert "the study's 2 trials were taken by other workers first" in unrun.user_attrs["fail_reason"]
    assert consecutive_failures(study, 1) is None  # says nothing about a configuration
    study.optimize(within_budget(objective, 3), n_trials=1, catch=(TrialFailed,))
    assert ran == [3] and study.trials[3].state == TrialState.COMPLETE  # the failed one left its place free
    # A queued trial (a retry, the warm start) will run: it takes a place too.
    study.enqueue_trial({"x": 0.5})
    assert over_budget(study, 5, 4) and not over_budget(study, 5, 5) and not over_budget(study, 4, 4)


def test_stop_options_from_the_command_line_and_yaml() -> None:
    parser = argparse.ArgumentParser()
    options.add_arguments(parser, adapter.store_dict_action())
    args = parser.parse_args(["--budget-steps", "800000", "--target-value", "-200.5", "--patience", "10"])
    opts = options.resolve(args, None, algo="a2c")
    assert (opts.budget_steps, opts.target_value, opts.patience) == (800000, -200.5, 10)
    opts = options.resolve(argparse.Namespace(), {"target_value": -200, "patience": 3}, algo="a2c")
    assert opts.target_value == -200.0 and isinstance(opts.target_value, float) and opts.patience == 3
    assert options.resolve(argparse.Namespace(), None, algo="a2c").target_value is None
    for block, message in [
        ({"target_value": "high"}, "target_value must be a number, got 'high'"),
        ({"target_value": True}, "target_value must be a number, got True"),
        ({"target_value": float("nan")}, "target_value must be a finite number, got nan"),
        ({"budget_steps": -5}, "budget_steps must be a non-negative integer, got -5"),
        ({"patience": 1.5}, "patience must be a non-negative integer, got 1.5"),
    ]:
        with pytest.raises(options.OptionError, match=message):
            options.resolve(argparse.Namespace(), block, algo="a2c")


@pytest.mark.slow
def test_bad_target_value_exits_2(workdir: Path) -> None:
    proc = run([*STOCK, *optimize_args("a2c", "CartPole-v1"), "--target-value", "inf"], workdir, check=False)
    assert proc.returncode == 2
    assert "zoo_ext: error: --target-value must be a finite number, got inf" in proc.stderr
    assert not (workdir / "study.log").exists()


def _steps(study: optuna.Study) -> list[int]:
    return [t.user_attrs["env_steps"] for t in sorted(study.trials, key=lambda t: t.number)]


@pytest.mark.slow
def test_budget_steps_count_pruned_and_failed_trials_and_resume_keeps_counting(space_dir: Path) -> None:
    workdir = space_dir
    (workdir / "budget_helpers.py").write_text(HELPERS)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    # 260 env steps per full trial (rollouts of 5 steps x 2 envs), 128 for a trial pruned at its first evaluation.
    args = [*optimize_args("a2c", "CartPole-v1", n=256, trials=20), "--search-space", "lr.yml",
            "--pruner", "budget_helpers:PruneEveryThird", "--objectives", "budget_helpers:fail_every_third",
            "--mlflow-experiment", "budget-steps", "-params", "n_envs:2"]  # fmt: skip
    proc = run([*STOCK, *args, "--budget-steps", "1000"], workdir)
    study = load(workdir)
    steps = _steps(study)
    states = {t.state for t in study.trials}
    assert {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL} <= states
    assert all(n > 0 for n in steps)  # pruned and failed trials trained too, and count
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    full = [t for t in study.trials if t.state != TrialState.PRUNED]
    assert max(t.user_attrs["env_steps"] for t in pruned) < min(t.user_attrs["env_steps"] for t in full)
    assert sum(steps) >= 1000 > sum(steps[:-1])  # no trial started once the budget was spent
    reason = f"budget-steps: {sum(steps)} of 1000 env steps used"
    assert study.user_attrs["stop_reason"] == reason
    assert f"Total env steps used: {sum(steps)} of 1000 (--budget-steps)" in proc.stdout
    assert f"Study stopped early: {reason}" in proc.stdout
    assert study.user_attrs["zoo_ext_options"]["budget_steps"] == 1000
    (parent,), _ = mlflow_runs(uri, "budget-steps")
    assert parent.data.params["zoo_ext.budget_steps"] == "1000" and parent.info.status == "FINISHED"
    assert parent.data.tags["zoo_ext.stop_reason"].startswith("budget-steps: ")

    again = run([*STOCK, *args, "--budget-steps", "1000"], workdir)  # the same command: nothing left to run
    assert len(load(workdir).trials) == len(steps) and f"Study stopped early: {reason}" in again.stdout

    run([*STOCK, *args, "--budget-steps", "1600"], workdir)  # a larger budget: it counts on from the stored steps
    resumed = load(workdir)
    first, steps = len(steps), _steps(resumed)
    assert len(steps) > first and sum(steps) >= 1600 > sum(steps[:-1])
    assert resumed.user_attrs["stop_reason"] == f"budget-steps: {sum(steps)} of 1600 env steps used"


@pytest.mark.slow
def test_target_value_stops_every_worker(workdir: Path) -> None:
    args = [*optimize_args("a2c", "CartPole-v1", n=256, trials=6), "--pruner", "none", "--no-mlflow",
            "--n-workers", "2", "-params", "n_envs:2", "n_steps:8"]  # fmt: skip
    proc = run([*STOCK, *args, "--target-value", "1"], workdir)  # any CartPole policy scores at least 1
    study = load(workdir)
    # The first trial to complete reaches the target; a trial the other worker was running then finishes.
    trials = sorted(study.trials, key=lambda t: t.datetime_complete)
    assert 1 <= len(trials) <= 2 and {t.state for t in trials} == {TrialState.COMPLETE}
    reason = f"target-value: trial {trials[0].number} reached {trials[0].value:g} >= 1"
    assert study.user_attrs["stop_reason"] == reason
    assert proc.stdout.count(f"Study stopped early: {reason}") == 1  # the launcher's summary
    assert "worker exit codes" not in proc.stderr  # a stop rule is a normal end for the workers too


@pytest.mark.slow
def test_patience_stops_the_study(workdir: Path) -> None:
    (workdir / "budget_helpers.py").write_text(HELPERS)
    args = [*optimize_args("a2c", "CartPole-v1", n=256, trials=6), "--pruner", "none", "--no-mlflow",
            "--objectives", "budget_helpers:constant", "--patience", "2"]  # fmt: skip
    proc = run([*STOCK, *args], workdir)
    study = load(workdir)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    reason = "patience: 2 trials without improving trial 0"
    assert study.user_attrs["stop_reason"] == reason and f"Study stopped early: {reason}" in proc.stdout


@pytest.mark.slow
def test_a_killed_workers_steps_count_on_resume(space_dir: Path) -> None:
    storage = JournalStorage(JournalFileBackend(str(space_dir / "study.log")))
    extra = ["--n-evaluations", "20", "--no-mlflow"]  # an evaluation (and a record of env_steps) every 1000 steps
    worker = start([*STOCK, *study_args("study.log", "k", n=20_000, total=3), *extra, "--budget-steps", "100000"],
                   space_dir)  # fmt: skip
    trial = wait_for_running_trial(storage, "k", worker.pid)
    deadline = time.monotonic() + 120
    while "env_steps" not in optuna.load_study(storage=storage, study_name="k").trials[trial.number].user_attrs:
        assert time.monotonic() < deadline and worker.poll() is None, "the trial recorded no env steps"
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=60)
    killed = optuna.load_study(storage=storage, study_name="k").trials[trial.number]
    assert killed.state == TrialState.RUNNING
    used = killed.user_attrs["env_steps"]
    assert 0 < used < 20_000
    # One more env step of budget: the resume fails the dead worker's trial, counts its steps and runs one trial.
    proc = run([*STOCK, *study_args("study.log", "k", n=512, total=3), *extra, "--budget-steps", str(used + 1)],
               space_dir)  # fmt: skip
    study = optuna.load_study(storage=storage, study_name="k")
    assert study.trials[trial.number].state == TrialState.FAIL
    assert study.trials[trial.number].user_attrs["env_steps"] == used
    (new,) = [t for t in study.trials if t.number != trial.number]
    assert new.state == TrialState.COMPLETE and 512 <= new.user_attrs["env_steps"] < 1024
    reason = f"budget-steps: {used + new.user_attrs['env_steps']} of {used + 1} env steps used"
    assert study.user_attrs["stop_reason"] == reason and f"Study stopped early: {reason}" in proc.stdout


def test_an_interrupted_trial_without_retries_left_is_said_not_dropped(caplog: pytest.LogCaptureFixture) -> None:
    study = optuna.create_study()
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trial(create_trial(state=TrialState.FAIL, params={"x": 0.5}, distributions=distributions))
    history = {"failed_trial": 0, "retry_history": [0]}  # trial 1 is trial 0's retry, interrupted again
    study.add_trial(create_trial(state=TrialState.FAIL, params={"x": 0.5}, distributions=distributions,
                                 system_attrs=history))  # fmt: skip
    with caplog.at_level("WARNING", logger="zoo_ext.study"):
        _queue_interrupted(study, [0, 1], retries=1)
    assert [r.getMessage() for r in caplog.records if r.name == "zoo_ext.study"] == [
        "trial 0 was interrupted: queued again, it runs first when the study resumes",
        "trial 1 was interrupted: not queued again, its parameters ran 2 times already (--trial-retries 1);"
        " the study samples a new trial in its place when it resumes",
    ]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.WAITING]
