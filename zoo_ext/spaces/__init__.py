"""Search spaces: plain functions of the trial, registered by name per algorithm.

A search space has rl_zoo3's sampler signature, so every zoo sampler plugs in unchanged::

    import optuna
    from zoo_ext import register_search_space

    @register_search_space("ppo", "small-lr")
    def small_lr(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict:
        \"\"\"PPO with only the learning rate tuned.\"\"\"
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from zoo_ext.registry import Registry

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DEFAULT_SEARCH_SPACE",
    "SEARCH_SPACES",
    "SearchSpace",
    "register_search_space",
]

DEFAULT_SEARCH_SPACE = "zoo"


class SearchSpace(Protocol):
    """rl_zoo3's sampler signature: returns constructor keyword arguments for one trial."""

    def __call__(
        self, trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]
    ) -> dict[str, Any]: ...


def _builtins(registry: Registry[SearchSpace]) -> None:
    from zoo_ext.spaces import _zoo

    _zoo.register(registry)


SEARCH_SPACES: Registry[SearchSpace] = Registry("search space", "zoo_ext.search_spaces", _builtins)


def register_search_space(
    algos: str | Iterable[str] | None, name: str, *, description: str | None = None
) -> Callable[[SearchSpace], SearchSpace]:
    """Return a decorator registering a search space under ``name`` for ``algos`` (None: all).

    Example::

        @register_search_space(["sac", "td3"], "tiny")
        def tiny(trial, n_actions, n_envs, additional_args):
            \"\"\"Only gamma.\"\"\"
            return {"gamma": 1 - trial.suggest_float("one_minus_gamma", 1e-3, 0.1, log=True)}
    """

    def decorator(space: SearchSpace) -> SearchSpace:
        return SEARCH_SPACES.register(name, space, algos=algos, description=description)

    return decorator
