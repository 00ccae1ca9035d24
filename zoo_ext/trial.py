"""Runs one trial: kwargs from the search space, train, evaluate, report, record.

A trial whose space returns a key the algorithm does not accept, whose model cannot be built or
whose training diverges (NaN) ends as FAIL with user attribute ``fail_reason``; the study goes on.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import sync_envs_normalization

from zoo_ext import record
from zoo_ext.spaces._probe import InvalidSearchSpaceError, check_keys

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

    from zoo_ext.spaces import SearchSpace
    from zoo_ext.zoo import ZooExperiment

__all__ = ["Objective", "TrialEvalCallback", "TrialFailed", "trial_seed"]

_logger = logging.getLogger(__name__)

#: Dict kwargs that a search space's values are merged into instead of replacing.
MERGED_KWARGS = ("policy_kwargs", "replay_buffer_kwargs")


class TrialFailed(Exception):
    """The trial cannot give a value; it is recorded as FAIL and the study continues."""


def n_params(model: BaseAlgorithm) -> int:
    """Return the number of trainable parameters of ``model``'s policy."""
    return sum(p.numel() for p in model.policy.parameters() if p.requires_grad)


def trial_seed(study_seed: int, number: int) -> int:
    """Return the training seed of trial ``number``: distinct per trial, reproducible per study seed."""
    return (study_seed + number) % 2**31


class TrialEvalCallback(BaseCallback):
    """Evaluates the agent every ``eval_freq`` calls, reports to the trial, records the curve."""

    def __init__(
        self,
        eval_env: VecEnv,
        trial: optuna.Trial,
        *,
        n_eval_episodes: int,
        eval_freq: int,
        deterministic: bool,
        log_path: str | None = None,
    ) -> None:
        super().__init__()
        self.eval_env = eval_env
        self.trial = trial
        self.n_eval_episodes = n_eval_episodes
        self.eval_freq = eval_freq
        self.deterministic = deterministic
        self.log_path = log_path
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
        mean = self.evaluate()
        if not math.isfinite(mean):
            self.diverged = True
            return False
        self.trial.report(mean, len(self.curve))
        if self.trial.should_prune():
            self.is_pruned = True
            return False
        return True


class Objective:
    """The objective of a zoo study: one training run of the algorithm per trial."""

    def __init__(
        self, experiment: ZooExperiment, space: SearchSpace, space_name: str, *, model_dir: Path | None = None
    ) -> None:
        self.exp = experiment
        self.space = space
        self.space_name = space_name
        #: Where completed trials save their model (``trial_<number>.zip``); None: not saved.
        self.model_dir = model_dir

    def _fail(self, trial: optuna.Trial, reason: str) -> TrialFailed:
        trial.set_user_attr("fail_reason", reason)
        _logger.warning("Trial %d failed: %s", trial.number, reason)
        return TrialFailed(reason)

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Return the constructor kwargs of ``trial`` and record them as its ``hyperparams``."""
        exp = self.exp
        trial.set_user_attr(record.SPACE_ATTR, self.space_name)
        sampled = self.space(trial, exp.n_actions, exp.n_envs, exp.additional_args())
        try:
            check_keys(sampled, exp.algo_class, self.space_name)
        except InvalidSearchSpaceError as exc:
            raise self._fail(trial, str(exc)) from exc
        kwargs = exp.base_kwargs()
        for key, value in sampled.items():
            base = kwargs.get(key)
            # A space's policy_kwargs refine the config's (e.g. keep its log_std_init) rather than replace them.
            merge = key in MERGED_KWARGS and isinstance(value, dict) and isinstance(base, dict)
            kwargs[key] = {**base, **value} if merge and isinstance(base, dict) else value
        try:
            trial.set_user_attr(record.RECORD_ATTR, record.encode(kwargs))
        except record.RecordError as exc:
            raise self._fail(trial, str(exc)) from exc
        return kwargs

    def __call__(self, trial: optuna.Trial) -> float:
        exp = self.exp
        kwargs = self.sample(trial)
        seed = trial_seed(exp.seed, trial.number)
        trial.set_user_attr("seed", seed)
        env = eval_env = callback = None
        path = os.path.join(exp.optimization_log_path, f"trial_{trial.number}") if exp.optimization_log_path else None
        start = time.perf_counter()
        try:
            env = exp.make_env(exp.n_envs)
            model = exp.algo_class(
                env=env,
                tensorboard_log=None,
                seed=seed,
                verbose=exp.verbose if exp.verbose >= 2 else 0,
                device=exp.device,
                **kwargs,
            )
            trial.set_user_attr("n_params", n_params(model))
            eval_env = exp.make_env(exp.n_eval_envs, eval_env=True)
            eval_freq = max(int(exp.n_timesteps / exp.n_evaluations) // exp.n_envs, 1)
            callback = TrialEvalCallback(
                eval_env,
                trial,
                n_eval_episodes=exp.n_eval_episodes,
                eval_freq=eval_freq,
                deterministic=exp.deterministic_eval,
                log_path=path,
            )
            model.learn(exp.n_timesteps, callback=[*exp.extra_callbacks(), callback], **exp.learn_kwargs(model))
            if not callback.curve and not callback.is_pruned:
                callback.evaluate()
            if self.model_dir is not None and not (callback.is_pruned or callback.diverged):
                model.save(self.model_dir / f"trial_{trial.number}.zip")
        except (optuna.TrialPruned, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise self._fail(trial, f"training failed: {type(exc).__name__}: {exc}") from exc
        finally:
            trial.set_user_attr("train_time", time.perf_counter() - start)
            if callback is not None:
                trial.set_user_attr("evaluations", callback.curve)
            for vec_env in (env, eval_env):
                if vec_env is not None:
                    vec_env.close()
        if callback.diverged:
            raise self._fail(trial, "diverged: the evaluation return is not finite")
        if callback.is_pruned:
            raise optuna.TrialPruned()
        return callback.curve[-1]["mean_reward"]
