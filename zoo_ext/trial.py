"""Runs one trial: kwargs from the search space, fitted under ``-n``, trained per seed, reported, recorded.

A trial whose space returns a key the algorithm does not accept, whose model cannot be built or
whose training diverges (NaN) ends as FAIL with user attribute ``fail_reason``; the study goes on.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from zoo_ext import record
from zoo_ext.attrs import FailKind, TrialAttr, set_failure
from zoo_ext.ceiling import BudgetError, fit_to_budget
from zoo_ext.objectives import Objective as ObjectiveSpec
from zoo_ext.objectives import RunResult, aggregate, resolve_objectives
from zoo_ext.spaces._probe import InvalidSearchSpaceError, check_keys
from zoo_ext.storage import ENV_STEPS_ATTR, WORKER_ATTR, worker_identity
from zoo_ext.training import train_run

if TYPE_CHECKING:
    from zoo_ext.experiment import Experiment
    from zoo_ext.spaces import SearchSpace

__all__ = [
    "Objective",
    "TrialFailed",
    "merge_kwargs",
    "racing_seeds",
    "step_offset",
    "trial_seeds",
]

_logger = logging.getLogger(__name__)

#: Dict kwargs that a search space's values are merged into instead of replacing.
MERGED_KWARGS = ("policy_kwargs", "replay_buffer_kwargs")


class TrialFailed(Exception):
    """The trial cannot give a value; it is recorded as FAIL and the study continues."""


def merge_kwargs(base: dict[str, Any], sampled: dict[str, Any]) -> dict[str, Any]:
    """Return the config's kwargs with a space's ``sampled`` kwargs on top.

    A space's ``policy_kwargs`` (and ``replay_buffer_kwargs``) refine the config's, e.g. keep its
    ``log_std_init``, rather than replace them.
    """
    kwargs = dict(base)
    for key, value in sampled.items():
        current = kwargs.get(key)
        merge = key in MERGED_KWARGS and isinstance(value, dict) and isinstance(current, dict)
        kwargs[key] = {**current, **value} if merge and isinstance(current, dict) else value
    return kwargs


def step_offset(done: Sequence[RunResult], n_evaluations: int) -> int:
    """Return the first pruner step of the next seed's evaluations, after the seeds in ``done``."""
    return sum(max(n_evaluations, len(result.curve)) for result in done)


def trial_seeds(study_seed: int, number: int, n_seeds: int = 1) -> list[int]:
    """Return the training seeds of trial ``number``: distinct per trial and seed, reproducible per study seed."""
    return [(study_seed + number * n_seeds + k) % 2**31 for k in range(n_seeds)]


def racing_seeds(study_seed: int, n_seeds: int) -> list[int]:
    """Return the training seeds of every trial of a seed race: the same for all, so seed ``k`` is one problem.

    A paired comparison of two trials seed by seed (common random numbers) then sees their
    difference, not the seeds'.
    """
    return [(study_seed + k) % 2**31 for k in range(n_seeds)]


def _step_counter(trial: optuna.Trial, steps: list[int], k: int) -> Callable[[int], None]:
    """Return a hook storing seed ``k``'s trained env steps in ``steps``; the trial's ``env_steps`` is their sum.

    Called at each evaluation, so the steps of a trial whose worker is killed still count
    towards ``--budget-steps``.
    """

    def record(n: int) -> None:
        steps[k] = n
        trial.set_user_attr(ENV_STEPS_ATTR, sum(steps))

    return record


