"""The engine in one process: the budget loop on a real Optuna study, a fake experiment, a stub objective.

No subprocess, no training: :class:`helpers.FakeExperiment` stands for the experiment and
:class:`Stub` for the objective (a plain function of the trial), so every test takes well under a
second. What the end-to-end tests of ``tests/test_study.py`` and ``tests/test_budget.py`` check
through the stock command, checked here on the engine itself: the trial budget, failing trials,
the stop rules, a resumed study, an interrupted one and the summary's counts.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from helpers import FakeExperiment
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from zoo_ext.experiment import Experiment
from zoo_ext.options import ZooOptions
from zoo_ext.study import _launch
from zoo_ext.study._loop import STOP_ATTR, Outcome, n_counted, run_trials
from zoo_ext.study._summary import summarize
from zoo_ext.trial import TrialFailed

#: What :class:`Stub` makes of a trial instead of a value.
FAIL, PRUNE, INTERRUPT = "fail", "prune", "interrupt"


class Stub:
    """An objective that trains nothing: ``plan(number)`` says what trial ``number`` does, a value by default.

    Like :class:`zoo_ext.trial.Objective`: it samples ``x``, records ``env_steps`` (what it "trained"),
    fails a trial with a ``fail_reason`` and :class:`TrialFailed`, prunes with ``TrialPruned``, and on
    an interruption records its ``fail_reason``, notes the trial in ``interrupted`` and raises.
    """

    def __init__(self, plan: Callable[[int], float | str] | None = None, *, env_steps: int = 0) -> None:
        self.plan = plan or float
        self.env_steps = env_steps
        self.ran: list[int] = []
        self.interrupted: list[int] = []

    def __call__(self, trial: optuna.Trial) -> float:
        self.ran.append(trial.number)
        trial.suggest_float("x", 0.0, 1.0)
        if self.env_steps:
            trial.set_user_attr("env_steps", self.env_steps)
        outcome = self.plan(trial.number)
        if outcome == FAIL:
            trial.set_user_attr("fail_reason", "objective failed: RuntimeError: boom")
            raise TrialFailed("boom")
        if outcome == PRUNE:
            raise optuna.TrialPruned()
        if outcome == INTERRUPT:
            trial.set_user_attr("fail_reason", "interrupted by SIGINT")
            self.interrupted.append(trial.number)
            raise KeyboardInterrupt
        assert isinstance(outcome, float)
        return outcome


def _journal(path: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(path)))


@pytest.fixture(autouse=True)
def _quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial at INFO; its level is the process's, so it is set back after each test."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


def _study(storage: Any = None) -> optuna.Study:
    """Create (or load) study ``s``, as a process of the study would: a new handle on the storage each time."""
    return optuna.create_study(
        storage=storage, study_name="s", direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )  # fmt: skip


def _run(study: optuna.Study, stub: Stub, exp: FakeExperiment) -> Outcome:
    return run_trials(study, stub, stub, exp)  # type: ignore[arg-type]


def _states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def _opts(**changes: Any) -> ZooOptions:
    return dataclasses.replace(ZooOptions(), **changes)


def _members(protocol: type) -> set[str]:
    """Return the names of a Protocol's members: its attributes, properties and methods."""
    names = set(getattr(protocol, "__annotations__", {}))
    names |= {name for name in vars(protocol) if not name.startswith("_")}
    return names


def test_the_fake_experiment_has_every_member_of_the_protocol() -> None:
    """A member added to :class:`Experiment` must be added to :class:`helpers.FakeExperiment` too."""
    fake = FakeExperiment()
    fields = {f.name for f in dataclasses.fields(fake)}
    missing = sorted(name for name in _members(Experiment) if name not in fields and name not in dir(type(fake)))
    assert not missing, f"add {missing} to FakeExperiment in tests/helpers.py"
    _: Experiment = fake  # what mypy would check, were it run on the tests


def test_failed_trials_do_not_count_and_are_replaced() -> None:
    """``--n-trials`` counts COMPLETE and PRUNED trials (and RUNNING ones); a FAIL is made up for."""
    study = _study()
    plan = {1: FAIL, 2: PRUNE}
    outcome = _run(study, Stub(lambda n: plan.get(n, float(n))), FakeExperiment(n_trials=4))
    assert outcome == Outcome() and outcome.completed and outcome.exit_code == 0
    assert _states(study) == ["COMPLETE", "FAIL", "PRUNED", "COMPLETE", "COMPLETE"]
    assert n_counted(study) == 4 and STOP_ATTR not in study.user_attrs


def test_max_total_trials_is_the_budget_over_n_trials() -> None:
    study = _study()
    _run(study, Stub(), FakeExperiment(n_trials=1, max_total_trials=3))
    assert _states(study) == ["COMPLETE"] * 3


