"""Training and evaluating one agent: what a trial does once per seed, and what a re-evaluation repeats.

:func:`train_run` builds the model from the constructor kwargs, trains it for ``-n`` env steps with
an evaluation callback (:class:`TrialEvalCallback`) that records the curve and asks whether to go on,
and returns a :class:`~zoo_ext.objectives.RunResult`. Nothing here knows Optuna.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import sync_envs_normalization

from zoo_ext.ceiling import gradient_steps
from zoo_ext.objectives import RunResult

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

    from zoo_ext.experiment import Experiment

__all__ = ["TrialEvalCallback", "inference_ms", "n_params", "train_run"]


def n_params(model: BaseAlgorithm) -> int:
    """Return the number of trainable parameters of ``model``'s policy."""
    return sum(p.numel() for p in model.policy.parameters() if p.requires_grad)


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
    on_eval: Callable[[RunResult], bool] | None = None,
    log_path: str | None = None,
    model_path: Path | None = None,
    measure_inference: bool = False,
    on_steps: Callable[[int], None] | None = None,
    callbacks: Sequence[BaseCallback] = (),
    n_timesteps: int | None = None,
) -> RunResult:
    """Train one agent with ``kwargs`` and ``seed`` and return its evaluations; raises on errors.

    ``on_eval(result)`` is called after each evaluation with the run so far (its curve, and its
    ``train_time`` up to now); False stops the run (``stopped``). A run whose evaluation is not
    finite stops with ``diverged``. ``on_steps(n)``
    receives the env steps trained so far before each evaluation and once more when the run
    ends, whether it completes, stops or raises. ``callbacks`` run beside the evaluation (e.g. a
    population's schedule); ``n_timesteps`` replaces ``-n``.
    """
    n_timesteps = n_timesteps or exp.n_timesteps
    result = RunResult(seed=seed)
    env = eval_env = None
    model: BaseAlgorithm | None = None
    start = time.perf_counter()
    learned = 0.0
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

        def report(index: int, mean: float) -> bool:
            result.train_time = time.perf_counter() - start
            return on_eval is None or on_eval(result)

        callback = TrialEvalCallback(
            eval_env,
            n_eval_episodes=exp.n_eval_episodes,
            eval_freq=max(int(n_timesteps / exp.n_evaluations) // exp.n_envs, 1),
            deterministic=exp.deterministic_eval,
            on_eval=report,
            log_path=log_path,
            on_steps=on_steps,
        )
        result.curve = callback.curve
        model.learn(n_timesteps, callback=[*exp.extra_callbacks(), *callbacks, callback], **exp.learn_kwargs(model))
        learned = time.perf_counter() - start
        if not callback.curve and not callback.is_pruned:
            callback.evaluate()
        result.stopped, result.diverged = callback.is_pruned, callback.diverged
        if measure_inference and not (result.stopped or result.diverged):
            result.inference_ms = inference_ms(model, eval_env)
        if model_path is not None and not (result.stopped or result.diverged):
            model.save(model_path)
    finally:
        result.train_time = learned or time.perf_counter() - start
        if model is not None:
            result.n_updates = gradient_steps(model)
        if on_steps is not None and model is not None:
            on_steps(int(model.num_timesteps))
        for vec_env in (env, eval_env):
            if vec_env is not None:
                vec_env.close()
    return result
