"""Optuna sampler factories: built-ins, ``auto``, ``hub:PACKAGE`` (OptunaHub, offline-first, see :mod:`zoo_ext.hub`).

A sampler factory is any callable returning an ``optuna.samplers.BaseSampler``. It receives the
keyword arguments the user passed with ``--sampler-kwargs`` plus whichever of these its
signature names: ``seed``, ``n_startup_trials``, ``directions``, ``space`` (a
:class:`~zoo_ext.spaces._probe.SpaceInfo`) and ``hub_registry``. Example::

    from optuna.samplers import TPESampler
    from zoo_ext import register_sampler

    @register_sampler("tpe-grouped")
    def tpe_grouped(*, seed: int | None = None, n_startup_trials: int = 10) -> TPESampler:
        \"\"\"Multivariate TPE that groups conditional parameters.\"\"\"
        return TPESampler(seed=seed, n_startup_trials=n_startup_trials, multivariate=True, group=True)
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from zoo_ext.hub import HUB_PREFIX, HubError, load_hub_class, load_hub_package, parse_hub_spec
from zoo_ext.registry import Registry, build, check_kwargs, kwargs_target

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler

    from zoo_ext.spaces._probe import SpaceInfo

__all__ = [
    "SAMPLERS",
    "HubError",
    "SamplerFactory",
    "check_sampler_name",
    "create_sampler",
    "register_sampler",
]

_logger = logging.getLogger(__name__)

SamplerFactory = Callable[..., "BaseSampler"]
#: GP is picked by the offline ``auto`` fallback for all-numeric spaces up to this many parameters.
GP_MAX_PARAMS = 10


def _require(sampler: str, *modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"sampler {sampler!r} needs {', '.join(missing)}: pip install {' '.join(missing)}")


def random(*, seed: int | None = None, **kwargs: Any) -> BaseSampler:
    """Random search (optuna.samplers.RandomSampler)."""
    from optuna.samplers import RandomSampler

    return RandomSampler(seed=seed, **kwargs)


def tpe(*, seed: int | None = None, n_startup_trials: int = 10, **kwargs: Any) -> BaseSampler:
    """Multivariate TPE, as stock rl_zoo3 sets it up (optuna.samplers.TPESampler)."""
    from optuna.samplers import TPESampler

    kwargs.setdefault("multivariate", True)
    return TPESampler(seed=seed, n_startup_trials=n_startup_trials, **kwargs)


def cmaes(
    *, seed: int | None = None, n_startup_trials: int = 10, space: SpaceInfo | None = None, **kwargs: Any
) -> BaseSampler:
    """CMA-ES for numeric parameters; categorical and conditional ones go to random (needs cmaes)."""
    _require("cmaes", "cmaes")
    from optuna.samplers import CmaEsSampler

    _warn_random_fallback("CmaEsSampler", space, kwargs, categorical=True)
    return CmaEsSampler(seed=seed, n_startup_trials=n_startup_trials, **kwargs)


def gp(
    *, seed: int | None = None, n_startup_trials: int = 10, space: SpaceInfo | None = None, **kwargs: Any
) -> BaseSampler:
    """Gaussian-process Bayesian optimisation; conditional parameters go to random (needs scipy and torch)."""
    _require("gp", "scipy", "torch")
    from optuna.samplers import GPSampler

    _warn_random_fallback("GPSampler", space, kwargs, categorical=False)
    return GPSampler(seed=seed, n_startup_trials=n_startup_trials, **kwargs)


def _warn_random_fallback(sampler: str, space: SpaceInfo | None, kwargs: dict[str, Any], *, categorical: bool) -> None:
    """Log once which parameters ``sampler`` samples at random: conditional ones (and categorical ones).

    Optuna would log it for every such parameter of every trial: that is turned off unless the
    user's ``warn_independent_sampling`` asks for it.
    """
    if space is None:
        return
    from optuna.distributions import CategoricalDistribution

    fallback = set(space.conditional_params)
    if categorical:
        fallback |= {n for n, d in space.distributions.items() if isinstance(d, CategoricalDistribution)}
    if not fallback:
        return
    kinds = "numeric parameters" if categorical else "parameters"
    _warn_once(
        f"{sampler} models only the {kinds} present in every trial: {len(fallback)} of {len(space.distributions)}"
        f" parameters fall back to random sampling: {', '.join(sorted(fallback))} (use --sampler tpe to model them all)"
    )
    kwargs.setdefault("warn_independent_sampling", False)


@functools.cache
def _warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time only: a process joining a study builds its sampler twice."""
    _logger.warning(message)


def qmc(*, seed: int | None = None, **kwargs: Any) -> BaseSampler:
    """Quasi-Monte Carlo (Sobol) sequence; give every worker the same --seed."""
    from optuna.samplers import QMCSampler

    return QMCSampler(seed=seed, **kwargs)


def nsga2(*, seed: int | None = None, **kwargs: Any) -> BaseSampler:
    """NSGA-II genetic algorithm, for one or several objectives."""
    from optuna.samplers import NSGAIISampler

    return NSGAIISampler(seed=seed, **kwargs)


def nsga3(*, seed: int | None = None, **kwargs: Any) -> BaseSampler:
    """NSGA-III genetic algorithm, for many objectives."""
    from optuna.samplers import NSGAIIISampler

    return NSGAIIISampler(seed=seed, **kwargs)


