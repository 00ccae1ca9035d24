"""The integration with rl_zoo3: its patches, its parser and the facade over its experiment manager.

zoo_ext plugs into the unchanged ``python -m rl_zoo3.train`` by patching three methods of
rl_zoo3's ``ExperimentManager`` and the ``argparse`` (and ``print``) references of ``rl_zoo3.train`` (both
obtained from :mod:`zoo_ext.adapter`, the one module importing rl_zoo3). Everything below this
layer reads the experiment through :class:`ZooExperiment`, a facade over the manager's attributes
that satisfies :class:`zoo_ext.experiment.Experiment`. ``PATCHED_METHODS`` and
``TOUCHED_ATTRIBUTES`` list what is used of the manager; a test checks each one against the
installed rl_zoo3 so an upstream change fails loudly.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import threading
import types
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from zoo_ext import adapter
from zoo_ext.attrs import TrialAttr

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecEnv

    from zoo_ext.options import ZooOptions

__all__ = ["PATCHED_METHODS", "TOUCHED_ATTRIBUTES", "ZooExperiment", "install", "is_installed", "patch_train_module"]

_logger = logging.getLogger(__name__)

#: ExperimentManager methods zoo_ext replaces (each wraps or reimplements the stock one).
PATCHED_METHODS = ("read_hyperparameters", "hyperparameters_optimization", "_save_config")
#: ExperimentManager methods and instance attributes ZooExperiment reads after ``setup_experiment``.
TOUCHED_ATTRIBUTES = (
    "algo", "env_name", "seed", "n_envs", "n_actions", "_hyperparams", "n_timesteps", "n_evaluations",
    "n_eval_episodes", "n_eval_envs", "deterministic_eval", "device", "verbose", "specified_callbacks",
    "storage", "study_name", "n_trials", "max_total_trials", "n_jobs", "n_startup_trials",
    "log_folder", "optimization_log_path", "no_optim_plots", "args", "trial_id", "custom_hyperparams",
    "params_path", "create_envs", "normalize", "normalize_kwargs", "optimize_hyperparameters",
    # for_env (--tune-envs): the env-dependent state a manager is re-read with for another env.
    "env_name", "_is_atari", "is_atari", "is_minigrid", "env_kwargs", "eval_env_kwargs", "frame_stack",
    "monitor_kwargs", "env_wrapper", "callbacks", "vec_env_wrapper", "_preprocess_hyperparams",
    "_preprocess_action_noise",
)  # fmt: skip
#: Files the stock ``_save_config`` writes to the run's params folder (args.yml holds --storage).
SAVED_CONFIG_FILES = ("args.yml", "config.yml", "command.txt")

_ORIGINALS: dict[str, Callable[..., Any]] = {}
#: Serialises env creation: ``make_env`` swaps the manager's VecNormalize kwargs (``--n-jobs`` threads).
_ENV_LOCK = threading.Lock()
_PATCHED_FLAG = "__zoo_ext_patched__"


def is_installed() -> bool:
    """Return True once the ExperimentManager patches are in place."""
    em = sys.modules.get("rl_zoo3.exp_manager")
    return em is not None and getattr(em.ExperimentManager, _PATCHED_FLAG, False)


def install() -> None:
    """Patch ExperimentManager and the running train module; idempotent."""
    ExperimentManager: Any = adapter.experiment_manager_class()
    if not getattr(ExperimentManager, _PATCHED_FLAG, False):
        for name in PATCHED_METHODS:
            _ORIGINALS[name] = getattr(ExperimentManager, name)
        # read_hyperparameters: strip the `zoo_ext:` block, resolve options, load --trial-id records.
        ExperimentManager.read_hyperparameters = _read_hyperparameters  # type: ignore[method-assign]
        # hyperparameters_optimization: the whole study runs through zoo_ext.study.
        ExperimentManager.hyperparameters_optimization = _hyperparameters_optimization  # type: ignore[method-assign]
        # _save_config: also write hyperparams.json, and redact passwords in the files it writes.
        ExperimentManager._save_config = _save_config  # type: ignore[method-assign]
        setattr(ExperimentManager, _PATCHED_FLAG, True)
    main = sys.modules.get("__main__")
    if main is not None and getattr(getattr(main, "__spec__", None), "name", None) == "rl_zoo3.train":
        patch_train_module(main)
    train = adapter.train_module()
    if train is not None:
        patch_train_module(train)


def patch_train_module(module: types.ModuleType) -> None:
    """Make ``train()`` in ``module`` build zoo_ext's parser (rl_zoo3.train creates it inline) and print its seed once.

    ``train()`` prints ``Seed: N`` before the manager exists; with ``--trial-id`` the seed becomes the
    trial's, so :func:`_train_print` holds that line back and ``read_hyperparameters`` prints the true one.
    """
    if getattr(module, "argparse", None) is argparse:
        shim = types.ModuleType("argparse")
        shim.__dict__.update(argparse.__dict__)
        shim.ArgumentParser = ZooArgumentParser  # type: ignore[attr-defined]
        module.argparse = shim  # type: ignore[attr-defined]
    if "print" not in vars(module):
        module.print = _train_print  # type: ignore[attr-defined]


#: The stock ``Seed:`` line held back until ``read_hyperparameters`` knows the seed (``--trial-id``).
_HELD_SEED_LINE: list[str] = []


def _train_print(*values: Any, **kwargs: Any) -> None:
    """``print`` as ``rl_zoo3.train`` sees it: its ``Seed: N`` line waits when ``--trial-id`` may replace the seed."""
    text = values[0] if len(values) == 1 else None
    if isinstance(text, str) and text.startswith("Seed: ") and trial_id_given() and not explicit_seed():
        _HELD_SEED_LINE[:] = [text]
        return
    print(*values, **kwargs)


def _print_seed_line(seed: int, trial_id: int | None) -> bool:
    """Print the held ``Seed:`` line with the seed in use (``trial_id``: the trial's own); False if none was held."""
    if not _HELD_SEED_LINE:
        return False
    _HELD_SEED_LINE.clear()
    note = "" if trial_id is None else f", the one trial {trial_id} trained with (--seed overrides it)"
    print(f"Seed: {seed}{note}")
    return True


class ZooArgumentParser(argparse.ArgumentParser):
    """The stock parser plus zoo_ext's options; ``--sampler``/``--pruner`` take any registered name."""

    _zoo_ext_added = False

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        if args and args[-1] in ("--sampler", "--pruner"):
            kwargs.pop("choices", None)
            kwargs["default"] = None
            kwargs["help"] = f"{kwargs.get('help', '')} (zoo_ext: any name from 'python -m zoo_ext list')"
        return super().add_argument(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        from zoo_ext.errors import ZooExtError

        if not self._zoo_ext_added:
            from zoo_ext import options

            self._zoo_ext_added = True
            options.add_arguments(self, adapter.store_dict_action())
        try:
            return super().parse_known_args(args, namespace)
        except ZooExtError as exc:  # a bad -params/--sampler-kwargs value, refused by the key:value action
            exit_with_error(exc)


def exit_with_error(exc: Exception) -> NoReturn:
    """Print ``exc`` as ``zoo_ext: error: ...`` (like argparse) and exit with status 2, a usage error.

    Only the command-line layers call it (this module and :mod:`zoo_ext.cli`): below them a
    :class:`~zoo_ext.errors.ZooExtError` is raised, never an exit.
    """
    print(f"zoo_ext: error: {exc}", file=sys.stderr)
    raise SystemExit(2)


def _read_hyperparameters(self: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    from zoo_ext import options, record, storage
    from zoo_ext.errors import ZooExtError

    trial_id = self.trial_id
    seeded_by: int | None = None  # the trial whose seed this run uses
    self.trial_id = None  # stock checks truthiness (ignores trial 0) and knows only zoo param names
    try:
        hyperparams, saved = _ORIGINALS["read_hyperparameters"](self)
    finally:
        self.trial_id = trial_id
    block = hyperparams.pop(options.YAML_KEY, None)
    saved.pop(options.YAML_KEY, None)
    try:
        self._zoo_ext_options = options.resolve(self.args, block, algo=self.algo, source=self.config)
        # Before any training and before the study exists: a folder the run cannot write stops it here.
        options.check_writable_folder(self.log_folder, "-f/--log-folder")
        if self.optimization_log_path is not None:
            options.check_writable_folder(self.optimization_log_path, "--optimization-log-path")
        if self.optimize_hyperparameters:
            from zoo_ext.study import resolve_study

            # Before any env is built: name the study and refuse a resume with other settings.
            self.storage, self.study_name = resolve_study(
                algo=self.algo,
                env_id=self.env_name.gym_id,
                opts=self._zoo_ext_options,
                storage_url=self.storage,
                study_name=self.study_name,
                seed=self.seed if explicit_seed() else None,
                log_folder=self.log_folder,
            )
        self._zoo_ext_config = record.plain(dict(saved))
        if self.storage and self.study_name and trial_id is not None:
            tuned = storage.load_existing_study(self.storage, self.study_name, algo=self.algo)
            trial = storage.finished_trial(tuned, trial_id, storage=self.storage)
            merged = record.merge(
                hyperparams, record.trial_hyperparams(tuned, trial_id, self.algo, self.env_name.gym_id)
            )
            hyperparams.clear()
            hyperparams.update(merged, **(self.custom_hyperparams or {}))
            saved = OrderedDict((key, hyperparams[key]) for key in sorted(hyperparams))
            _logger.info("Loaded trial %d of study %r: %s", trial_id, self.study_name, record.plain(saved))
            if TrialAttr.SEED in trial.user_attrs and not explicit_seed():
                from stable_baselines3.common.utils import set_random_seed

                # The manager seeds the model and the envs with self.seed; args.yml records args.seed.
                self.seed = self.args.seed = int(trial.user_attrs[TrialAttr.SEED])
                set_random_seed(self.seed)
                seeded_by = trial_id
    except (ZooExtError, KeyError) as exc:
        exit_with_error(exc)
    if not _print_seed_line(self.seed, seeded_by) and seeded_by is not None:  # the stock line was printed already
        _logger.info("Seed: %d, the one trial %d trained with (--seed overrides it)", self.seed, seeded_by)
    return hyperparams, saved


def explicit_seed() -> bool:
    """Return True if ``--seed`` is on the command line (rl_zoo3 replaces a missing one by a random seed)."""
    return any(arg == "--seed" or arg.startswith("--seed=") for arg in sys.argv[1:])


def trial_id_given() -> bool:
    """Return True if ``--trial-id`` is on the command line (the run may take that trial's seed)."""
    return any(arg == "--trial-id" or arg.startswith("--trial-id=") for arg in sys.argv[1:])


def _hyperparameters_optimization(self: Any) -> None:
    from zoo_ext import study
    from zoo_ext.errors import ZooExtError

    try:
        status = study.optimize(ZooExperiment(self))
    except ZooExtError as exc:
        exit_with_error(exc)
    if status:
        raise SystemExit(status)


def _save_config(self: Any, saved_hyperparams: dict[str, Any]) -> None:
    from zoo_ext import record, storage

    _ORIGINALS["_save_config"](self, saved_hyperparams)
    params_path = Path(self.params_path)
    for name in SAVED_CONFIG_FILES:
        path = params_path / name
        if path.exists():
            path.write_text(storage.redact(path.read_text()))
    try:
        encoded = record.encode(self._hyperparams)
    except record.RecordError as exc:
        _logger.warning("%s; hyperparams.json holds its repr instead, training goes on", exc)
        encoded = record.plain(self._hyperparams)
    (params_path / "hyperparams.json").write_text(json.dumps(encoded, indent=2, sort_keys=True))


def _manager_for_env(manager: Any, env_id: str) -> Any:
    """Return a copy of a set-up manager that read ``env_id``'s config as ``setup_experiment`` does."""
    from zoo_ext import options, record

    clone = copy.copy(manager)
    clone.env_name = adapter.environment_name(env_id)
    clone._is_atari = manager.is_atari(env_id)
    clone.deterministic_eval = not (manager.is_atari(env_id) or manager.is_minigrid(env_id))
    clone.env_kwargs, clone.eval_env_kwargs, clone.monitor_kwargs = {}, {}, {}
    clone.normalize, clone.normalize_kwargs, clone.frame_stack, clone.specified_callbacks = False, {}, None, []
    clone.trial_id = None
    hyperparams, saved = _ORIGINALS["read_hyperparameters"](clone)
    hyperparams.pop(options.YAML_KEY, None)
    saved.pop(options.YAML_KEY, None)
    hyperparams, clone.env_wrapper, clone.callbacks, clone.vec_env_wrapper = clone._preprocess_hyperparams(hyperparams)
    env = clone.create_envs(1, no_log=True)
    try:
        clone._hyperparams = clone._preprocess_action_noise(hyperparams, saved, env)
    finally:
        env.close()
    clone._zoo_ext_config = record.plain(dict(saved))
    return clone


class ZooExperiment:
    """View of a set-up ``ExperimentManager``: everything a study and a trial need; read-only once built."""

    def __init__(self, manager: Any) -> None:
        self._m = manager
        self.options: ZooOptions = manager._zoo_ext_options
        self.config: dict[str, Any] = manager._zoo_ext_config
        self.algo: str = manager.algo
        self.env_id: str = manager.env_name.gym_id
        self.seed: int = manager.seed
        self.n_envs: int = 1 if manager.algo == "ars" else manager.n_envs
        self.n_actions: int = manager.n_actions
        self.n_timesteps: int = manager.n_timesteps
        self.n_evaluations: int = manager.n_evaluations
        self.n_eval_episodes: int = manager.n_eval_episodes
        self.n_eval_envs: int = manager.n_eval_envs
        self.deterministic_eval: bool = manager.deterministic_eval
        self.device: Any = manager.device
        self.verbose: int = manager.verbose
        self.storage: str | None = manager.storage
        self.study_name: str | None = manager.study_name
        self.n_trials: int = manager.n_trials
        self.max_total_trials: int | None = manager.max_total_trials
        self.n_jobs: int = manager.n_jobs
        self.n_startup_trials: int = manager.n_startup_trials
        self.log_folder: str = manager.log_folder
        self.optimization_log_path: str | None = manager.optimization_log_path
        self.no_optim_plots: bool = manager.no_optim_plots
        self.args: argparse.Namespace = manager.args
        self.tuned_config_path: Path = adapter.default_config_path(self.algo)
        self.worker_main: Callable[[], object] = adapter.run_train
        self._frozen = True

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(f"the experiment is read-only once built: cannot set {name!r}")
        super().__setattr__(name, value)

    @property
    def algo_class(self) -> type[BaseAlgorithm]:
        return adapter.algo_classes()[self.algo]

    def base_kwargs(self) -> dict[str, Any]:
        """Return a copy of the env's preprocessed constructor kwargs (before sampling)."""
        return dict(self._m._hyperparams)

    def additional_args(self) -> dict[str, Any]:
        """Return the zoo's ``additional_args`` for a search space (HER replay buffer info)."""
        from stable_baselines3 import HerReplayBuffer

        kwargs = self._m._hyperparams
        return {
            "using_her_replay_buffer": kwargs.get("replay_buffer_class") == HerReplayBuffer,
            "her_kwargs": kwargs.get("replay_buffer_kwargs", {}),
        }

    def make_env(self, n_envs: int, *, eval_env: bool = False, gamma: float | None = None) -> VecEnv:
        """Return a new VecEnv built as the zoo builds it, ``VecNormalize`` discounting with ``gamma`` if given.

        rl_zoo3 gives VecNormalize the config's ``gamma`` (rl-baselines-zoo issue 91); a trial
        that samples its own gamma must normalise rewards with that one.
        """
        with _ENV_LOCK:
            saved = self._m.normalize_kwargs
            if self._m.normalize and gamma is not None:
                self._m.normalize_kwargs = {**saved, "gamma": float(gamma)}
            try:
                if eval_env:
                    return self._m.create_envs(n_envs=n_envs, eval_env=True)  # type: ignore[no-any-return]
                return self._m.create_envs(n_envs, no_log=True)  # type: ignore[no-any-return]
            finally:
                self._m.normalize_kwargs = saved

    def extra_callbacks(self) -> list[BaseCallback]:
        """Return fresh instances of the callbacks the env's config asks for."""
        return adapter.callback_list(self._m.specified_callbacks)

    def for_env(self, env_id: str) -> ZooExperiment:
        """Return this experiment on ``env_id``: that env's rl_zoo3 config (n_envs, wrappers, normalisation,
        policy, callbacks), the same flags, ``-n`` and ``-params``; ``--env-kwargs`` stays with ``--env``.
        """
        return ZooExperiment(_manager_for_env(self._m, env_id))

    def learn_kwargs(self, model: BaseAlgorithm) -> dict[str, Any]:
        """Return extra ``learn()`` kwargs the zoo passes (ARS evaluates its population in parallel)."""
        if self.algo != "ars" or self._m.n_envs <= 1:
            return {}
        from sb3_contrib.common.vec_env import AsyncEval

        n_envs = self._m.n_envs
        return {
            "async_eval": AsyncEval(
                [lambda: self._m.create_envs(n_envs=1, no_log=True) for _ in range(n_envs)], model.policy
            )
        }