def test_a_running_trial_of_another_worker_counts_and_is_not_waited_for() -> None:
    """A journal study has no heartbeats: another host's RUNNING trial counts towards the budget, as it runs."""
    study = _study()
    other = study.ask()
    other.set_user_attr("worker", {"host": "elsewhere", "pid": 1, "started": "1"})
    stub = Stub()
    assert _run(study, stub, FakeExperiment(n_trials=3)).completed
    assert stub.ran == [1, 2] and _states(study) == ["RUNNING", "COMPLETE", "COMPLETE"]


def test_a_dead_local_workers_trial_is_failed_and_retried_here() -> None:
    """A RUNNING trial whose process on this machine is gone is failed, its parameters run again here."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    study = _study()
    orphan = study.ask()
    x = orphan.suggest_float("x", 0.0, 1.0)
    orphan.set_user_attr("worker", {"host": socket.gethostname(), "pid": dead.pid, "started": "1"})
    stub = Stub()
    assert _run(study, stub, FakeExperiment(n_trials=3)).completed
    trials = study.get_trials(deepcopy=False)
    assert _states(study) == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"] and stub.ran == [1, 2, 3]
    assert trials[0].user_attrs["fail_reason"].startswith(f"worker process {dead.pid} on ")
    assert trials[3].params == {"x": x}  # the retry


def test_trials_that_keep_failing_stop_the_study_with_exit_status_1() -> None:
    study = _study()
    stub = Stub(lambda n: FAIL)
    outcome = _run(study, stub, FakeExperiment(n_trials=10, options=_opts(max_consecutive_failures=3)))
    assert outcome.exit_code == 1 and not outcome.completed
    assert outcome.failure == (
        "3 trials failed in a row (--max-consecutive-failures); the last, trial 2: objective failed: RuntimeError: boom"
    )
    assert _states(study) == ["FAIL"] * 3


def test_a_success_between_failures_starts_the_count_again() -> None:
    study = _study()
    plan: dict[int, float | str] = {0: FAIL, 1: FAIL, 2: 1.0, 3: FAIL, 4: FAIL}
    exp = FakeExperiment(n_trials=10, options=_opts(max_consecutive_failures=3))
    outcome = _run(study, Stub(lambda n: plan.get(n, FAIL)), exp)
    assert outcome.exit_code == 1 and "the last, trial 5: " in str(outcome.failure)
    assert _states(study) == ["FAIL", "FAIL", "COMPLETE", "FAIL", "FAIL", "FAIL"]


def test_budget_steps_count_every_trial_and_a_resume_counts_on(tmp_path: Path) -> None:
    """``--budget-steps``: pruned and failed trials' steps count; the same command again runs nothing, a larger
    budget runs on from the stored steps."""
    journal = tmp_path / "study.log"
    plan = {1: PRUNE, 2: FAIL}
    exp = FakeExperiment(n_trials=20, storage=str(journal), options=_opts(budget_steps=1000))
    stub = Stub(lambda n: plan.get(n, 1.0), env_steps=300)
    outcome = _run(_study(_journal(journal)), stub, exp)
    reason = "budget-steps: 1200 of 1000 env steps used"  # no trial starts once 1000 are used
    assert outcome == Outcome(stopped=reason) and outcome.completed and outcome.exit_code == 0
    study = _study(_journal(journal))
    assert _states(study) == ["COMPLETE", "PRUNED", "FAIL", "COMPLETE"] and study.user_attrs[STOP_ATTR] == reason

    again = Stub(env_steps=300)
    assert _run(_study(_journal(journal)), again, exp).stopped == reason and again.ran == []

    larger = dataclasses.replace(exp, options=_opts(budget_steps=1600))
    outcome = _run(_study(_journal(journal)), Stub(env_steps=300), larger)
    assert outcome.stopped == "budget-steps: 1800 of 1600 env steps used"
    study = _study(_journal(journal))
    assert len(study.trials) == 6 and study.user_attrs[STOP_ATTR] == outcome.stopped


def test_target_value_ends_the_study() -> None:
    study = _study()
    outcome = _run(study, Stub(), FakeExperiment(n_trials=10, options=_opts(target_value=2.0)))
    assert outcome.stopped == "target-value: trial 2 reached 2 >= 2" and outcome.exit_code == 0
    assert len(study.trials) == 3 and study.user_attrs[STOP_ATTR] == outcome.stopped


def test_patience_ends_the_study_and_a_resume_to_the_trial_budget_clears_the_reason() -> None:
    study = _study()
    constant = Stub(lambda n: 1.0)
    outcome = _run(study, constant, FakeExperiment(n_trials=6, options=_opts(patience=2)))
    reason = "patience: 2 trials without improving trial 0"
    assert outcome.stopped == reason and constant.ran == [0, 1, 2] and study.user_attrs[STOP_ATTR] == reason
    outcome = _run(study, constant, FakeExperiment(n_trials=5))  # resumed without --patience
    assert outcome == Outcome() and constant.ran == [0, 1, 2, 3, 4]
    assert study.user_attrs[STOP_ATTR] is None  # a stale reason would say the study stopped early


def test_a_resumed_study_runs_only_what_is_missing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``--n-trials`` is the study's total: the same command with a larger total runs the difference."""
    journal = tmp_path / "study.log"
    exp = FakeExperiment(n_trials=2, storage=str(journal))
    first = Stub()
    _run(_study(_journal(journal)), first, exp)
    assert first.ran == [0, 1]
    more = Stub()
    with caplog.at_level("INFO", logger="zoo_ext.study"):
        _run(_study(_journal(journal)), more, dataclasses.replace(exp, n_trials=3))
    assert more.ran == [2] and "study 's': 2 of 3 trials counted so far" in caplog.messages
    done = Stub()
    assert _run(_study(_journal(journal)), done, dataclasses.replace(exp, n_trials=3)).completed and done.ran == []
    assert _states(_study(_journal(journal))) == ["COMPLETE"] * 3


