"""The budget loop: runs trials until the study's budget is spent or a stop rule ends it, recovers dead workers'
trials, stops on failures."""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import signal as signal_module
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from zoo_ext import pbt, progress, storage, tracking, workers
from zoo_ext.attrs import FailKind, StudyAttr, TrialAttr, set_failure
from zoo_ext.study._rules import consecutive_failures, env_steps_used, stop_rule
from zoo_ext.trial import Objective, TrialFailed

if TYPE_CHECKING:
    from zoo_ext.experiment import Experiment

__all__ = [
    "COUNTED_STATES",
    "STOP_ATTR",
    "Outcome",
    "budget_total",
    "mirror_models",
    "n_counted",
    "n_finished",
    "over_budget",
    "progress_line",
    "recover",
    "run_tracked",
    "within_budget",
]

_logger = logging.getLogger("zoo_ext.study")

#: Trial states that count towards the budget (``--n-trials``, ``--max-total-trials``), as in stock rl_zoo3.
COUNTED_STATES = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED)
#: Study user attribute: why a stop rule ended the study (None again once a resumed study runs to its trial budget).
STOP_ATTR = StudyAttr.STOP_REASON


@dataclass
class Outcome:
    """How this process's part of a study ended: budget done, interrupted by a signal, or failing trials."""

    #: The signal that stopped the run (``SIGINT``, ``SIGTERM``), if any.
    signal: str | None = None
    #: Why the study was stopped for failing trials, if it was.
    failure: str | None = None
    #: Why a stop rule (``--budget-steps``, ``--target-value``, ``--patience``) ended the study: a normal end.
    stopped: str | None = None

    @property
    def completed(self) -> bool:
        return self.signal is None and self.failure is None

    @property
    def exit_code(self) -> int:
        """Return the command's exit status: 0 done, 128 + signal number when interrupted, 1 when failing."""
        if self.signal is not None:
            return 128 + int(getattr(signal_module.Signals, self.signal, signal_module.SIGINT))
        return 1 if self.failure is not None else 0


def budget_total(exp: Experiment) -> int:
    """Return the study's trial budget: ``--max-total-trials``, else ``--n-trials``, counted over the whole study.

    Complete, pruned and running trials count (failed ones do not), so a resumed study runs
    only what is missing; raise ``--n-trials`` to ask for more. A population (``--scheduler``) has
    one trial per member segment instead.
    """
    plan = pbt.plan_for(exp)
    if plan is not None:
        return plan.total_trials
    return exp.max_total_trials if exp.max_total_trials is not None else exp.n_trials


def mirror_models(exp: Experiment, study_name: str) -> Path:
    """Return the folder where ``--mlflow-mirror``'s workers leave each completed trial's model for the mirror."""
    return Path(exp.log_folder, exp.algo, f"{study_name}-models")


def run_tracked(
    study: optuna.Study, objective: Objective, tracker: tracking.Tracker | None, exp: Experiment, *, n_jobs: int
) -> Outcome:
    """Run this process's trials on ``n_jobs`` threads, logged to MLflow if ``tracker``; return how they ended.

    A tracked trial saves its model in a temporary folder, for its MLflow run.
    """
    with tempfile.TemporaryDirectory(prefix="zoo_ext_models_") as model_dir:
        run: Any = objective
        if tracker is not None:
            objective = objective.saving_models(Path(model_dir))
            run = tracking.TrackedObjective(objective, tracker, env_id=exp.env_id, config=exp.config)
        elif exp.options.mlflow_mirror and not exp.options.no_mlflow and exp.storage is not None:
            models = mirror_models(exp, study.study_name)
            models.mkdir(parents=True, exist_ok=True)
            objective = run = objective.saving_models(models)
        with _Recovery(study, tracker, exp):
            return run_trials(study, run, objective, exp, tracker=tracker, n_jobs=n_jobs)


def progress_line(study: optuna.Study, exp: Experiment) -> contextlib.AbstractContextManager[Any]:
    """Return the study's live progress line: a no-op in a worker process, off a terminal and with --no-progress.

    Its total is the whole study's budget, read from the storage, so a launcher shows every worker's trials.
    """
    return progress.live(
        study,
        total_trials=budget_total(exp),
        budget_steps=exp.options.budget_steps,
        enabled=progress.shown(exp.options.no_progress) and not workers.is_worker(),
    )


