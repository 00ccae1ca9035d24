"""Runs one trial: kwargs from the search space, fitted under ``-n``, trained per seed, reported, recorded.

A trial whose space returns a key the algorithm does not accept, whose model cannot be built or
whose training diverges (NaN) ends as FAIL with user attribute ``fail_reason``; the study goes on.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import TrialState

from zoo_ext import record
from zoo_ext.attrs import FailKind, TrialAttr, set_failure
from zoo_ext.ceiling import BudgetError, fit_to_budget
from zoo_ext.envs import NORMALIZED_OBJECTIVES, ScoreRange, env_value, normalize
from zoo_ext.objectives import Objective as ObjectiveSpec
from zoo_ext.objectives import RunResult, aggregate, resolve_objectives
from zoo_ext.pruners import pruner_rule
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


class _Normalizer:
    """``(env, raw return) -> score``: the identity on one env, else ``(x - lo) / (hi - lo)`` per env.

    An unset ``hi`` is the best so far: the best return of any run of the finished trials
    (``best``), of the running trial's finished runs (``runs``, appended to as it trains, scored
    by ``raw``) and the value scored.
    """

    def __init__(
        self,
        ranges: Mapping[str, ScoreRange],
        best: Mapping[str, float],
        runs: Sequence[tuple[str, RunResult]],
        raw: Callable[[RunResult], float],
    ) -> None:
        self.ranges = ranges
        self.best = best
        self.runs = runs
        self.raw = raw

    def hi(self, env: str, value: float = -math.inf) -> float:
        """Return ``env``'s ``hi``: the given one, or the best return so far (at least ``value``)."""
        bounds = self.ranges[env]
        if bounds.hi is not None:
            return bounds.hi
        reached = [self.raw(r) for e, r in self.runs if e == env and r.curve]
        return max([*reached, value, self.best.get(env, bounds.lo)])

    def __call__(self, env: str, value: float) -> float:
        if not self.ranges:
            return value
        return normalize(value, self.ranges[env].lo, self.hi(env, value))


