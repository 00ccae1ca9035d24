"""Registries: names, entry points, dotted paths and their error messages."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from zoo_ext import register_pruner, register_sampler, register_search_space
from zoo_ext.pruners import PRUNERS, create_pruner
from zoo_ext.registry import DottedPathError, FactoryError, Registry, UnknownNameError, import_dotted
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


# --- a plug-in named like a built-in --------------------------------------------------------------


def _builtin_tpe(registry: Registry) -> None:
    registry.register("tpe", optuna.samplers.TPESampler, source="zoo_ext")
    registry.register("zoo", optuna.samplers.TPESampler, algos=["ppo", "a2c"], source="zoo_ext")


def plugin_sampler(*, seed: int | None = None) -> optuna.samplers.RandomSampler:
    """A plug-in's sampler named like a built-in."""
    return optuna.samplers.RandomSampler(seed=seed)


@pytest.mark.parametrize("order", ["plug-in first", "built-ins first"])
def test_plugin_replaces_a_builtin_whatever_the_order(order: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="zoo_ext.registry")
    registry: Registry = Registry("sampler", "zoo_ext_test.none", _builtin_tpe)
    if order == "built-ins first":
        assert registry.get("tpe") is optuna.samplers.TPESampler
    registry.register("tpe", plugin_sampler)
    registry.register("zoo", plugin_sampler, algos="ppo")
    assert registry.get("tpe") is plugin_sampler
    assert registry.get("zoo", "ppo") is plugin_sampler
    assert registry.get("zoo", "a2c") is optuna.samplers.TPESampler
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "sampler 'tpe' from python replaces the built-in sampler of that name (for every algorithm)",
        "sampler 'zoo' from python replaces the built-in sampler of that name (for ppo)",
    ]


@pytest.mark.parametrize("order", ["entry point", "entry point, then decorator"])
def test_entry_point_replaces_a_builtin(
    order: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    group = f"zoo_ext_test_{uuid.uuid4().hex}"
    (tmp_path / "plugmod_registry.py").write_text(
        "import optuna\n\n\ndef tpe(*, seed=None):\n    return optuna.samplers.RandomSampler(seed=seed)\n"
    )
    dist = tmp_path / "plugmod_registry-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugmod-registry\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\ntpe = plugmod_registry:tpe\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry = Registry("sampler", group, _builtin_tpe)
    with caplog.at_level(logging.WARNING, logger="zoo_ext.registry"):
        factory = registry.get("tpe")
    assert factory.__module__ == "plugmod_registry"
    assert type(factory(seed=1)).__name__ == "RandomSampler"
    assert any("entry point plugmod_registry:tpe (plugmod-registry) replaces the built-in" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    if order == "entry point, then decorator":
        registry.register("tpe", plugin_sampler)
        assert registry.get("tpe") is plugin_sampler


def test_threshold_pruner_without_bounds_lists_lower_and_upper() -> None:
    with pytest.raises(FactoryError) as info:
        create_pruner("threshold", {}, n_startup_trials=1, n_evaluations=2)
    assert str(info.value) == (
        "'threshold' cannot be built with no arguments: the threshold pruner needs --pruner-kwargs lower:VALUE and/or"
        " upper:VALUE. It accepts: lower, upper, n_warmup_steps, interval_steps"
    )


def test_unknown_constructor_key_gets_a_did_you_mean_and_no_private_valid_key() -> None:
    from stable_baselines3 import PPO

    from zoo_ext.registry import accepted_keywords
    from zoo_ext.spaces._probe import InvalidSearchSpaceError, accepted_kwargs, check_keys
    from zoo_ext.study._create import _check_config_keys

    assert "_init_setup_model" not in (accepted_kwargs(PPO) or ())
    assert "_init_setup_model" not in (accepted_keywords(PPO) or ())
    with pytest.raises(InvalidSearchSpaceError) as info:
        check_keys({"learnin_rate": 0.1}, PPO, "mine")
    assert str(info.value).startswith(
        "search space 'mine' returned 'learnin_rate', which PPO does not accept. Did you mean 'learning_rate' for"
        " 'learnin_rate'? Valid keys: batch_size, clip_range, "
    )
    exp = SimpleNamespace(algo_class=PPO, base_kwargs=lambda: {"policy": "MlpPolicy", "n_step": 8})
    with pytest.raises(ValueError) as config:
        _check_config_keys(exp)  # type: ignore[arg-type]
    assert str(config.value).startswith(
        "PPO takes no keyword argument 'n_step' (from the env's hyperparams or -params). Did you mean 'n_steps' for"
        " 'n_step'? Valid keys: batch_size, "
    )
    for message in (str(info.value), str(config.value)):
        assert "_init_setup_model" not in message and "env," not in message


def test_descriptions_and_help_are_plain_text() -> None:
    from zoo_ext.registry import plain_text

    assert plain_text("waits ``patience`` (see :class:`~optuna.pruners.WilcoxonPruner`, :func:`a.f <a.f>`)") == (
        "waits patience (see WilcoxonPruner, a.f)"
    )
    assert plain_text("see `python -m zoo_ext list` or :data:`zoo_ext.options.OPTIONS`") == (
        "see 'python -m zoo_ext list' or zoo_ext.options.OPTIONS"
    )
    patient = next(e for e in PRUNERS.entries() if e.name == "patient")
    assert patient.description == "Median pruning that waits patience (default 2) evaluations without progress."
