"""Presets: named bundles of zoo_ext options, picked with ``--preset NAME`` (or ``preset:`` in YAML).

A preset fills the options the user left unset; anything given on the command line or in the
``zoo_ext:`` block wins. Register your own::

    from zoo_ext import register_preset

    @register_preset("quick-look")
    def quick_look(algo: str) -> dict:
        \"\"\"Random search over the conditional space, no pruning.\"\"\"
        return {"search_space": "conditional", "sampler": "random", "pruner": "none"}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zoo_ext.registry import Registry

__all__ = ["PRESETS", "PresetFactory", "cold", "register_preset"]

#: A preset: ``algo -> {option dest: value}``.
PresetFactory = Callable[[str], dict[str, Any]]


def cold(algo: str) -> dict[str, Any]:
    """Return the ``cold`` preset: the best way measured to tune an env/algo with no tuned table (docs/benchmarks.md).

    The ``cold`` space (short ladders of robust values) where it exists for ``algo``, else the
    ``conditional`` space; multivariate TPE after 5 random trials; median pruning after 4
    trials, past the first third of the evaluations. Pair it with ``--n-evaluations 10`` (finer
    pruning) and ``--budget-steps`` (pruned trials leave room for more).
    """
    from zoo_ext.spaces import cold as cold_space

    return {
        "search_space": "cold" if algo in cold_space.ALGOS else "conditional",
        "sampler": "tpe",
        "sampler_kwargs": {"n_startup_trials": 5},
        "pruner": "median",
        "pruner_kwargs": {"n_startup_trials": 4},
    }


def _builtins(registry: Registry[PresetFactory]) -> None:
    description = "tuning with no tuned table: the cold space, TPE after 5 random trials, median pruning after 4"
    registry.register("cold", cold, source="zoo_ext", description=description)


PRESETS: Registry[PresetFactory] = Registry("preset", "zoo_ext.presets", _builtins)


def register_preset(name: str, *, description: str | None = None) -> Callable[[PresetFactory], PresetFactory]:
    """Return a decorator registering a preset (``algo -> options``) under ``name``."""

    def decorator(factory: PresetFactory) -> PresetFactory:
        return PRESETS.register(name, factory, description=description)

    return decorator
