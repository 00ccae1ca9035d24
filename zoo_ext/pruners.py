"""Optuna pruner factories: built-ins and ``hub:PACKAGE`` (OptunaHub, offline-first, see :mod:`zoo_ext.hub`).

A pruner factory is any callable returning an ``optuna.pruners.BasePruner``. It receives the
``--pruner-kwargs`` plus whichever of ``n_startup_trials`` and ``n_evaluations`` (the number of
intermediate evaluations per trial, the pruners' step budget) its signature names. Example::

    from optuna.pruners import MedianPruner
    from zoo_ext import register_pruner

    @register_pruner("late-median")
    def late_median(*, n_evaluations: int) -> MedianPruner:
        \"\"\"Median pruning after half of the evaluations.\"\"\"
        return MedianPruner(n_warmup_steps=n_evaluations // 2)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna

from zoo_ext.hub import HUB_PREFIX, load_hub_class, parse_hub_spec
from zoo_ext.registry import Registry, build, check_kwargs, kwargs_target
from zoo_ext.statistics import sign

if TYPE_CHECKING:
    from optuna.pruners import BasePruner

__all__ = ["PRUNERS", "PrunerFactory", "RacingPruner", "check_pruner_name", "create_pruner", "register_pruner"]

PrunerFactory = Callable[..., "BasePruner"]


def median(*, n_startup_trials: int = 10, n_evaluations: int = 1, **kwargs: Any) -> BasePruner:
    """Median stopping rule, warm-up a third of the evaluations (stock rl_zoo3)."""
    from optuna.pruners import MedianPruner

    kwargs.setdefault("n_warmup_steps", n_evaluations // 3)
    return MedianPruner(n_startup_trials=n_startup_trials, **kwargs)


def halving(**kwargs: Any) -> BasePruner:
    """Asynchronous successive halving, reduction factor 4 (stock rl_zoo3)."""
    from optuna.pruners import SuccessiveHalvingPruner

    kwargs = {"min_resource": 1, "reduction_factor": 4, "min_early_stopping_rate": 0, **kwargs}
    return SuccessiveHalvingPruner(**kwargs)


def hyperband(*, n_evaluations: int = 1, **kwargs: Any) -> BasePruner:
    """Hyperband over the trial's evaluations (max_resource = --n-evaluations)."""
    from optuna.pruners import HyperbandPruner

    kwargs = {"min_resource": 1, "max_resource": max(n_evaluations, 1), "reduction_factor": 3, **kwargs}
    return HyperbandPruner(**kwargs)