class Objective:
    """The objective of a zoo study: ``n_seeds`` training runs per trial, scored on ``objectives``."""

    def __init__(
        self,
        experiment: Experiment,
        space: SearchSpace,
        space_name: str,
        *,
        objectives: Sequence[ObjectiveSpec] = (),
        n_seeds: int = 1,
        seed_aggregate: str = "mean",
        objective_metric: str = "last",
        model_dir: Path | None = None,
        seed_racing: bool = False,
    ) -> None:
        self.exp = experiment
        self.space = space
        self.space_name = space_name
        self.objectives = list(objectives) or resolve_objectives(["mean_reward"])
        self.n_seeds = n_seeds
        self.seed_aggregate = seed_aggregate
        self.objective_metric = objective_metric
        #: Report each seed's score at step = seed index (no per-evaluation reports) and stop when pruned.
        self.seed_racing = seed_racing
        #: Where completed trials save their model (``trial_<number>.zip``); None: not saved.
        self.model_dir = model_dir
        #: Numbers of the trials this process was running when SIGINT/SIGTERM stopped it.
        self.interrupted: list[int] = []

    def saving_models(self, model_dir: Path) -> Objective:
        """Return this objective saving each completed trial's model in ``model_dir`` (``trial_<number>.zip``)."""
        saving = copy.copy(self)
        saving.model_dir = model_dir
        return saving

    def _fail(self, trial: optuna.Trial, reason: str) -> TrialFailed:
        set_failure(trial.set_user_attr, FailKind.ERROR, reason)
        _logger.warning("Trial %d failed: %s", trial.number, reason)
        return TrialFailed(reason)

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Return the constructor kwargs of ``trial`` and record them as its ``hyperparams``.

        A space that raises ``optuna.TrialPruned`` rejects the combination (the trial is PRUNED);
        any other exception, or a result that cannot be recorded, raises :class:`TrialFailed`.
        """
        exp = self.exp
        trial.set_user_attr(record.SPACE_ATTR, self.space_name)
        try:
            sampled = self.space(trial, exp.n_actions, exp.n_envs, exp.additional_args())
        except (optuna.TrialPruned, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise self._fail(trial, f"search space {self.space_name!r} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(sampled, dict):
            raise self._fail(trial, f"search space {self.space_name!r} returned {type(sampled).__name__}, not a dict")
        try:
            check_keys(sampled, exp.algo_class, self.space_name)
        except InvalidSearchSpaceError as exc:
            raise self._fail(trial, str(exc)) from exc
        kwargs = merge_kwargs(exp.base_kwargs(), sampled)
        if not exp.options.no_clip_to_budget:
            kwargs = self._fit_to_budget(trial, kwargs)
        try:
            trial.set_user_attr(record.RECORD_ATTR, record.encode(kwargs))
        except record.RecordError as exc:
            raise self._fail(trial, str(exc)) from exc
        return kwargs

    def _ceiling(self) -> int:
        """Return the env steps one training run of a trial may take: ``-n``."""
        return self.exp.n_timesteps

    def _fit_to_budget(self, trial: optuna.Trial, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Return ``kwargs`` fitted under the ``-n`` ceiling (user attribute ``clipped``); prune what cannot fit."""
        exp = self.exp
        try:
            kwargs, clipped = fit_to_budget(exp.algo_class, kwargs, n_timesteps=self._ceiling(), n_envs=exp.n_envs)
        except BudgetError as exc:
            trial.set_user_attr(TrialAttr.PRUNE_REASON, str(exc))
            _logger.info("Trial %d pruned before training: %s", trial.number, exc)
            raise optuna.TrialPruned(str(exc)) from exc
        if clipped:
            trial.set_user_attr(TrialAttr.CLIPPED, clipped)
            changes = ", ".join(f"{key} {change['from']} -> {change['to']}" for key, change in clipped.items())
            _logger.info("Trial %d fitted under %d env steps: %s", trial.number, self._ceiling(), changes)
        return kwargs

    def _reporter(self, trial: optuna.Trial, done: list[RunResult]) -> Callable[[int, float], bool]:
        """Report the seeds' running aggregate at step ``offset + index``; False: prune.

        ``offset`` is the number of steps the earlier seeds may use: ``n_evaluations`` each, or
        the evaluations they actually made if more (on-policy rollouts overshoot the budget), so
        the steps of one seed never meet the next seed's.
        """
        offset = step_offset(done, self.exp.n_evaluations)

        def on_eval(index: int, mean: float) -> bool:
            values = [r.curve[index - 1]["mean_reward"] for r in done if len(r.curve) >= index] + [mean]
            trial.report(aggregate(values, self.seed_aggregate), offset + index)
            return not trial.should_prune()

        return on_eval

    def _race(self, trial: optuna.Trial, results: list[RunResult], n_seeds: int) -> bool:
        """Report the last seed's score at step = its index; return whether the pruner stops the trial there.

        The score is the objective on that seed's run alone: a paired test (WilcoxonPruner)
        compares trials seed by seed. After the last seed the trial completes whatever the pruner
        says. A stopped trial records the scores of the seeds it ran (``per_seed``) and ``seeds_run``.
        """
        objective = self.objectives[0]
        scores = [objective(r, self.objective_metric) for r in results]
        trial.report(scores[-1], len(results) - 1)
        trial.set_user_attr(TrialAttr.SEEDS_RUN, len(results))
        if len(results) == n_seeds or not trial.should_prune():
            return False
        trial.set_user_attr(TrialAttr.PER_SEED, {objective.name: scores})
        _logger.info("Trial %d raced out after %d of %d seeds: %s", trial.number, len(results), n_seeds, scores)
        return True

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        """Return the trial's value(s); any error fails the trial (:class:`TrialFailed`), never the study."""
        try:
            return self._call(trial)
        except (optuna.TrialPruned, TrialFailed):
            raise
        except KeyboardInterrupt as exc:
            reason = f"interrupted by {getattr(exc, 'signal_name', 'SIGINT')}"
            set_failure(trial.set_user_attr, FailKind.INTERRUPTED, reason)
            self.interrupted.append(trial.number)
            raise
        except Exception as exc:
            raise self._fail(trial, f"{type(exc).__name__}: {exc}") from exc

    def _call(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        exp = self.exp
        kwargs = self.sample(trial)
        if self.seed_racing:
            seeds = racing_seeds(exp.seed, self.n_seeds)
        else:
            seeds = trial_seeds(exp.seed, trial.number, self.n_seeds)
        # Read per trial, not at import: a forked worker is another process than its launcher.
        trial.set_user_attr(WORKER_ATTR, worker_identity())
        trial.set_user_attr(TrialAttr.SEED, seeds[0])
        trial.set_user_attr(TrialAttr.SEEDS, seeds)
        trial.set_user_attr(TrialAttr.OBJECTIVES, [o.name for o in self.objectives])
        single = len(self.objectives) == 1
        inference = any(o.needs_inference for o in self.objectives)
        results: list[RunResult] = []
        steps = [0] * len(seeds)
        try:
            for k, seed in enumerate(seeds):
                log_path = None
                if exp.optimization_log_path:
                    log_path = os.path.join(exp.optimization_log_path, f"trial_{trial.number}", f"seed_{seed}")
                model_path = self.model_dir / f"trial_{trial.number}.zip" if self.model_dir and k == 0 else None
                on_eval = self._reporter(trial, results) if single and not self.seed_racing else None
                result = train_run(exp, kwargs, seed, on_eval=on_eval, log_path=log_path, model_path=model_path,
                                   measure_inference=inference, on_steps=_step_counter(trial, steps, k))  # fmt: skip
                results.append(result)
                if result.diverged:
                    raise self._fail(trial, f"diverged: the evaluation return of seed {seed} is not finite")
                if result.stopped:
                    raise optuna.TrialPruned()
                if self.seed_racing and self._race(trial, results, len(seeds)):
                    raise optuna.TrialPruned(f"raced out after {len(results)} of {len(seeds)} seeds")
        except (optuna.TrialPruned, TrialFailed, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise self._fail(trial, f"training failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self._record_runs(trial, results)
        try:
            per_seed = {o.name: [o(r, self.objective_metric) for r in results] for o in self.objectives}
            values = tuple(aggregate(per_seed[o.name], self.seed_aggregate) for o in self.objectives)
        except Exception as exc:
            raise self._fail(trial, f"objective failed: {type(exc).__name__}: {exc}") from exc
        bad = [o.name for o, v in zip(self.objectives, values, strict=True) if not math.isfinite(v)]
        if bad:
            raise self._fail(trial, f"objective {', '.join(bad)} is not finite: {values}")
        trial.set_user_attr(TrialAttr.PER_SEED, per_seed)
        return values[0] if single else values

    def _record_runs(self, trial: optuna.Trial, results: list[RunResult]) -> None:
        if not results:
            return
        trial.set_user_attr(TrialAttr.N_PARAMS, results[0].n_params)
        if results[0].normalize_gamma is not None:
            trial.set_user_attr(TrialAttr.NORMALIZE_GAMMA, results[0].normalize_gamma)
        trial.set_user_attr(TrialAttr.TRAIN_TIME, sum(r.train_time for r in results))
        trial.set_user_attr(TrialAttr.N_UPDATES, sum(r.n_updates for r in results))
        curve = []
        for index, point in enumerate(results[0].curve):
            seeds = [r.curve[index] for r in results if len(r.curve) > index]
            mean = aggregate([p["mean_reward"] for p in seeds], self.seed_aggregate)
            std = float(np.mean([p["std_reward"] for p in seeds]))
            curve.append({"timesteps": point["timesteps"], "mean_reward": mean, "std_reward": std})
        trial.set_user_attr(TrialAttr.EVALUATIONS, curve)
        if self.n_seeds > 1:  # a raced-out trial may have run one seed: the per-seed record stays
            trial.set_user_attr(TrialAttr.EVALUATIONS_PER_SEED, [r.curve for r in results])