def run_trials(
    study: optuna.Study,
    run_trial: Any,
    objective: Objective,
    exp: Experiment,
    *,
    tracker: tracking.Tracker | None = None,
    n_jobs: int = 1,
) -> Outcome:
    """Run trials until the study's budget is spent or a stop rule ends it; return how it ended.

    The budget is the study's, shared by all its workers: live and finished trials count,
    failed ones do not. Once it is spent while trials of other workers still run, this worker
    waits for them: a dead worker's trial is failed when its process is gone (this machine) or its
    heartbeats stop (database storages) and retried here, so the study still reaches its budget.
    After ``--max-consecutive-failures`` failed trials in a row it stops. The stop rules
    (:func:`stop_rule`) are read from the storage before each trial, so every worker stops on
    the same state; trials already running finish. A trial interrupted by SIGINT/SIGTERM is
    queued again (``--trial-retries``), so resuming runs it first.
    """
    total = budget_total(exp)
    opts = exp.options
    limit = opts.max_consecutive_failures
    counted = n_counted(study)
    if counted:
        _logger.info("study %r: %d of %d trials counted so far", study.study_name, counted, total)
    if opts.budget_steps and counted:
        used = env_steps_used(study)
        _logger.info("study %r: %d of %d env steps used so far", study.study_name, used, opts.budget_steps)

    def stop_early(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if (trial.state == TrialState.FAIL and consecutive_failures(study, limit)) or stop_rule(study, opts):
            study.stop()

    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = [
        MaxTrialsCallback(total, states=COUNTED_STATES),
        stop_early,
    ]
    if n_jobs == 1:  # with --n-jobs threads another thread's running trial would be frozen, never freed
        callbacks.append(_freeze_survivors)
    population = objective.population if isinstance(objective, pbt.SegmentObjective) else None
    if population is not None:
        run_trial = pbt.only_segments(run_trial)
        callbacks.append(_stop_when_nothing_waits)
        if tracker is not None and not workers.is_worker():  # one process writes the member runs: no duplicates
            callbacks.append(lambda study, _: tracker.log_population(study))
    run = functools.partial(
        study.optimize, within_budget(run_trial, total), n_jobs=n_jobs, gc_after_trial=True,
        catch=(TrialFailed,), callbacks=callbacks,
    )  # fmt: skip
    seen: dict[int, float] = {}
    try:
        while True:
            failure = consecutive_failures(study, limit)
            if failure:
                return Outcome(failure=failure)
            reason = stop_rule(study, opts)
            if reason:
                study.set_user_attr(STOP_ATTR, reason)
                _logger.info("study %r stopped: %s", study.study_name, reason)
                return Outcome(stopped=reason)
            missing = total - n_counted(study)
            if missing > 0 and population is not None and not _waiting(study):
                # The next segments come when the running ones end (on any machine): wait for them. With none
                # running, a member's chain broke (its retries spent): queue what is missing.
                if recover(study, tracker, exp):
                    continue
                if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    time.sleep(1)
                    continue
                if not population.fill(study):
                    return Outcome(failure=f"the population has no segment to run; {total - missing} of {total} done")
                continue
            if missing > 0:
                # n_trials caps this process's --n-jobs threads too; the callback stops it early when other
                # workers fill the budget, and a failed trial is made up by the next round of this loop.
                run(n_trials=missing)
            elif not _wait_for_running(study, tracker, exp, seen):
                if study.user_attrs.get(STOP_ATTR) is not None:
                    study.set_user_attr(STOP_ATTR, None)  # a resumed study ran on: the old reason is stale
                return Outcome()
    except KeyboardInterrupt as exc:
        name = getattr(exc, "signal_name", "SIGINT")
        if exp.storage is not None:  # in memory, nothing is left to resume
            _queue_interrupted(study, objective.interrupted, exp.options.trial_retries)
        return Outcome(signal=name)


def _waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _stop_when_nothing_waits(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Stop this worker's round before it asks for a trial that no queued segment would fill."""
    if not _waiting(study):
        study.stop()


def _queue_interrupted(study: optuna.Study, numbers: Sequence[int], retries: int) -> None:
    """Queue the interrupted trials ``numbers`` again (at most ``retries`` times each), saying what happened to each."""
    trials = study.get_trials(deepcopy=False)
    for number in numbers:
        trial = trials[number]
        if trial.state != TrialState.FAIL:
            continue
        if storage.retry_trial(study, trial, max_retry=retries):
            _logger.warning("trial %d was interrupted: queued again, it runs first when the study resumes", number)
        else:
            _logger.warning(
                "trial %d was interrupted: not queued again, its parameters ran %d times already (--trial-retries %d);"
                " the study samples a new trial in its place when it resumes",
                number, retries + 1, retries,
            )  # fmt: skip


def n_counted(study: optuna.Study) -> int:
    """Return the trials that count towards the budget: complete, pruned and running ones."""
    return len(study.get_trials(deepcopy=False, states=COUNTED_STATES))


def n_finished(study: optuna.Study) -> int:
    """Return the trials that spent their place of the budget: complete and pruned ones."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _freeze_survivors(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Move what survived the trial (modules, the study, MLflow's store) out of the garbage collector's scans.

    Optuna has just collected the trial's garbage (``gc_after_trial``); without this every later
    collection scans all of torch, mlflow, pandas and sqlalchemy again (0.4 s a trial with MLflow).
    """
    gc.freeze()


def within_budget(run_trial: Callable[[optuna.Trial], Any], total: int) -> Callable[[optuna.Trial], Any]:
    """Return ``run_trial`` run only for a trial within the study's ``total`` trials (:func:`over_budget`).

    Two workers finishing together can both see one trial left and both create one: the later is
    failed unrun (``fail_kind`` ``not_run``: no sampling, no MLflow
    run, not a failure of its configuration), so the study never trains more than its budget.

    Example::

        study.optimize(within_budget(objective, 9), n_trials=9, catch=(TrialFailed,))
    """

    def guarded(trial: optuna.Trial) -> Any:
        if over_budget(trial.study, trial.number, total):
            reason = f"not run: the study's {total} trials were taken by other workers first"
            set_failure(trial.set_user_attr, FailKind.NOT_RUN, reason)
            raise TrialFailed(reason)
        return run_trial(trial)

    return guarded


def over_budget(study: optuna.Study, number: int, total: int) -> bool:
    """Return True if ``total`` trials numbered before trial ``number`` already count or wait to run.

    Trial numbers are handed out by the storage, one at a time: ranking by them decides, the same
    way in every worker, which of the trials created at once fit the budget. A failed trial leaves
    a place that a later round of the budget loop fills.
    """
    if number < total:  # fewer trials than that are numbered before it: no need to read the storage
        return False
    states = (*COUNTED_STATES, TrialState.WAITING)
    return sum(t.number < number for t in study.get_trials(deepcopy=False, states=states)) >= total


def _wait_for_running(
    study: optuna.Study, tracker: tracking.Tracker | None, exp: Experiment, seen: dict[int, float]
) -> bool:
    """Wait for other workers' running trials; return False once none is left that could still fail.

    A trial of a live process on this machine is waited for until it ends: if its process dies (a
    zombie counts as dead), it is failed and retried here. ``seen`` maps a running trial to when
    this worker first saw it. A trial whose worker died elsewhere is failed within the grace period
    (plus the recovery interval); one still running after that sends heartbeats (or none at all: a
    worker without them), so it is not waited for.
    """
    if recover(study, tracker, exp):
        return True
    trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if any(storage.is_live_local(t.user_attrs.get(storage.WORKER_ATTR)) for t in trials):
        # Another process of this machine runs a trial: if it dies (kill -9, out of memory), its trial is failed and
        # retried here. Without this a journal study's worker would leave and nobody would finish that trial.
        time.sleep(1)
        return True
    opts = exp.options
    if not storage.has_heartbeats(exp.storage, opts.heartbeat_interval):
        return False
    now = time.monotonic()
    running = [seen.setdefault(t.number, now) for t in trials]
    patience = (opts.grace_period or 2 * opts.heartbeat_interval) + 2 * opts.heartbeat_interval
    if all(now - since > patience for since in running):
        return False
    time.sleep(min(opts.heartbeat_interval, 2))
    return True


def recover(study: optuna.Study, tracker: tracking.Tracker | None, exp: Experiment) -> bool:
    """Fail the trials of dead workers (retrying them) and close their MLflow runs; return True if any."""
    failed = storage.fail_dead_local_trials(study, exp.options.trial_retries)
    if storage.has_heartbeats(exp.storage, exp.options.heartbeat_interval):
        running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        with storage.experimental():
            optuna.storages.fail_stale_trials(study)
        failed += [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number in running]
    if failed and tracker is not None:
        tracker.close_stale_runs(study)
    for trial in failed:
        _logger.warning(
            "trial %d failed: %s (queued again unless its --trial-retries are spent)",
            trial.number,
            trial.user_attrs.get(TrialAttr.FAIL_REASON, "its worker sent no heartbeat"),
        )
    return bool(failed)


class _Recovery:
    """A daemon thread that calls :func:`recover` every heartbeat interval while trials run.

    Optuna fails a stale trial only when a worker starts its next trial; with long trials that
    can take many minutes. This thread fails it, queues its retry and closes its MLflow run as
    FAILED within about one interval after the grace period.
    """

    def __init__(self, study: optuna.Study, tracker: tracking.Tracker | None, exp: Experiment) -> None:
        self.study, self.tracker, self.exp = study, tracker, exp
        self.interval = exp.options.heartbeat_interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="zoo_ext-recovery", daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                recover(self.study, self.tracker, self.exp)
            except Exception as exc:  # noqa: BLE001 - a storage hiccup must not end the study
                _logger.debug("recovery check failed: %s", storage.redact(str(exc)))

    def __enter__(self) -> _Recovery:
        if self.interval > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
