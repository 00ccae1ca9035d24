"""The one module that imports rl_zoo3: its tables, its helpers and the objects zoo_ext patches.

Everything zoo_ext takes from rl_zoo3 flows up from here; nothing else in the package imports
rl_zoo3 (an import-linter contract checks it). :data:`TOUCHED_MODULE_NAMES` lists every name
used, and ``tests/test_adapter.py`` checks each one against the installed rl_zoo3, so an upstream
change fails loudly. Imports happen inside the functions: importing this module is free.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.callbacks import BaseCallback

__all__ = [
    "TOUCHED_MODULE_NAMES",
    "algo_classes",
    "callback_list",
    "default_config_path",
    "environment_name",
    "experiment_manager_class",
    "linear_schedule",
    "run_train",
    "store_dict_action",
    "train_module",
    "zoo_converter",
    "zoo_search_spaces",
]

#: Module-level names of rl_zoo3 that zoo_ext reads or patches.
TOUCHED_MODULE_NAMES: dict[str, tuple[str, ...]] = {
    "rl_zoo3": ("__file__",),
    "rl_zoo3.hyperparams_opt": ("HYPERPARAMS_SAMPLER", "HYPERPARAMS_CONVERTER"),
    "rl_zoo3.utils": ("ALGOS", "StoreDict", "get_callback_list", "linear_schedule"),
    "rl_zoo3.exp_manager": ("ExperimentManager", "EnvironmentName"),
    "rl_zoo3.train": ("argparse", "train"),
}


def experiment_manager_class() -> type:
    """Return ``rl_zoo3.exp_manager.ExperimentManager``, whose methods the integration patches."""
    from rl_zoo3.exp_manager import ExperimentManager

    return ExperimentManager


def environment_name(env_id: str) -> Any:
    """Return rl_zoo3's ``EnvironmentName`` of ``env_id`` (what ``ExperimentManager.env_name`` holds)."""
    from rl_zoo3.exp_manager import EnvironmentName

    return EnvironmentName(env_id)


def run_train() -> None:
    """Run ``rl_zoo3.train.train()``: the stock command, reading ``sys.argv``."""
    import rl_zoo3.train

    rl_zoo3.train.train()


def train_module() -> types.ModuleType | None:
    """Return ``rl_zoo3.train`` if it is imported (None otherwise): its parser is built inline."""
    import sys

    return sys.modules.get("rl_zoo3.train")


def store_dict_action() -> type[argparse.Action]:
    """Return rl_zoo3's ``key:value`` argparse action, so zoo_ext flags parse like ``-params``."""
    from rl_zoo3.utils import StoreDict

    return StoreDict  # type: ignore[no-any-return]


def zoo_search_spaces() -> dict[str, Callable[..., dict[str, Any]]]:
    """Return rl_zoo3's built-in search space per algorithm (``HYPERPARAMS_SAMPLER``)."""
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER

    return dict(HYPERPARAMS_SAMPLER)


def zoo_converter(algo: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Return rl_zoo3's params → kwargs converter for ``algo``, for studies made without zoo_ext."""
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER

    return HYPERPARAMS_CONVERTER[algo]  # type: ignore[no-any-return]


def algo_classes() -> dict[str, type[BaseAlgorithm]]:
    """Return rl_zoo3's algorithm table (name → SB3/sb3-contrib class)."""
    from rl_zoo3.utils import ALGOS

    return dict(ALGOS)


def default_config_path(algo: str) -> Path:
    """Return the hyperparams YAML rl_zoo3 reads for ``algo`` when no ``--conf-file`` is given (its tuned table)."""
    import rl_zoo3

    return Path(rl_zoo3.__file__).parent / "hyperparams" / f"{algo}.yml"


def linear_schedule(initial_value: float) -> Callable[[float], float]:
    """Return rl_zoo3's linear schedule, as its YAML's ``lin_<value>`` builds it (the record encodes it back)."""
    from rl_zoo3.utils import linear_schedule as zoo_linear_schedule

    return zoo_linear_schedule(initial_value)  # type: ignore[no-any-return]


def callback_list(specified: Any) -> list[BaseCallback]:
    """Return fresh instances of the callbacks an env's config names (its ``callback`` key)."""
    from rl_zoo3.utils import get_callback_list

    return get_callback_list({"callback": specified})  # type: ignore[no-any-return]
