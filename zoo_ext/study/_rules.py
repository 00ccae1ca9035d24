"""The stop rules a study checks before each trial: failures in a row, env-step budget, target value, patience.

Each reads the trials from the storage, so every worker of a study stops on the same state.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from zoo_ext import storage
from zoo_ext.statistics import is_better, sign

if TYPE_CHECKING:
    from zoo_ext.options import ZooOptions

__all__ = [
    "budget_steps_spent",
    "consecutive_failures",
    "env_steps_used",
    "out_of_patience",
    "stop_rule",
    "target_reached",
]


def consecutive_failures(study: optuna.Study, limit: int) -> str | None:
    """Return why the study must stop if its last ``limit`` finished trials all failed (None otherwise).

    Trials failed by an interruption or a dead worker are skipped: they say nothing about the
    configuration. ``limit`` 0 never stops.
    """
    if limit <= 0:
        return None
    failed: list[optuna.trial.FrozenTrial] = []
    for trial in reversed(_finished(study)):
        if trial.state != TrialState.FAIL:
            break
        if storage.is_external_failure(trial):
            continue
        failed.append(trial)
        if len(failed) == limit:
            last = failed[0]
            return (
                f"{limit} trials failed in a row (--max-consecutive-failures); the last, trial {last.number}: "
                f"{last.user_attrs.get('fail_reason', 'no reason recorded')}"
            )
    return None


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Return the study's finished trials in the order they finished."""
    return _in_finish_order(study.get_trials(deepcopy=False))


def _in_finish_order(trials: Sequence[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return sorted(
        (t for t in trials if t.state.is_finished()), key=lambda t: (t.datetime_complete or datetime.min, t.number)
    )


def stop_rule(study: optuna.Study, opts: ZooOptions) -> str | None:
    """Return why a stop rule ends the study now (``--budget-steps``, ``--target-value``, ``--patience``), else None.

    The trials are read once for all rules, and not at all when no rule is set.
    """
    if not (opts.budget_steps > 0 or opts.target_value is not None or opts.patience > 0):
        return None
    trials = study.get_trials(deepcopy=False)
    finished = _in_finish_order(trials)
    direction = study.directions[0]
    return (
        _budget_reason(trials, opts.budget_steps)
        or _target_reason(finished, direction, opts.target_value)
        or _patience_reason(finished, direction, opts.patience)
    )


def env_steps_used(study: optuna.Study) -> int:
    """Return the env steps all trials of ``study`` trained: complete, pruned, failed and running ones.

    A running trial counts what it trained by its last evaluation, so a killed worker's steps count too.
    """
    return storage.env_steps(study.get_trials(deepcopy=False))


def budget_steps_spent(study: optuna.Study, budget: int) -> str | None:
    """Return the stop reason once the study's trials used ``budget`` env steps (0: no budget), else None."""
    return _budget_reason(study.get_trials(deepcopy=False), budget)


def _budget_reason(trials: Sequence[optuna.trial.FrozenTrial], budget: int) -> str | None:
    if budget <= 0:
        return None
    used = storage.env_steps(trials)
    return f"budget-steps: {used} of {budget} env steps used" if used >= budget else None


def target_reached(study: optuna.Study, target: float | None) -> str | None:
    """Return the stop reason once a completed trial's first objective reached ``target`` (None: no target).

    "Reached" follows the study's first direction: at least ``target`` when maximizing, at most when minimizing.
    The reason names the first trial that reached it.
    """
    return _target_reason(_finished(study), study.directions[0], target)


def _target_reason(
    finished: Sequence[optuna.trial.FrozenTrial], direction: StudyDirection, target: float | None
) -> str | None:
    if target is None:
        return None
    for trial in finished:
        if trial.state == TrialState.COMPLETE and trial.values and not is_better(target, trial.values[0], direction):
            relation = ">=" if sign(direction) > 0 else "<="
            return f"target-value: trial {trial.number} reached {trial.values[0]:g} {relation} {target:g}"
    return None


def out_of_patience(study: optuna.Study, patience: int) -> str | None:
    """Return the stop reason once ``patience`` trials finished after the best one without beating it (0: never).

    Counted in the order trials finished: completed, pruned and failed trials all count (each spent
    budget without improving), except failures that say nothing about their configuration (an
    interruption, a dead worker). Only a completed trial can improve the best, on the first
    objective, strictly. The count starts at the first completed trial.
    """
    return _patience_reason(_finished(study), study.directions[0], patience)


def _patience_reason(
    finished: Sequence[optuna.trial.FrozenTrial], direction: StudyDirection, patience: int
) -> str | None:
    if patience <= 0:
        return None
    best: optuna.trial.FrozenTrial | None = None
    since = 0
    for trial in finished:
        if trial.state == TrialState.FAIL and storage.is_external_failure(trial):
            continue
        complete = trial.state == TrialState.COMPLETE and bool(trial.values)
        if complete and (best is None or is_better(trial.values[0], best.values[0], direction)):
            best, since = trial, 0
        elif best is not None:
            since += 1
    if best is None or since < patience:
        return None
    return f"patience: {since} trial{'s' if since > 1 else ''} without improving trial {best.number}"