def test_an_interrupted_trial_is_queued_again_and_runs_first_on_resume(tmp_path: Path) -> None:
    journal = tmp_path / "study.log"
    exp = FakeExperiment(n_trials=3, storage=str(journal))
    stub = Stub(lambda n: INTERRUPT if n == 1 else float(n))
    outcome = _run(_study(_journal(journal)), stub, exp)
    assert outcome == Outcome(signal="SIGINT") and outcome.exit_code == 130 and not outcome.completed
    study = _study(_journal(journal))
    assert _states(study) == ["COMPLETE", "FAIL", "WAITING"]
    assert study.trials[1].user_attrs["fail_reason"] == "interrupted by SIGINT"
    resumed = Stub()
    assert _run(_study(_journal(journal)), resumed, exp).completed
    study = _study(_journal(journal))
    assert resumed.ran == [2, 3] and study.trials[2].params == study.trials[1].params  # the retry ran first
    assert _states(study) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]


def test_an_interrupted_study_in_memory_queues_nothing() -> None:
    study = _study()
    outcome = _run(study, Stub(lambda n: INTERRUPT), FakeExperiment(n_trials=3))
    assert outcome.signal == "SIGINT" and _states(study) == ["FAIL"]


def test_exit_status_by_outcome() -> None:
    assert Outcome().exit_code == 0 and Outcome(stopped="patience: 2 trials without improving trial 0").exit_code == 0
    assert Outcome(signal="SIGINT").exit_code == 130 and Outcome(signal="SIGTERM").exit_code == 143
    assert Outcome(failure="3 trials failed in a row").exit_code == 1


def test_summary_counts_only_finished_trials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A WAITING retry and another worker's RUNNING trial are in the study, not finished: not counted."""
    study = _study()
    study.ask().set_user_attr("worker", {"host": "elsewhere", "pid": 1, "started": "1"})
    plan = {1: FAIL, 2: PRUNE}
    exp = FakeExperiment(n_trials=4, log_folder=str(tmp_path), options=_opts(budget_steps=10_000))
    _run(study, Stub(lambda n: plan.get(n, 1.0), env_steps=100), exp)
    study.enqueue_trial({"x": 0.5})  # a retry, queued again
    capsys.readouterr()
    report = summarize(study, exp, pruner="median")
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [
        "Number of finished trials:  4",
        "Trial states:  RUNNING=1, COMPLETE=2, PRUNED=1, FAIL=1, WAITING=1",
        "Total env steps used: 400 of 10000 (--budget-steps)",
    ]
    assert (report / "trials.csv").is_file() and report.parent == tmp_path / "a2c"


def test_summary_says_why_a_stop_rule_ended_the_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = _study()
    exp = FakeExperiment(n_trials=10, log_folder=str(tmp_path), options=_opts(patience=1))
    _run(study, Stub(lambda n: 1.0), exp)
    summarize(study, exp, pruner="median")
    out = capsys.readouterr().out
    assert "Number of finished trials:  2\n" in out
    assert "Study stopped early: patience: 1 trial without improving trial 0\n" in out


def test_optimize_reports_failing_trials_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole run of one process, study set-up aside: the loop, the message, the summary and the exit status."""
    study = _study()
    stub = Stub(lambda n: FAIL)
    setup = _launch.StudySetup(study, stub, pruner_used="none", sampler_seed=1)  # type: ignore[arg-type]
    monkeypatch.setattr(_launch, "create_study", lambda exp: setup)
    monkeypatch.setattr(_launch, "create_tracker", lambda exp, study: None)
    exp = FakeExperiment(n_trials=10, log_folder=str(tmp_path), options=_opts(max_consecutive_failures=2))
    assert _launch.optimize(exp) == 1
    out, err = capsys.readouterr()
    assert "zoo_ext: study 's' stopped: 2 trials failed in a row (--max-consecutive-failures)" in err
    assert "Number of finished trials:  2" in out and stub.ran == [0, 1]
