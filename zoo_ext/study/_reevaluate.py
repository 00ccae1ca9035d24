"""Re-training the best trials on fresh seeds once the study ends (once, whatever the number of processes)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import numpy as np
import optuna
from optuna.trial import TrialState

from zoo_ext import storage, tracking
from zoo_ext.objectives import aggregate
from zoo_ext.trial import Objective, train_run

__all__ = ["fresh_seeds", "reevaluate"]

_logger = logging.getLogger("zoo_ext.study")


def _candidates(study: optuna.Study, top: int) -> list[optuna.trial.FrozenTrial]:
    """Return the trials to re-evaluate: the ``top`` best (one objective) or Pareto-optimal (several)."""
    if len(study.directions) > 1:
        trials = study.best_trials
    else:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return sorted(trials, key=lambda t: t.values[0], reverse=maximize)[:top]


def fresh_seeds(study: optuna.Study, study_seed: int, n: int) -> list[int]:
    """Return ``n`` seeds never used to train any trial of ``study`` (reproducible per study seed)."""
    used = {s for t in study.get_trials(deepcopy=False) for s in t.user_attrs.get("seeds", [t.user_attrs.get("seed")])}
    rng = np.random.default_rng([study_seed, 2**20])
    seeds: list[int] = []
    while len(seeds) < n:
        seed = int(rng.integers(2**31))
        if seed not in used and seed not in seeds:
            seeds.append(seed)
    return seeds


def _claim(study: optuna.Study, key: str) -> Callable[[], None] | None:
    """Return a release function if this process won ``key`` for ``study`` (None if another process holds it).

    The storage decides atomically: the claim is a study named ``<study>:<key>``, which only one
    process can create (in-memory studies always win).
    """
    if isinstance(study._storage, optuna.storages.InMemoryStorage):
        return lambda: None
    name = f"{study.study_name}:{key}"
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        optuna.create_study(storage=study._storage, study_name=name)
    except optuna.exceptions.DuplicatedStudyError:
        return None
    finally:
        optuna.logging.set_verbosity(verbosity)
    return functools.partial(optuna.delete_study, study_name=name, storage=study._storage)


def _wait_for_local_trials(study: optuna.Study) -> None:
    """Wait while live processes on this host still run trials of ``study`` (a re-evaluation needs them all)."""
    while any(
        storage.is_live_local(t.user_attrs.get(storage.WORKER_ATTR))
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    ):
        time.sleep(2)


def reevaluate(study: optuna.Study, objective: Objective, tracker: tracking.Tracker | None, top: int, n: int) -> None:
    """Re-train the ``top`` best trials with ``n`` fresh seeds; store the scores in study attr ``test_scores``.

    Several processes finishing one study re-evaluate it once: the first to claim it does, the
    others skip it; trials already re-evaluated are not trained again.
    """
    exp = objective.exp
    _wait_for_local_trials(study)
    todo = [t for t in _candidates(study, top) if str(t.number) not in study.user_attrs.get("test_scores", {})]
    if not todo:
        return
    release = _claim(study, f"reevaluation-{'-'.join(str(t.number) for t in todo)}")
    if release is None:
        _logger.info("another process re-evaluates study %r", study.study_name)
        return
    try:
        _reevaluate(study, objective, tracker, todo, fresh_seeds(study, exp.seed, n))
    finally:
        release()


def _reevaluate(
    study: optuna.Study,
    objective: Objective,
    tracker: tracking.Tracker | None,
    todo: list[optuna.trial.FrozenTrial],
    seeds: list[int],
) -> None:
    exp = objective.exp
    n = len(seeds)
    tests = dict(study.user_attrs.get("test_scores", {}))
    for trial in todo:
        fixed = optuna.trial.FixedTrial(trial.params, number=trial.number)
        kwargs = objective.sample(fixed)  # type: ignore[arg-type]
        inference = any(o.needs_inference for o in objective.objectives)
        results = [train_run(exp, kwargs, seed, measure_inference=inference) for seed in seeds]
        scores = {o.name: [o(r, objective.objective_metric) for r in results] for o in objective.objectives}
        summary = {name: aggregate(values, objective.seed_aggregate) for name, values in scores.items()}
        tests[str(trial.number)] = {"seeds": seeds, "scores": scores, "aggregate": summary}
        study.set_user_attr("test_scores", tests)
        if tracker is not None:
            tracker.log_test_scores(trial.number, scores, summary)
        _logger.info("trial %d re-evaluated on %d fresh seeds: %s", trial.number, n, summary)