def bruteforce(*, seed: int | None = None, space: SpaceInfo | None = None, **kwargs: Any) -> BaseSampler:
    """Every combination of a discrete space (floats need a step).

    Raises :class:`~zoo_ext.spaces._probe.InvalidSearchSpaceError` naming the continuous
    parameters, before any training, instead of failing every trial.
    """
    from optuna.distributions import FloatDistribution
    from optuna.samplers import BruteForceSampler

    from zoo_ext.spaces._probe import InvalidSearchSpaceError

    if space is not None:
        continuous = sorted(
            n for n, d in space.distributions.items() if isinstance(d, FloatDistribution) and d.step is None
        )
        if continuous:
            raise InvalidSearchSpaceError(
                f"sampler 'bruteforce' enumerates every combination, but the space has continuous parameter(s)"
                f" (a float without step): {', '.join(continuous)}. Give them a step or choose another sampler"
            )
    return BruteForceSampler(seed=seed, **kwargs)


def auto(
    *,
    seed: int | None = None,
    n_startup_trials: int = 10,
    directions: Sequence[str] = ("maximize",),
    space: SpaceInfo | None = None,
    hub_registry: str | None = None,
    **kwargs: Any,
) -> BaseSampler:
    """OptunaHub's AutoSampler (offline from cache/--hub-registry), else zoo_ext's own choice."""
    try:
        module = load_hub_package("samplers/auto_sampler", hub_registry=hub_registry)
    except HubError as exc:
        sampler, why = _fallback(seed, n_startup_trials, directions, space)
        _logger.warning("auto: %s; picked %s because %s", exc, type(sampler).__name__, why)
        return sampler
    _logger.info("auto: using OptunaHub AutoSampler from %s", module.__file__)
    return module.AutoSampler(seed=seed, **kwargs)  # type: ignore[no-any-return]


def _fallback(
    seed: int | None, n_startup_trials: int, directions: Sequence[str], space: SpaceInfo | None
) -> tuple[BaseSampler, str]:
    if len(directions) > 1:
        return nsga2(seed=seed), f"the study has {len(directions)} objectives"
    if space is not None and space.distributions and not space.conditional and not space.categorical:
        if len(space.distributions) <= GP_MAX_PARAMS:
            return gp(seed=seed, n_startup_trials=n_startup_trials), (
                f"the space is small and all-numeric: {space.describe()}"
            )
    why = f"the space has {space.describe()}" if space is not None else "the space is unknown"
    return tpe(seed=seed, n_startup_trials=n_startup_trials, group=bool(space and space.conditional)), why


#: The Optuna class each built-in factory builds: its signature lists what ``--sampler-kwargs`` may hold.
_OPTUNA_CLASSES: dict[SamplerFactory, str] = {
    random: "RandomSampler",
    tpe: "TPESampler",
    cmaes: "CmaEsSampler",
    gp: "GPSampler",
    qmc: "QMCSampler",
    nsga2: "NSGAIISampler",
    nsga3: "NSGAIIISampler",
    bruteforce: "BruteForceSampler",
}


def _builtins(registry: Registry[SamplerFactory]) -> None:
    for factory in (random, tpe, cmaes, gp, qmc, nsga2, nsga3, bruteforce, auto):
        registry.register(factory.__name__, factory, source="zoo_ext")


SAMPLERS: Registry[SamplerFactory] = Registry("sampler", "zoo_ext.samplers", _builtins)


def register_sampler(name: str, *, description: str | None = None) -> Callable[[SamplerFactory], SamplerFactory]:
    """Return a decorator registering a sampler factory (or class) under ``name``."""

    def decorator(factory: SamplerFactory) -> SamplerFactory:
        return SAMPLERS.register(name, factory, description=description)

    return decorator


def check_sampler_name(name: str) -> None:
    """Raise if ``name`` is neither ``hub:...`` nor a resolvable sampler name."""
    if name.startswith(HUB_PREFIX):
        parse_hub_spec(name, "sampler")
    else:
        SAMPLERS.check(name)


def _hub_factory(spec: str, hub_registry: str | None) -> SamplerFactory:
    from optuna.samplers import BaseSampler

    return load_hub_class(spec, BaseSampler, kind="sampler", hub_registry=hub_registry)


def create_sampler(
    name: str,
    kwargs: dict[str, Any],
    *,
    seed: int | None,
    n_startup_trials: int,
    directions: Sequence[str],
    space: SpaceInfo | None,
    hub_registry: str | None,
) -> BaseSampler:
    """Return the sampler ``name`` built with ``kwargs`` and the study's context.

    A key of ``kwargs`` the sampler does not take raises :class:`~zoo_ext.registry.FactoryError`
    listing the keyword arguments it takes (for a built-in, those of its Optuna class).
    """
    factory = _hub_factory(name, hub_registry) if name.startswith(HUB_PREFIX) else SAMPLERS.get(name)
    target = kwargs_target(factory, _OPTUNA_CLASSES, "optuna.samplers")
    check_kwargs(name, target, kwargs)
    context = {
        "seed": seed,
        "n_startup_trials": n_startup_trials,
        "directions": tuple(directions),
        "space": space,
        "hub_registry": hub_registry,
    }
    return build(factory, name, context, kwargs, target=target)
