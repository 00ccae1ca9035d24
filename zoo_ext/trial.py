"""Runs one trial: kwargs from the search space, train, evaluate, report, record.

A trial whose space returns a key the algorithm does not accept, whose model cannot be built or
whose training diverges (NaN) ends as FAIL with user attribute ``fail_reason``; the study goes on.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import sync_envs_normalization

from zoo_ext import record
from zoo_ext.ceiling import BudgetError, fit_to_budget, gradient_steps
from zoo_ext.objectives import Objective as ObjectiveSpec
from zoo_ext.objectives import RunResult, aggregate, resolve_objectives
from zoo_ext.spaces._probe import InvalidSearchSpaceError, check_keys
from zoo_ext.storage import ENV_STEPS_ATTR, WORKER_ATTR, worker_identity

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

    from zoo_ext.experiment import Experiment
    from zoo_ext.spaces import SearchSpace

__all__ = [
    "CLIPPED_ATTR",
    "N_UPDATES_ATTR",
    "PRUNE_REASON_ATTR",
    "Objective",
    "TrialEvalCallback",
    "TrialFailed",
    "merge_kwargs",
    "racing_seeds",
    "step_offset",
    "train_run",
    "trial_seeds",
]

_logger = logging.getLogger(__name__)

#: Trial user attribute: the kwargs :func:`zoo_ext.ceiling.fit_to_budget` changed, ``{key: {"from": .., "to": ..}}``.
CLIPPED_ATTR = "clipped"
#: Trial user attribute: why a trial was pruned before it trained (its kwargs cannot fit ``-n``).
PRUNE_REASON_ATTR = "prune_reason"
#: Trial user attribute: the gradient steps its seeds took (:func:`zoo_ext.ceiling.gradient_steps`).
N_UPDATES_ATTR = "n_updates"
#: Dict kwargs that a search space's values are merged into instead of replacing.
MERGED_KWARGS = ("policy_kwargs", "replay_buffer_kwargs")


class TrialFailed(Exception):
    """The trial cannot give a value; it is recorded as FAIL and the study continues."""


def n_params(model: BaseAlgorithm) -> int:
    """Return the number of trainable parameters of ``model``'s policy."""
    return sum(p.numel() for p in model.policy.parameters() if p.requires_grad)


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