def percentile(*, n_startup_trials: int = 10, n_evaluations: int = 1, **kwargs: Any) -> BasePruner:
    """Prune below the 25th percentile of earlier trials at the same evaluation."""
    from optuna.pruners import PercentilePruner

    kwargs = {"percentile": 25.0, "n_warmup_steps": n_evaluations // 3, **kwargs}
    return PercentilePruner(n_startup_trials=n_startup_trials, **kwargs)


def patient(*, n_startup_trials: int = 10, n_evaluations: int = 1, **kwargs: Any) -> BasePruner:
    """Median pruning that waits ``patience`` (default 2) evaluations without progress."""
    from optuna.pruners import PatientPruner

    kwargs = {"patience": 2, **kwargs}
    return PatientPruner(median(n_startup_trials=n_startup_trials, n_evaluations=n_evaluations), **kwargs)


def wilcoxon(**kwargs: Any) -> BasePruner:
    """Wilcoxon signed-rank test of the evaluation curve against the best trial's."""
    from optuna.pruners import WilcoxonPruner

    return WilcoxonPruner(**kwargs)


class RacingPruner(optuna.pruners.BasePruner):
    """Seed racing: prune a trial that is clearly worse than the best trial on the seeds it has run.

    Each step is one training seed (the same seeds in every trial, so step ``k`` is the same
    problem for all), each value that seed's score. From ``min_seeds`` seeds on, a trial is pruned
    when either rule says so:

    - dominance: its best seed so far is worse than the best trial's worst seed. The rule needs
      no distribution or scale, so it acts from the 1st seed: a lone seed below every seed of the
      best trial is what racing exists to stop (with 3 seeds, waiting for the 2nd keeps at least
      two thirds of a hopeless trial's cost); for ``--seed-aggregate min`` it is exact (the
      trial cannot end better), for the mean the remaining seeds would have to beat every seed of
      the best trial by far;
    - Optuna's :class:`~optuna.pruners.WilcoxonPruner` (one-sided signed-rank test of the paired
      differences, ``p_threshold``). With n seeds its p-value cannot go below 2^-n, so at the
      default 0.1 it can only act from the 4th seed: it takes over when there are enough seeds.
    """

    def __init__(self, *, min_seeds: int = 1, p_threshold: float = 0.1) -> None:
        if min_seeds < 1:
            raise ValueError(f"min_seeds must be at least 1, got {min_seeds}")
        self._min_seeds = min_seeds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._wilcoxon = optuna.pruners.WilcoxonPruner(p_threshold=p_threshold, n_startup_steps=max(min_seeds, 2))

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        """Return whether ``trial`` is dominated by, or significantly worse than, the best trial."""
        scores = list(trial.intermediate_values.values())
        if len(scores) < self._min_seeds:
            return False
        try:
            best = study.best_trial
        except ValueError:
            return False
        best_scores = list(best.intermediate_values.values())
        if not best_scores or not all(math.isfinite(v) for v in [*scores, *best_scores]):
            return False
        better = sign(study.direction)
        if max(better * v for v in scores) < min(better * v for v in best_scores):
            return True
        return self._wilcoxon.prune(study, trial)


def threshold(**kwargs: Any) -> BasePruner:
    """Prune when an evaluation falls outside --pruner-kwargs lower:X and/or upper:Y."""
    from optuna.pruners import ThresholdPruner

    if "lower" not in kwargs and "upper" not in kwargs:
        raise TypeError("the threshold pruner needs --pruner-kwargs lower:VALUE and/or upper:VALUE")
    return ThresholdPruner(**kwargs)


def none() -> BasePruner:
    """Never prune."""
    from optuna.pruners import NopPruner

    return NopPruner()


#: The Optuna class each built-in factory builds: its signature lists what ``--pruner-kwargs`` may hold.
_OPTUNA_CLASSES: dict[PrunerFactory, str] = {
    median: "MedianPruner",
    halving: "SuccessiveHalvingPruner",
    hyperband: "HyperbandPruner",
    percentile: "PercentilePruner",
    patient: "PatientPruner",
    wilcoxon: "WilcoxonPruner",
    threshold: "ThresholdPruner",
    none: "NopPruner",
}


def _builtins(registry: Registry[PrunerFactory]) -> None:
    for factory in (median, halving, hyperband, percentile, patient, wilcoxon, threshold, none):
        registry.register(factory.__name__, factory, source="zoo_ext")
    registry.register("racing", RacingPruner, source="zoo_ext")


PRUNERS: Registry[PrunerFactory] = Registry("pruner", "zoo_ext.pruners", _builtins)


def register_pruner(name: str, *, description: str | None = None) -> Callable[[PrunerFactory], PrunerFactory]:
    """Return a decorator registering a pruner factory (or class) under ``name``."""

    def decorator(factory: PrunerFactory) -> PrunerFactory:
        return PRUNERS.register(name, factory, description=description)

    return decorator


def check_pruner_name(name: str) -> None:
    """Raise if ``name`` is neither ``hub:...`` nor a resolvable pruner name."""
    if name.startswith(HUB_PREFIX):
        parse_hub_spec(name, "pruner")
    else:
        PRUNERS.check(name)


def create_pruner(
    name: str, kwargs: dict[str, Any], *, n_startup_trials: int, n_evaluations: int, hub_registry: str | None = None
) -> BasePruner:
    """Return the pruner ``name`` built with ``kwargs`` and the study's evaluation budget.

    ``hub:[pruners/]PACKAGE[:Class]`` loads an OptunaHub pruner (``hub_registry``: a local registry
    folder, looked in first). A key of ``kwargs`` the pruner does not take raises
    :class:`~zoo_ext.registry.FactoryError` listing the keyword arguments it takes (for a built-in,
    those of its Optuna class).
    """
    if name.startswith(HUB_PREFIX):
        from optuna.pruners import BasePruner

        factory = load_hub_class(name, BasePruner, kind="pruner", hub_registry=hub_registry)
    else:
        factory = PRUNERS.get(name)
    target = kwargs_target(factory, _OPTUNA_CLASSES, "optuna.pruners")
    check_kwargs(name, target, kwargs)
    context = {"n_startup_trials": n_startup_trials, "n_evaluations": n_evaluations}
    return build(factory, name, context, kwargs, target=target)
