"""The zoo's own search spaces (``HYPERPARAMS_SAMPLER``), registered as ``zoo`` per algorithm."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo_ext import adapter

if TYPE_CHECKING:
    from zoo_ext.registry import Registry
    from zoo_ext.spaces import SearchSpace


def register(registry: Registry[SearchSpace]) -> None:
    """Register rl_zoo3's built-in sampler of every algorithm under the name ``zoo``."""
    for algo, space in adapter.zoo_search_spaces().items():
        registry.register(
            "zoo",
            space,
            algos=algo,
            source="rl_zoo3",
            description=f"rl_zoo3's own search space ({space.__name__})",
        )
