"""Checks on a search space that run before any training: accepted keys, parameter kinds."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from zoo_ext.errors import BadInputError
from zoo_ext.registry import did_you_mean
from zoo_ext.storage import quiet_optuna

if TYPE_CHECKING:
    from zoo_ext.spaces import SearchSpace

__all__ = ["InvalidSearchSpaceError", "SpaceInfo", "accepted_kwargs", "check_keys", "probe_space"]


_logger = logging.getLogger(__name__)

#: Probe samples each categorical string choice is built on before it counts as unusable.
BUILD_ATTEMPTS = 3


class InvalidSearchSpaceError(BadInputError, ValueError):
    """Raised when a search space returns something the algorithm cannot be built with."""


def accepted_kwargs(algo_class: type) -> frozenset[str] | None:
    """Return the keyword arguments ``algo_class`` accepts (None when it takes ``**kwargs``).

    ``env`` and private parameters (``_init_setup_model``) are left out: a search space sets neither.
    """
    params = inspect.signature(algo_class).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.name != "env" and not p.name.startswith("_"))


def check_keys(keys: Iterable[str], algo_class: type, space_name: str) -> None:
    """Raise :class:`InvalidSearchSpaceError` naming any key ``algo_class`` does not accept, and the closest valid."""
    valid = accepted_kwargs(algo_class)
    if valid is None:
        return
    unknown = sorted(set(keys) - valid)
    if unknown:
        raise InvalidSearchSpaceError(
            f"search space {space_name!r} returned {', '.join(map(repr, unknown))}, which "
            f"{algo_class.__name__} does not accept.{did_you_mean(unknown, sorted(valid))}"
            f" Valid keys: {', '.join(sorted(valid))}"
        )


@dataclass
class SpaceInfo:
    """What probing a space showed: its parameters, and whether some are conditional."""

    distributions: dict[str, optuna.distributions.BaseDistribution] = field(default_factory=dict)
    conditional: bool = False
    #: The parameters some samples lacked (their branch was not taken), sorted.
    conditional_params: tuple[str, ...] = ()

    @property
    def categorical(self) -> bool:
        return any(isinstance(d, CategoricalDistribution) for d in self.distributions.values())

    def describe(self) -> str:
        kinds = "conditional" if self.conditional else "unconditional"
        n_cat = sum(isinstance(d, CategoricalDistribution) for d in self.distributions.values())
        n = len(self.distributions)
        return f"{n} parameter{'' if n == 1 else 's'} ({n_cat} categorical, {kinds})"


def probe_space(
    space: SearchSpace,
    space_name: str,
    algo_class: type,
    n_actions: int,
    n_envs: int,
    additional_args: dict[str, Any],
    *,
    n_samples: int = 16,
    seed: int = 0,
    build: Callable[[dict[str, Any]], object] | None = None,
) -> SpaceInfo:
    """Sample ``space`` ``n_samples`` times in memory and return what it holds.

    Fails with :class:`InvalidSearchSpaceError` when the space raises (or raises
    ``optuna.TrialPruned``, a rejected sample) on every sample, returns something other than a
    dict, or returns a key the algorithm does not accept, so a broken space stops the study
    before any training. A space failing on some samples only is logged as a warning.

    ``build(kwargs)``, if given, constructs the model from a sample's kwargs (e.g.
    ``algo_class(env=env, **config_kwargs, **kwargs)``): it is called once per string choice of
    each categorical parameter, so a choice the constructor cannot use (such as the string
    ``"tanh"`` for ``policy_kwargs.activation_fn``) stops the study too.
    """
    info = SpaceInfo()
    samples: list[dict[str, Any]] = []
    with quiet_optuna():
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        n_rejected, errors = 0, []
        for _ in range(n_samples):
            trial = study.ask()
            try:
                kwargs = space(trial, n_actions, n_envs, dict(additional_args))
            except optuna.TrialPruned:
                n_rejected += 1
                study.tell(trial, state=TrialState.PRUNED)
                continue
            except Exception as exc:  # noqa: BLE001 - any error of user code is reported, with its type
                errors.append(exc)
                study.tell(trial, state=TrialState.FAIL)
                continue
            if not isinstance(kwargs, dict):
                raise InvalidSearchSpaceError(
                    f"search space {space_name!r} must return a dict of keyword arguments, got {type(kwargs).__name__}"
                )
            check_keys(kwargs, algo_class, space_name)
            info.distributions.update(trial.distributions)
            samples.append(dict(trial.params))
            study.tell(trial, 0.0)
        _check_failures(space_name, n_samples, n_rejected, errors)
        if build is not None:
            args = (n_actions, n_envs, additional_args)
            _build_choices(space, space_name, study, info.distributions, samples, build, args)
    info.conditional = len({frozenset(params) for params in samples}) > 1
    if samples:
        info.conditional_params = tuple(sorted(set().union(*samples) - set(samples[0]).intersection(*samples)))
    return info


def _describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _check_failures(space_name: str, n_samples: int, n_rejected: int, errors: list[Exception]) -> None:
    """Raise if no probe sample worked; log a warning if some raised."""
    if n_rejected + len(errors) == n_samples:
        if errors:
            detail = f"raised on every probe sample ({len(errors)} of {n_samples}; {n_rejected} rejected)"
            raise InvalidSearchSpaceError(
                f"search space {space_name!r} {detail}; first error: {_describe_error(errors[0])}"
            ) from errors[0]
        raise InvalidSearchSpaceError(
            f"search space {space_name!r} rejected every probe sample ({n_samples} of {n_samples}"
            " raised optuna.TrialPruned): no trial could ever train"
        )
    if errors:
        _logger.warning(
            "search space %r raised on %d of %d probe samples (%.0f%%); first error: %s",
            space_name,
            len(errors),
            n_samples,
            100 * len(errors) / n_samples,
            _describe_error(errors[0]),
        )
    if n_rejected:
        _logger.info("search space %r rejected %d of %d probe samples", space_name, n_rejected, n_samples)


def _build_choices(
    space: SearchSpace,
    space_name: str,
    study: optuna.Study,
    distributions: dict[str, optuna.distributions.BaseDistribution],
    samples: list[dict[str, Any]],
    build: Callable[[dict[str, Any]], object],
    args: tuple[int, int, dict[str, Any]],
) -> None:
    """Build the model once per string choice of each categorical parameter; raise for an unusable one.

    Each choice is tried on up to :data:`BUILD_ATTEMPTS` probe samples where its parameter was
    active (the choice put in its place), so it is rejected only when it fails on all of them.
    Parameters active in fewer samples (conditional ones) go first, so that a bad choice is
    blamed on itself rather than on the selector that activates it.
    """
    n_actions, n_envs, additional_args = args
    order = list(distributions)
    choices = {
        name: [c for c in dist.choices if isinstance(c, str)]
        for name, dist in sorted(
            distributions.items(),
            key=lambda item: (sum(item[0] in params for params in samples), -order.index(item[0])),
        )
        if isinstance(dist, CategoricalDistribution)
    }
    for name, values in choices.items():
        bases = [params for params in samples if name in params][:BUILD_ATTEMPTS]
        for value in values:
            first_error: Exception | None = None
            for base in bases:
                study.enqueue_trial({**base, name: value}, skip_if_exists=False)
                trial = study.ask()
                try:
                    kwargs = space(trial, n_actions, n_envs, dict(additional_args))
                except Exception:  # noqa: BLE001 - sampling errors were reported above; this checks the build
                    study.tell(trial, state=TrialState.FAIL)
                    continue
                if trial.params.get(name) != value:
                    study.tell(trial, state=TrialState.FAIL)
                    continue
                try:
                    build(kwargs)
                except Exception as exc:  # noqa: BLE001 - whatever the constructor raises
                    first_error = first_error or exc
                    study.tell(trial, state=TrialState.FAIL)
                    continue
                study.tell(trial, 0.0)
                first_error = None
                break
            if first_error is not None:
                raise InvalidSearchSpaceError(
                    f"search space {space_name!r}: choice {value!r} of {name!r} cannot be used to build"
                    f" the model: {_describe_error(first_error)}"
                ) from first_error
