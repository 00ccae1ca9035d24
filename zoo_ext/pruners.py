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

With several objectives Optuna's ``trial.report`` cannot be used: :class:`RacingPruner` reads the
trials' per-seed scores instead, and OptunaHub's ``hub:multi_metric_pruner`` gets its metrics and
base pruner from the study (see :func:`create_pruner`). :func:`pruner_rule` names the rule that
pruned a trial, for the study summary.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import optuna

from zoo_ext.attrs import TrialAttr
from zoo_ext.hub import HUB_PREFIX, load_hub_class, parse_hub_spec
from zoo_ext.registry import FactoryError, Registry, UnknownNameError, build, check_kwargs, kwargs_target
from zoo_ext.statistics import sign

if TYPE_CHECKING:
    from optuna.pruners import BasePruner

__all__ = [
    "PRUNERS",
    "PrunerFactory",
    "RacingPruner",
    "check_pruner_name",
    "create_pruner",
    "is_multi_objective_pruner",
    "pruner_rule",
    "register_pruner",
]

PrunerFactory = Callable[..., "BasePruner"]

#: The class of OptunaHub's ``pruners/multi_metric_pruner`` package (recognised by name: it is loaded at run time).
_MULTI_METRIC = "MultiMetricPruner"


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

    With several objectives (``trial.report`` is single-objective) the objective calls :meth:`prune`
    itself after each seed and the trials' ``per_seed`` user attribute gives the scores. A trial is
    pruned when one trial of the Pareto front, taken at its worst seed (per objective, the worst of
    its seeds), dominates every seed the trial has run: no better on any objective, worse on one.
    No Wilcoxon test then. A non-finite score never prunes. The rule that pruned each trial is kept
    for :func:`pruner_rule`.
    """

    #: The rules' labels (:func:`pruner_rule`).
    DOMINATED = "racing: dominated by the best trial"
    WILCOXON = "racing: wilcoxon"
    PARETO_DOMINATED = "racing: pareto-dominated"

    def __init__(self, *, min_seeds: int = 1, p_threshold: float = 0.1) -> None:
        if min_seeds < 1:
            raise ValueError(f"min_seeds must be at least 1, got {min_seeds}")
        self._min_seeds = min_seeds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._wilcoxon = optuna.pruners.WilcoxonPruner(p_threshold=p_threshold, n_startup_steps=max(min_seeds, 2))
        self._rules: dict[int, str] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Return the pruner's state without its lock, so that a study holding it can be pickled (the report's)."""
        with self._lock:
            return {**self.__dict__, "_rules": dict(self._rules), "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled pruner with a new lock."""
        self.__dict__.update(state, _lock=threading.Lock())

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        """Return whether ``trial`` is dominated by, or significantly worse than, the best trial (or Pareto front)."""
        rule = self._pareto_rule(study, trial) if len(study.directions) > 1 else self._rule(study, trial)
        if rule is None:
            return False
        with self._lock:
            self._rules[trial.number] = rule
        return True

    def _pruned_by(self, number: int) -> str | None:
        """Return the label of the rule that pruned trial ``number`` in this process, None if none did."""
        with self._lock:
            return self._rules.get(number)

    def _rule(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str | None:
        """Return the single-objective rule that prunes ``trial`` (its intermediate values: one per seed), or None."""
        scores = list(trial.intermediate_values.values())
        if len(scores) < self._min_seeds:
            return None
        try:
            best = study.best_trial
        except ValueError:
            return None
        best_scores = list(best.intermediate_values.values())
        if not best_scores or not all(math.isfinite(v) for v in [*scores, *best_scores]):
            return None
        better = sign(study.direction)
        if max(better * v for v in scores) < min(better * v for v in best_scores):
            return self.DOMINATED
        return self.WILCOXON if self._wilcoxon.prune(study, trial) else None

    def _pareto_rule(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str | None:
        """Return :attr:`PARETO_DOMINATED` if a Pareto-front trial's worst seed dominates every seed of ``trial``."""
        names = trial.user_attrs.get(TrialAttr.OBJECTIVES)
        if not isinstance(names, list) or len(names) != len(study.directions):
            return None
        signs = [sign(direction) for direction in study.directions]
        seeds = _seed_vectors(trial, names, signs)
        if seeds is None or len(seeds) < self._min_seeds:
            return None
        for best in study.best_trials:  # the Pareto front's complete trials
            front_seeds = _seed_vectors(best, names, signs)
            if not front_seeds:
                continue
            worst = tuple(min(column) for column in zip(*front_seeds, strict=True))
            if all(_dominates(worst, seed) for seed in seeds):
                return self.PARETO_DOMINATED
        return None


def _seed_vectors(
    trial: optuna.trial.FrozenTrial, names: Sequence[str], signs: Sequence[float]
) -> list[tuple[float, ...]] | None:
    """Return ``trial``'s score vector per seed (``sign * score``: larger is better); None if one is not finite.

    The vectors come from the ``per_seed`` user attribute, in the order of ``names``; a seed not yet
    scored on every objective is left out. None too when a trial has no scores for one of ``names``.
    """
    per_seed = trial.user_attrs.get(TrialAttr.PER_SEED)
    if not isinstance(per_seed, dict) or not all(isinstance(per_seed.get(name), list) for name in names):
        return None
    vectors = [
        tuple(s * float(v) for s, v in zip(signs, seed, strict=True))
        for seed in zip(*(per_seed[n] for n in names), strict=False)
    ]
    return vectors if all(math.isfinite(v) for vector in vectors for v in vector) else None


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Return True if ``a`` is no worse than ``b`` on every objective and better on one (larger is better)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


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


def pruner_rule(pruner: BasePruner, number: int) -> str:
    """Return the rule by which ``pruner`` pruned trial ``number``, so the study summary can count trials per rule.

    A :class:`RacingPruner` names the rule it applied (one of its labels, kept by the process that
    ran the trial); any other pruner, or a trial the racing pruner did not prune, is named by the
    pruner's class, OptunaHub's ``MultiMetricPruner`` with its mode (``joint`` or ``per metric``).
    """
    rule = pruner._pruned_by(number) if isinstance(pruner, RacingPruner) else None
    if rule is not None:
        return rule
    name = type(pruner).__name__
    joint = getattr(pruner, "_joint", None)
    if name == _MULTI_METRIC and isinstance(joint, bool):
        return f"{name} ({'joint' if joint else 'per metric'})"
    return name


def is_multi_objective_pruner(pruner: BasePruner) -> bool:
    """Return True if ``pruner`` can prune a multi-objective study: racing, none or OptunaHub's ``MultiMetricPruner``.

    The others read ``trial.report``'s values, which Optuna refuses in a study of several objectives.
    """
    from optuna.pruners import NopPruner

    return isinstance(pruner, RacingPruner | NopPruner) or type(pruner).__name__ == _MULTI_METRIC


def create_pruner(
    name: str,
    kwargs: dict[str, Any],
    *,
    n_startup_trials: int,
    n_evaluations: int,
    hub_registry: str | None = None,
    objectives: Sequence[tuple[str, str]] = (),
) -> BasePruner:
    """Return the pruner ``name`` built with ``kwargs`` and the study's evaluation budget.

    ``hub:[pruners/]PACKAGE[:Class]`` loads an OptunaHub pruner (``hub_registry``: a local registry
    folder, looked in first). A key of ``kwargs`` the pruner does not take raises
    :class:`~zoo_ext.registry.FactoryError` listing the keyword arguments it takes (for a built-in,
    those of its Optuna class). OptunaHub's ``MultiMetricPruner`` (``hub:multi_metric_pruner``) gets
    what a command line cannot give: ``metric_directions`` from ``objectives`` (name, direction),
    ``base_pruner`` built by name (``--pruner-kwargs base_pruner:NAME``, default ``median``) and
    ``joint`` (default true).
    """
    if name.startswith(HUB_PREFIX):
        from optuna.pruners import BasePruner

        factory = load_hub_class(name, BasePruner, kind="pruner", hub_registry=hub_registry)
    else:
        factory = PRUNERS.get(name)
    target = kwargs_target(factory, _OPTUNA_CLASSES, "optuna.pruners")
    check_kwargs(name, target, kwargs)
    context = {"n_startup_trials": n_startup_trials, "n_evaluations": n_evaluations}
    if getattr(factory, "__name__", None) == _MULTI_METRIC:
        kwargs = _multi_metric_kwargs(name, kwargs, objectives, hub_registry=hub_registry, **context)
    return build(factory, name, context, kwargs, target=target)


def _multi_metric_kwargs(
    name: str,
    kwargs: dict[str, Any],
    objectives: Sequence[tuple[str, str]],
    *,
    n_startup_trials: int,
    n_evaluations: int,
    hub_registry: str | None,
) -> dict[str, Any]:
    """Return ``MultiMetricPruner``'s kwargs: ``metric_directions`` from ``objectives``, ``base_pruner`` and ``joint``.

    ``base_pruner`` is built by name with the study's budget; ``joint`` may be given as ``"true"``/``"false"``.
    """
    if "metric_directions" in kwargs:
        raise FactoryError(
            f"{name!r}: zoo_ext sets metric_directions from --objectives ({dict(objectives)}):"
            " remove it from --pruner-kwargs"
        )
    if not objectives:
        raise FactoryError(f"{name!r} needs the study's objectives: they are its metric_directions")
    base = kwargs.get("base_pruner", "median")
    if not isinstance(base, str):
        raise FactoryError(f"{name!r}: --pruner-kwargs base_pruner takes a pruner's name, got {base!r}")
    try:
        base_pruner = create_pruner(
            base, {}, n_startup_trials=n_startup_trials, n_evaluations=n_evaluations, hub_registry=hub_registry
        )
    except UnknownNameError as exc:
        raise UnknownNameError("pruner", base, exc.choices, scope=f"--pruner-kwargs base_pruner of {name!r}") from None
    joint = kwargs.get("joint", True)
    if isinstance(joint, str) and joint.lower() in ("true", "false"):
        joint = joint.lower() == "true"
    if not isinstance(joint, bool):
        raise FactoryError(f"{name!r}: --pruner-kwargs joint takes true or false, got {joint!r}")
    return {"base_pruner": base_pruner, "metric_directions": dict(objectives), "joint": joint}
