"""What a study needs to know of the experiment it tunes: the :class:`Experiment` protocol.

The integration with rl_zoo3 implements it as a facade over rl_zoo3's experiment manager
(:class:`zoo_ext.integration.ZooExperiment`); the study and the trials read only this protocol,
so nothing below the integration knows that rl_zoo3 exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecEnv

    from zoo_ext.options import ZooOptions

__all__ = ["Experiment"]


class Experiment(Protocol):
    """One ``-optimize`` run: the env, the algorithm, the budget flags and how to build envs and models.

    The study flags (``storage``, ``study_name``, ``sampler_seed``, ``max_total_trials``,
    ``n_jobs``, ``pruner_used``) may be filled in or changed while the study is set up.
    """

    options: ZooOptions
    #: The env's hyperparams entry (the config a trial's record is exported on top of).
    config: dict[str, Any]
    algo: str
    env_id: str
    seed: int
    sampler_seed: int
    n_envs: int
    n_actions: int
    n_timesteps: int
    n_evaluations: int
    n_eval_episodes: int
    n_eval_envs: int
    deterministic_eval: bool
    device: Any
    verbose: int
    storage: str | None
    study_name: str | None
    n_trials: int
    max_total_trials: int | None
    n_jobs: int
    n_startup_trials: int
    log_folder: str
    optimization_log_path: str | None
    no_optim_plots: bool
    pruner_used: str

    @property
    def algo_class(self) -> type[BaseAlgorithm]:
        """Return the algorithm's class."""
        ...

    def base_kwargs(self) -> dict[str, Any]:
        """Return a copy of the env's constructor kwargs before sampling."""
        ...

    def additional_args(self) -> dict[str, Any]:
        """Return the ``additional_args`` a search space receives."""
        ...

    def make_env(self, n_envs: int, *, eval_env: bool = False, gamma: float | None = None) -> VecEnv:
        """Return a new VecEnv (``gamma``: the discount VecNormalize uses, if it normalises rewards)."""
        ...

    def extra_callbacks(self) -> list[BaseCallback]:
        """Return fresh instances of the callbacks the env's config asks for."""
        ...

    def learn_kwargs(self, model: BaseAlgorithm) -> dict[str, Any]:
        """Return extra ``learn()`` kwargs."""
        ...
