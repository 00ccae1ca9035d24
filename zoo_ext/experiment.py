"""What a study needs to know of the experiment it tunes: the :class:`Experiment` protocol.

The integration with rl_zoo3 implements it as a facade over rl_zoo3's experiment manager
(:class:`zoo_ext.integration.ZooExperiment`); the study and the trials read only this protocol,
so nothing below the integration knows that rl_zoo3 exists.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecEnv

    from zoo_ext.options import ZooOptions

__all__ = ["Experiment"]


class Experiment(Protocol):
    """One ``-optimize`` run: the env, the algorithm, the budget flags and how to build envs and models.

    Read-only: what the study decides while it is set up comes back from
    :func:`zoo_ext.study.create_study` as a :class:`~zoo_ext.study.StudySetup`, not written here.
    """

    @property
    def options(self) -> ZooOptions:
        """zoo_ext's resolved options."""
        ...

    @property
    def config(self) -> dict[str, Any]:
        """The env's hyperparams entry (the config a trial's record is exported on top of)."""
        ...

    @property
    def algo(self) -> str:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def env_id(self) -> str:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def seed(self) -> int:
        """The study's seed (``--seed``)."""
        ...

    @property
    def n_envs(self) -> int:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def n_actions(self) -> int:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def n_timesteps(self) -> int:
        """``-n``: env steps per training run."""
        ...

    @property
    def n_evaluations(self) -> int:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def n_eval_episodes(self) -> int:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def n_eval_envs(self) -> int:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def deterministic_eval(self) -> bool:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def device(self) -> Any:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def verbose(self) -> int:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def storage(self) -> str | None:
        """``--storage`` (a journal file in the log folder for ``--n-workers``), resolved."""
        ...

    @property
    def study_name(self) -> str | None:
        """``--study-name``, or the generated name of a resumable study."""
        ...

    @property
    def n_trials(self) -> int:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def max_total_trials(self) -> int | None:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def n_jobs(self) -> int:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def n_startup_trials(self) -> int:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def log_folder(self) -> str:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def optimization_log_path(self) -> str | None:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def no_optim_plots(self) -> bool:
        """See rl_zoo3: the flag of the same name."""
        ...

    @property
    def tuned_config_path(self) -> Path:
        """The zoo's own tuned hyperparams file for the algorithm (warm start, baseline)."""
        ...

    @property
    def worker_main(self) -> Callable[[], object]:
        """What a forked worker runs: the zoo's ``train()``, as the worker command would."""
        ...

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

    def for_env(self, env_id: str) -> Experiment:
        """Return this experiment on ``env_id`` (``--tune-envs``): that env's own config, the same flags."""
        ...
