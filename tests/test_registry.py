"""Registries: names, entry points, dotted paths and their error messages."""

from __future__ import annotations

import optuna
import pytest

from zoo_ext import register_pruner, register_sampler, register_search_space
from zoo_ext.pruners import PRUNERS, create_pruner
from zoo_ext.registry import DottedPathError, FactoryError, UnknownNameError, import_dotted
from zoo_ext.samplers import create_sampler
from zoo_ext.spaces import SEARCH_SPACES


def _create(name: str, **kwargs):
    return create_sampler(
        name, kwargs, seed=7, n_startup_trials=3, directions=("maximize",), space=None, hub_registry=None
    )


@pytest.mark.parametrize(
    ("name", "cls"),
    [("random", "RandomSampler"), ("tpe", "TPESampler"), ("cmaes", "CmaEsSampler"), ("gp", "GPSampler"),
     ("qmc", "QMCSampler"), ("nsga2", "NSGAIISampler"), ("nsga3", "NSGAIIISampler"),
     ("bruteforce", "BruteForceSampler"), ("optuna.samplers:TPESampler", "TPESampler")],
)  # fmt: skip
def test_builtin_and_dotted_samplers(name: str, cls: str) -> None:
    assert type(_create(name)).__name__ == cls


def test_seed_and_startup_trials_reach_a_dotted_class() -> None:
    sampler = _create("optuna.samplers.TPESampler")
    assert sampler._n_startup_trials == 3
    assert sampler._rng.rng.random() == optuna.samplers.TPESampler(seed=7)._rng.rng.random()


def test_stock_tpe_settings() -> None:
    sampler = _create("tpe")
    assert sampler._multivariate and sampler._n_startup_trials == 3


@pytest.mark.parametrize(
    ("name", "cls"),
    [("median", "MedianPruner"), ("halving", "SuccessiveHalvingPruner"), ("hyperband", "HyperbandPruner"),
     ("percentile", "PercentilePruner"), ("patient", "PatientPruner"), ("wilcoxon", "WilcoxonPruner"),
     ("none", "NopPruner")],
)  # fmt: skip
def test_builtin_pruners(name: str, cls: str) -> None:
    assert type(create_pruner(name, {}, n_startup_trials=2, n_evaluations=6)).__name__ == cls


def test_median_pruner_follows_stock_settings() -> None:
    pruner = create_pruner("median", {}, n_startup_trials=4, n_evaluations=9)
    assert pruner._n_startup_trials == 4 and pruner._n_warmup_steps == 3


def test_unknown_name_lists_choices_and_closest_match() -> None:
    with pytest.raises(UnknownNameError) as info:
        PRUNERS.get("medain")
    assert "Did you mean 'median'?" in str(info.value)
    assert "hyperband" in info.value.choices


def test_dotted_path_errors_name_the_failing_part() -> None:
    with pytest.raises(DottedPathError, match=r"cannot import module 'nope\.mod'"):
        import_dotted("nope.mod:f")
    with pytest.raises(DottedPathError, match="module 'optuna' has no attribute 'nothing'"):
        import_dotted("optuna:nothing")


def test_factory_kwargs_error_lists_accepted() -> None:
    with pytest.raises(FactoryError, match="It accepts: seed"):
        _create("random", bogus=1)


def test_decorators_register_by_name() -> None:
    @register_search_space(["sac", "td3"], "unit-test-space")
    def space(trial, n_actions, n_envs, additional_args):
        """Only for this test."""
        return {}

    @register_sampler("unit-test-sampler")
    def sampler(*, seed=None):
        """Random, seeded."""
        return optuna.samplers.RandomSampler(seed=seed)

    @register_pruner("unit-test-pruner")
    def pruner():
        return optuna.pruners.NopPruner()

    assert SEARCH_SPACES.get("unit-test-space", "sac") is space
    with pytest.raises(UnknownNameError, match="for --algo ppo"):
        SEARCH_SPACES.get("unit-test-space", "ppo")
    assert type(_create("unit-test-sampler")).__name__ == "RandomSampler"
    assert type(create_pruner("unit-test-pruner", {}, n_startup_trials=1, n_evaluations=1)).__name__ == "NopPruner"
    assert "unit-test-space" in SEARCH_SPACES.names("td3")