class TrialEvalCallback(BaseCallback):
    """Evaluates the agent every ``eval_freq`` calls, records the curve, asks ``on_eval`` whether to go on."""

    def __init__(
        self,
        eval_env: VecEnv,
        *,
        n_eval_episodes: int,
        eval_freq: int,
        deterministic: bool,
        on_eval: Callable[[int, float], bool] | None = None,
        log_path: str | None = None,
        on_steps: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        self.eval_env = eval_env
        self.n_eval_episodes = n_eval_episodes
        self.eval_freq = eval_freq
        self.deterministic = deterministic
        self.on_eval = on_eval
        self.log_path = log_path
        #: Called with the env steps trained so far before each evaluation.
        self.on_steps = on_steps
        #: One entry per evaluation: timesteps, mean and std of the episode returns.
        self.curve: list[dict[str, float]] = []
        self.is_pruned = False
        self.diverged = False

    def evaluate(self) -> float:
        """Evaluate now, append to the curve and return the mean return."""
        if self.model.get_vec_normalize_env() is not None:
            sync_envs_normalization(self.training_env, self.eval_env)
        rewards, _ = evaluate_policy(
            self.model,
            self.eval_env,
            n_eval_episodes=self.n_eval_episodes,
            deterministic=self.deterministic,
            return_episode_rewards=True,
            warn=False,
        )
        mean = float(np.mean(rewards))
        self.curve.append(
            {"timesteps": int(self.num_timesteps), "mean_reward": mean, "std_reward": float(np.std(rewards))}
        )
        if self.log_path is not None:
            os.makedirs(self.log_path, exist_ok=True)
            if mean >= max(point["mean_reward"] for point in self.curve):
                self.model.save(os.path.join(self.log_path, "best_model"))
            np.savez(
                os.path.join(self.log_path, "evaluations"),
                timesteps=[p["timesteps"] for p in self.curve],
                mean_reward=[p["mean_reward"] for p in self.curve],
            )
        return mean

    def _on_step(self) -> bool:
        if self.eval_freq <= 0 or self.n_calls % self.eval_freq != 0:
            return True
        if self.on_steps is not None:
            self.on_steps(int(self.num_timesteps))
        mean = self.evaluate()
        if not math.isfinite(mean):
            self.diverged = True
            return False
        if self.on_eval is not None and not self.on_eval(len(self.curve), mean):
            self.is_pruned = True
            return False
        return True


def inference_ms(model: BaseAlgorithm, env: VecEnv, *, calls: int = 200) -> float:
    """Return the mean milliseconds of one deterministic ``predict`` on one observation."""
    obs: Any = env.reset()
    model.predict(obs, deterministic=True)  # warm-up
    start = time.perf_counter()
    for _ in range(calls):
        model.predict(obs, deterministic=True)
    return (time.perf_counter() - start) * 1000 / calls


def train_run(
    exp: Experiment,
    kwargs: dict[str, Any],
    seed: int,
    *,
    on_eval: Callable[[int, float], bool] | None = None,
    log_path: str | None = None,
    model_path: Path | None = None,
    measure_inference: bool = False,
    on_steps: Callable[[int], None] | None = None,
) -> RunResult:
    """Train one agent with ``kwargs`` and ``seed`` and return its evaluations; raises on errors.

    ``on_eval(index, mean_reward)`` is called after each evaluation; False stops the run
    (``stopped``). A run whose evaluation is not finite stops with ``diverged``. ``on_steps(n)``
    receives the env steps trained so far before each evaluation and once more when the run
    ends, whether it completes, stops or raises.
    """
    result = RunResult(seed=seed)
    env = eval_env = None
    model: BaseAlgorithm | None = None
    start = time.perf_counter()
    try:
        # VecNormalize discounts rewards with the trial's gamma, as rl_zoo3 does outside a study.
        gamma = kwargs.get("gamma")
        env = exp.make_env(exp.n_envs, gamma=gamma)
        model = exp.algo_class(
            env=env,
            tensorboard_log=None,
            seed=seed,
            verbose=exp.verbose if exp.verbose >= 2 else 0,
            device=exp.device,
            **kwargs,
        )
        result.n_params = n_params(model)
        vec_normalize = model.get_vec_normalize_env()
        result.normalize_gamma = float(vec_normalize.gamma) if vec_normalize is not None else None
        eval_env = exp.make_env(exp.n_eval_envs, eval_env=True, gamma=gamma)
        callback = TrialEvalCallback(
            eval_env,
            n_eval_episodes=exp.n_eval_episodes,
            eval_freq=max(int(exp.n_timesteps / exp.n_evaluations) // exp.n_envs, 1),
            deterministic=exp.deterministic_eval,
            on_eval=on_eval,
            log_path=log_path,
            on_steps=on_steps,
        )
        result.curve = callback.curve
        model.learn(exp.n_timesteps, callback=[*exp.extra_callbacks(), callback], **exp.learn_kwargs(model))
        result.train_time = time.perf_counter() - start
        if not callback.curve and not callback.is_pruned:
            callback.evaluate()
        result.stopped, result.diverged = callback.is_pruned, callback.diverged
        if measure_inference and not (result.stopped or result.diverged):
            result.inference_ms = inference_ms(model, eval_env)
        if model_path is not None and not (result.stopped or result.diverged):
            model.save(model_path)
    finally:
        result.train_time = result.train_time or time.perf_counter() - start
        if model is not None:
            result.n_updates = gradient_steps(model)
        if on_steps is not None and model is not None:
            on_steps(int(model.num_timesteps))
        for vec_env in (env, eval_env):
            if vec_env is not None:
                vec_env.close()
    return result


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

    def _fail(self, trial: optuna.Trial, reason: str) -> TrialFailed:
        trial.set_user_attr("fail_reason", reason)
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

    def _fit_to_budget(self, trial: optuna.Trial, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Return ``kwargs`` fitted under the ``-n`` ceiling (user attribute ``clipped``); prune what cannot fit."""
        exp = self.exp
        try:
            kwargs, clipped = fit_to_budget(exp.algo_class, kwargs, n_timesteps=exp.n_timesteps, n_envs=exp.n_envs)
        except BudgetError as exc:
            trial.set_user_attr(PRUNE_REASON_ATTR, str(exc))
            _logger.info("Trial %d pruned before training: %s", trial.number, exc)
            raise optuna.TrialPruned(str(exc)) from exc
        if clipped:
            trial.set_user_attr(CLIPPED_ATTR, clipped)
            changes = ", ".join(f"{key} {change['from']} -> {change['to']}" for key, change in clipped.items())
            _logger.info("Trial %d fitted under -n %d: %s", trial.number, exp.n_timesteps, changes)
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
        trial.set_user_attr("seeds_run", len(results))
        if len(results) == n_seeds or not trial.should_prune():
            return False
        trial.set_user_attr("per_seed", {objective.name: scores})
        _logger.info("Trial %d raced out after %d of %d seeds: %s", trial.number, len(results), n_seeds, scores)
        return True

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        """Return the trial's value(s); any error fails the trial (:class:`TrialFailed`), never the study."""
        try:
            return self._call(trial)
        except (optuna.TrialPruned, TrialFailed):
            raise
        except KeyboardInterrupt as exc:
            trial.set_user_attr("fail_reason", f"interrupted by {getattr(exc, 'signal_name', 'SIGINT')}")
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
        trial.set_user_attr("seed", seeds[0])
        trial.set_user_attr("seeds", seeds)
        trial.set_user_attr("objectives", [o.name for o in self.objectives])
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
        trial.set_user_attr("per_seed", per_seed)
        return values[0] if single else values

    def _record_runs(self, trial: optuna.Trial, results: list[RunResult]) -> None:
        if not results:
            return
        trial.set_user_attr("n_params", results[0].n_params)
        if results[0].normalize_gamma is not None:
            trial.set_user_attr("normalize_gamma", results[0].normalize_gamma)
        trial.set_user_attr("train_time", sum(r.train_time for r in results))
        trial.set_user_attr(N_UPDATES_ATTR, sum(r.n_updates for r in results))
        curve = []
        for index, point in enumerate(results[0].curve):
            seeds = [r.curve[index] for r in results if len(r.curve) > index]
            mean = aggregate([p["mean_reward"] for p in seeds], self.seed_aggregate)
            std = float(np.mean([p["std_reward"] for p in seeds]))
            curve.append({"timesteps": point["timesteps"], "mean_reward": mean, "std_reward": std})
        trial.set_user_attr("evaluations", curve)
        if self.n_seeds > 1:  # a raced-out trial may have run one seed: the per-seed record stays
            trial.set_user_attr("evaluations_per_seed", [r.curve for r in results])