class Objective:
    """The objective of a zoo study: ``n_seeds`` training runs per trial and env, scored on ``objectives``.

    With ``envs`` (``--tune-envs``) a trial trains the same sampled values on each env too; its runs
    are the (env, seed) pairs in a fixed order, seed by seed and env by env within a seed, so a
    pruner's step ``k`` is the same problem in every trial. Return-scale objectives
    (:data:`~zoo_ext.envs.NORMALIZED_OBJECTIVES`) are normalised per env by ``score_ranges``.
    """

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
        envs: Sequence[Experiment] = (),
        score_ranges: Mapping[str, ScoreRange] | None = None,
        env_aggregate: str = "iqm",
    ) -> None:
        self.exp = experiment
        self.space = space
        self.space_name = space_name
        self.objectives = list(objectives) or resolve_objectives(["mean_reward"])
        self.n_seeds = n_seeds
        self.seed_aggregate = seed_aggregate
        self.objective_metric = objective_metric
        #: Report each run's score at step = run index (no per-evaluation reports) and stop when pruned.
        self.seed_racing = seed_racing
        #: Where completed trials save their model (``trial_<number>.zip``); None: not saved.
        self.model_dir = model_dir
        #: Numbers of the trials this process was running when SIGINT/SIGTERM stopped it.
        self.interrupted: list[int] = []
        #: The envs a trial trains on: ``--env`` first, then ``--tune-envs``.
        self.envs: list[Experiment] = [experiment, *envs]
        self.score_ranges = dict(score_ranges or {})
        self.env_aggregate = env_aggregate

    @property
    def multi_env(self) -> bool:
        """Whether a trial trains on several envs (``--tune-envs``)."""
        return len(self.envs) > 1

    def saving_models(self, model_dir: Path) -> Objective:
        """Return this objective saving each completed trial's model in ``model_dir`` (``trial_<number>.zip``)."""
        saving = copy.copy(self)
        saving.model_dir = model_dir
        return saving

    def _fail(self, trial: optuna.Trial, reason: str) -> TrialFailed:
        set_failure(trial.set_user_attr, FailKind.ERROR, reason)
        _logger.warning("Trial %d failed: %s", trial.number, reason)
        return TrialFailed(reason)

    def _prune(self, trial: optuna.Trial, rule: str, reason: str) -> optuna.TrialPruned:
        """Record why and by which rule ``trial`` is pruned; return the exception to raise."""
        trial.set_user_attr(TrialAttr.PRUNE_RULE, rule)
        if reason:
            trial.set_user_attr(TrialAttr.PRUNE_REASON, reason)
        return optuna.TrialPruned(reason or rule)

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Return the constructor kwargs of ``trial`` on ``--env`` and record them as its ``hyperparams``.

        A space that raises ``optuna.TrialPruned`` rejects the combination (the trial is PRUNED);
        any other exception, or a result that cannot be recorded, raises :class:`TrialFailed`.
        """
        return self._kwargs(trial, self.exp, self._draw(trial, self.exp), record_as=TrialAttr.RECORD)

    def _draw(self, trial: optuna.Trial, exp: Experiment) -> dict[str, Any]:
        """Return the search space's values for ``trial`` on ``exp`` (checked against the algorithm's arguments).

        On each env of ``--tune-envs`` the space is called with that env's ``n_actions`` and
        ``n_envs`` (e.g. action noise of the right shape); Optuna returns the same value for a
        parameter name within a trial, so every env gets the same sampled values.
        """
        trial.set_user_attr(record.SPACE_ATTR, self.space_name)
        name = self.space_name if exp is self.exp else f"{self.space_name} (on {exp.env_id})"
        try:
            sampled = self.space(trial, exp.n_actions, exp.n_envs, exp.additional_args())
        except optuna.TrialPruned as exc:
            raise self._prune(trial, "search space", str(exc)) from exc
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            raise self._fail(trial, f"search space {name!r} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(sampled, dict):
            raise self._fail(trial, f"search space {name!r} returned {type(sampled).__name__}, not a dict")
        try:
            check_keys(sampled, exp.algo_class, self.space_name)
        except InvalidSearchSpaceError as exc:
            raise self._fail(trial, str(exc)) from exc
        return sampled

    def _kwargs(
        self, trial: optuna.Trial, exp: Experiment, sampled: dict[str, Any], *, record_as: str | None
    ) -> dict[str, Any]:
        """Return ``exp``'s config with ``sampled`` on top, fitted under ``-n``; recorded in ``record_as`` if given."""
        kwargs = merge_kwargs(exp.base_kwargs(), sampled)
        if not exp.options.no_clip_to_budget:
            kwargs = self._fit_to_budget(trial, exp, kwargs)
        if record_as is not None:
            try:
                trial.set_user_attr(record_as, record.encode(kwargs))
            except record.RecordError as exc:
                raise self._fail(trial, str(exc)) from exc
        return kwargs

    def _ceiling(self) -> int:
        """Return the env steps one training run of a trial may take: ``-n``."""
        return self.exp.n_timesteps

    def _fit_to_budget(self, trial: optuna.Trial, exp: Experiment, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Return ``kwargs`` fitted under the ``-n`` ceiling (user attribute ``clipped``); prune what cannot fit.

        On an env of ``--tune-envs`` other than ``--env``, the clipped keys are named ``ENV:key``.
        """
        try:
            kwargs, clipped = fit_to_budget(exp.algo_class, kwargs, n_timesteps=self._ceiling(), n_envs=exp.n_envs)
        except BudgetError as exc:
            _logger.info("Trial %d pruned before training: %s", trial.number, exc)
            raise self._prune(trial, "budget: does not fit -n", str(exc)) from exc
        if clipped:
            if exp is not self.exp:
                clipped = {f"{exp.env_id}:{key}": change for key, change in clipped.items()}
            trial.set_user_attr(TrialAttr.CLIPPED, {**trial.user_attrs.get(TrialAttr.CLIPPED, {}), **clipped})
            changes = ", ".join(f"{key} {change['from']} -> {change['to']}" for key, change in clipped.items())
            _logger.info("Trial %d fitted under %d env steps: %s", trial.number, self._ceiling(), changes)
        return kwargs

    def kwargs_per_env(self, trial: optuna.Trial) -> dict[str, dict[str, Any]]:
        """Return each env's constructor kwargs for ``trial``, by env id (the same sampled values on every env)."""
        kwargs = {self.exp.env_id: self.sample(trial)}
        for exp in self.envs[1:]:
            kwargs[exp.env_id] = self._kwargs(trial, exp, self._draw(trial, exp), record_as=None)
        if self.multi_env:
            try:
                others = {env: record.encode(kwargs[env]) for env in list(kwargs)[1:]}
            except record.RecordError as exc:
                raise self._fail(trial, str(exc)) from exc
            trial.set_user_attr(TrialAttr.RECORD_PER_ENV, others)
        return kwargs

    def _best_so_far(self, study: optuna.Study) -> dict[str, float]:
        """Return per env the best return of any run of the study's finished trials (``hi`` when unset)."""
        best: dict[str, float] = {}
        if not self.multi_env:
            return best
        for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            for env, scores in other.user_attrs.get(TrialAttr.PER_ENV, {}).items():
                best[env] = max([best.get(env, -math.inf), *scores.get("raw", [])])
        return best

    def _normalizer(self, study: optuna.Study, runs: Sequence[tuple[str, RunResult]]) -> _Normalizer:
        """Return the scorer of ``runs`` (appended to as they train): the identity on one env."""
        mean_reward = resolve_objectives(["mean_reward"])[0]
        raw = functools.partial(mean_reward, metric=self.objective_metric)
        return _Normalizer(self.score_ranges if self.multi_env else {}, self._best_so_far(study), runs, raw)

    def seed_scores(self, study: optuna.Study, runs: Sequence[tuple[str, RunResult]]) -> dict[str, list[float]]:
        """Return per objective one score per seed of ``runs`` ((env, result) pairs, every env per seed).

        On one env, each run's value; on several, per seed the envs' normalised scores aggregated
        with ``--env-aggregate`` (a return-scale objective) or their raw values' mean (another).
        Used to score re-evaluations on fresh seeds as the trials were scored.
        """
        norm = self._normalizer(study, runs)
        seeds = list(dict.fromkeys(result.seed for _, result in runs))
        scores: dict[str, list[float]] = {}
        for objective in self.objectives:
            scores[objective.name] = []
            for seed in seeds:
                values = [self._value(objective, env, r, norm) for env, r in runs if r.seed == seed]
                how = self.env_aggregate if objective.name in NORMALIZED_OBJECTIVES else "mean"
                scores[objective.name].append(aggregate(values, how))
        return scores

    def _value(self, objective: ObjectiveSpec, env: str, result: RunResult, norm: _Normalizer) -> float:
        """Return one run's value on ``objective``: normalised per env for a return-scale objective."""
        value = objective(result, self.objective_metric)
        return norm(env, value) if objective.name in NORMALIZED_OBJECTIVES else value

    def _reporter(
        self, trial: optuna.Trial, done: list[tuple[str, RunResult]], env: str, norm: _Normalizer
    ) -> Callable[[RunResult], bool] | None:
        """Return the per-evaluation report of run ``len(done)`` on ``env``; it returns False to prune.

        One objective: the runs' running aggregate at step ``offset + index`` (``trial.report``).
        Several objectives: each objective on the run so far, to OptunaHub's ``multi_metric_pruner``
        (``trial.report`` is refused there); with another pruner there are no per-evaluation reports.
        ``offset`` is the number of steps the earlier runs may use: ``n_evaluations`` each, or the
        evaluations they actually made if more (on-policy rollouts overshoot the budget), so the
        steps of one run never meet the next run's.
        """
        if self.seed_racing:
            return None
        offset = step_offset([r for _, r in done], self.exp.n_evaluations)
        if len(self.objectives) > 1:
            if type(trial.study.pruner).__name__ != "MultiMetricPruner":
                return None
            multi = _multi_metric_trial(trial)

            def on_eval_multi(result: RunResult) -> bool:
                values = {o.name: self._value(o, env, result, norm) for o in self.objectives}
                multi.report({k: v for k, v in values.items() if math.isfinite(v)}, offset + len(result.curve))
                return not multi.should_prune()

            return on_eval_multi

        def on_eval(result: RunResult) -> bool:
            index = len(result.curve)
            values = [norm(e, r.curve[index - 1]["mean_reward"]) for e, r in done if len(r.curve) >= index]
            values.append(norm(env, result.curve[-1]["mean_reward"]))
            trial.report(aggregate(values, self.seed_aggregate), offset + index)
            return not trial.should_prune()

        return on_eval

    def _race(self, trial: optuna.Trial, runs: list[tuple[str, RunResult]], n_runs: int, norm: _Normalizer) -> bool:
        """Report the last run's score at step = its index; return whether the pruner stops the trial there.

        The score is the objective on that run alone: a paired test (WilcoxonPruner) compares
        trials run by run. With several objectives the runs' scores so far go to ``per_seed`` and
        the pruner is asked directly (Pareto dominance; ``trial.report`` is refused there). After
        the last run the trial completes whatever the pruner says. A stopped trial records the
        scores of the runs it made (``per_seed``) and ``seeds_run``.
        """
        scores = {o.name: [self._value(o, env, r, norm) for env, r in runs] for o in self.objectives}
        trial.set_user_attr(TrialAttr.SEEDS_RUN, len(runs))
        if len(self.objectives) == 1:
            trial.report(scores[self.objectives[0].name][-1], len(runs) - 1)
            prune = len(runs) < n_runs and trial.should_prune()
        else:
            trial.set_user_attr(TrialAttr.PER_SEED, scores)
            prune = len(runs) < n_runs and trial.study.pruner.prune(trial.study, _frozen(trial))
        if not prune:
            return False
        trial.set_user_attr(TrialAttr.PER_SEED, scores)
        _logger.info("Trial %d raced out after %d of %d runs: %s", trial.number, len(runs), n_runs, scores)
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
        kwargs = self.kwargs_per_env(trial)
        if self.seed_racing:
            seeds = racing_seeds(exp.seed, self.n_seeds)
        else:
            seeds = trial_seeds(exp.seed, trial.number, self.n_seeds)
        # Read per trial, not at import: a forked worker is another process than its launcher.
        trial.set_user_attr(WORKER_ATTR, worker_identity())
        trial.set_user_attr(TrialAttr.SEED, seeds[0])
        trial.set_user_attr(TrialAttr.SEEDS, seeds)
        trial.set_user_attr(TrialAttr.OBJECTIVES, [o.name for o in self.objectives])
        inference = any(o.needs_inference for o in self.objectives)
        pairs = [(env, seed) for seed in seeds for env in self.envs]
        runs: list[tuple[str, RunResult]] = []
        norm = self._normalizer(trial.study, runs)
        steps = [0] * len(pairs)
        try:
            for k, (env, seed) in enumerate(pairs):
                log_path = None
                if exp.optimization_log_path:
                    parts = [f"trial_{trial.number}", *([env.env_id] if self.multi_env else []), f"seed_{seed}"]
                    log_path = os.path.join(exp.optimization_log_path, *parts)
                model_path = self.model_dir / f"trial_{trial.number}.zip" if self.model_dir and k == 0 else None
                on_eval = self._reporter(trial, runs, env.env_id, norm)
                result = train_run(env, kwargs[env.env_id], seed, on_eval=on_eval, log_path=log_path,
                                   model_path=model_path, measure_inference=inference,
                                   on_steps=_step_counter(trial, steps, k))  # fmt: skip
                runs.append((env.env_id, result))
                if result.diverged:
                    where = f" on {env.env_id}" if self.multi_env else ""
                    raise self._fail(trial, f"diverged: the evaluation return of seed {seed}{where} is not finite")
                if result.stopped:
                    raise self._prune(trial, pruner_rule(trial.study.pruner, trial.number), "")
                if self.seed_racing and self._race(trial, runs, len(pairs), norm):
                    reason = f"raced out after {len(runs)} of {len(pairs)} runs"
                    raise self._prune(trial, pruner_rule(trial.study.pruner, trial.number), reason)
        except (optuna.TrialPruned, TrialFailed, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise self._fail(trial, f"training failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self._record_runs(trial, runs, norm)
        try:
            per_seed = {o.name: [self._value(o, env, r, norm) for env, r in runs] for o in self.objectives}
            values = tuple(self._aggregate(o, per_seed[o.name], runs) for o in self.objectives)
        except Exception as exc:
            raise self._fail(trial, f"objective failed: {type(exc).__name__}: {exc}") from exc
        bad = [o.name for o, v in zip(self.objectives, values, strict=True) if not math.isfinite(v)]
        if bad:
            raise self._fail(trial, f"objective {', '.join(bad)} is not finite: {values}")
        trial.set_user_attr(TrialAttr.PER_SEED, per_seed)
        return values[0] if len(values) == 1 else values

    def _aggregate(self, objective: ObjectiveSpec, scores: list[float], runs: list[tuple[str, RunResult]]) -> float:
        """Return the trial's value on ``objective``: its runs' scores aggregated (by env first on several envs)."""
        if not (self.multi_env and objective.name in NORMALIZED_OBJECTIVES):
            return aggregate(scores, self.seed_aggregate)
        by_env: dict[str, list[float]] = {}
        for (env, _), score in zip(runs, scores, strict=True):
            by_env.setdefault(env, []).append(score)
        return env_value(by_env, seed_aggregate=self.seed_aggregate, env_aggregate=self.env_aggregate)

    def _record_runs(self, trial: optuna.Trial, runs: list[tuple[str, RunResult]], norm: _Normalizer) -> None:
        if not runs:
            return
        results = [r for _, r in runs]
        trial.set_user_attr(TrialAttr.N_PARAMS, results[0].n_params)
        if results[0].normalize_gamma is not None:
            trial.set_user_attr(TrialAttr.NORMALIZE_GAMMA, results[0].normalize_gamma)
        trial.set_user_attr(TrialAttr.TRAIN_TIME, sum(r.train_time for r in results))
        trial.set_user_attr(TrialAttr.N_UPDATES, sum(r.n_updates for r in results))
        main = [r for env, r in runs if env == self.exp.env_id]  # the curves of --env (one return scale)
        curve = []
        for index, point in enumerate(main[0].curve):
            seeds = [r.curve[index] for r in main if len(r.curve) > index]
            mean = aggregate([p["mean_reward"] for p in seeds], self.seed_aggregate)
            std = float(np.mean([p["std_reward"] for p in seeds]))
            curve.append({"timesteps": point["timesteps"], "mean_reward": mean, "std_reward": std})
        trial.set_user_attr(TrialAttr.EVALUATIONS, curve)
        if self.n_seeds > 1:  # a raced-out trial may have run one seed: the per-seed record stays
            trial.set_user_attr(TrialAttr.EVALUATIONS_PER_SEED, [r.curve for r in main])
        if self.multi_env:
            trial.set_user_attr(TrialAttr.PER_ENV, self._per_env(runs, norm))

    def _per_env(self, runs: list[tuple[str, RunResult]], norm: _Normalizer) -> dict[str, Any]:
        """Return per env the raw and normalised return of each run (seed) it made, and its ``lo``/``hi``."""
        per_env: dict[str, Any] = {}
        for env, result in runs:
            if not result.curve:
                continue
            entry = per_env.setdefault(env, {"raw": [], "normalized": [], "seeds": []})
            raw = norm.raw(result)
            entry["raw"].append(raw)
            entry["normalized"].append(norm(env, raw))
            entry["seeds"].append(result.seed)
        for env, entry in per_env.items():
            entry.update(lo=self.score_ranges[env].lo, hi=norm.hi(env))
        return per_env


def _frozen(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """Return the stored state of running ``trial`` (what a pruner is given)."""
    (frozen,) = (
        t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number == trial.number
    )
    return frozen


def _multi_metric_trial(trial: optuna.Trial) -> Any:
    """Return ``MultiMetricPrunerTrial`` of the study's pruner's package (OptunaHub ``multi_metric_pruner``)."""
    package = type(trial.study.pruner).__module__.rpartition(".")[0]
    return sys.modules[package].MultiMetricPrunerTrial(trial)
