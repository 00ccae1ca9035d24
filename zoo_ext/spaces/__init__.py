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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from zoo_ext.registry import Registry

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DEFAULT_SEARCH_SPACE",
    "SEARCH_SPACES",
    "SearchSpace",
    "register_search_space",
    "register_search_space_file",
]

DEFAULT_SEARCH_SPACE = "zoo"


class SearchSpace(Protocol):
    """rl_zoo3's sampler signature: returns constructor keyword arguments for one trial."""

    def __call__(
        self, trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]
    ) -> dict[str, Any]: ...


def _builtins(registry: Registry[SearchSpace]) -> None:
    from zoo_ext.spaces import _zoo, arch, cold, conditional, replay_ratio

    _zoo.register(registry)
    modules = (("conditional", conditional), ("arch", arch), ("replay-ratio", replay_ratio), ("cold", cold))
    for name, module in modules:
        for algo in module.ALGOS:
            space = module.sample(algo)
            registry.register(name, space, algos=algo, source="zoo_ext", description=space.__doc__)


def _space_file(name: str, algo: str | None) -> SearchSpace | None:
    from zoo_ext.spaces._yaml import SpaceFileError, is_space_file, load_space_file

    if not is_space_file(name):
        return None
    from zoo_ext import adapter

    space = load_space_file(name, algo_class=adapter.algo_classes().get(algo) if algo else None)
    if algo is not None and space.algos is not None and algo not in space.algos:
        raise SpaceFileError(name, "algos", f"the file serves {', '.join(sorted(space.algos))}, not {algo}")
    return space


SEARCH_SPACES: Registry[SearchSpace] = Registry("search space", "zoo_ext.search_spaces", _builtins, _space_file)


def register_search_space_file(path: str | Path) -> SearchSpace:
    """Load a YAML search space and register it under its ``name:`` for its ``algos:``; return it.

    Example::

        register_search_space_file("hyperparams/spaces/ppo_conditional.yml")
    """
    from zoo_ext.spaces._yaml import load_space_file

    space = load_space_file(path)
    return SEARCH_SPACES.register(
        space.name, space, algos=sorted(space.algos) if space.algos else None, source=f"file {path}"
    )


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
