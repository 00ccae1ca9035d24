"""Presets: ``--preset NAME`` fills the options the user left unset; the ``cold`` preset end to end."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from helpers import STOCK, load, optimize_args, run

from zoo_ext import options, presets
from zoo_ext.spaces import cold as cold_space


def _resolve(block: dict, algo: str = "ppo", **cli: object) -> options.ZooOptions:
    return options.resolve(argparse.Namespace(**cli), block, algo=algo)


def test_the_cold_preset_fills_unset_options() -> None:
    opts = _resolve({"preset": "cold"})
    assert (opts.preset, opts.search_space, opts.sampler, opts.pruner) == ("cold", "cold", "tpe", "median")
    assert opts.sampler_kwargs == {"n_startup_trials": 5} and opts.pruner_kwargs == {"n_startup_trials": 4}


def test_given_options_win_over_the_preset_and_drop_its_kwargs() -> None:
    opts = _resolve({"preset": "cold", "sampler": "random"}, search_space="conditional")
    assert (opts.search_space, opts.sampler, opts.sampler_kwargs) == ("conditional", "random", {})
    assert opts.pruner_kwargs == {"n_startup_trials": 4}  # the pruner is still the preset's
    racing = _resolve({"preset": "cold", "n_seeds": 3, "seed_racing": True})
    assert (racing.pruner, racing.pruner_kwargs) == ("racing", {})


def test_algos_without_a_cold_space_get_the_conditional_space() -> None:
    assert _resolve({"preset": "cold"}, algo="sac").search_space == "conditional"
    assert {"ppo", "a2c", "dqn"} <= set(cold_space.ALGOS)


def test_unknown_preset_lists_the_presets_and_a_bad_preset_is_refused() -> None:
    with pytest.raises(options.OptionError, match=re.escape("unknown preset 'warm'. Valid choices: cold")):
        _resolve({"preset": "warm"})
    presets.register_preset("bad-key")(lambda algo: {"samplr": "tpe"})
    with pytest.raises(options.OptionError, match=re.escape("preset 'bad-key' sets unknown option(s) samplr")):
        _resolve({"preset": "bad-key"})


@pytest.mark.slow
def test_cold_preset_runs_its_space_sampler_and_pruner(workdir: Path) -> None:
    proc = run([*STOCK, *optimize_args("a2c", "CartPole-v1", trials=3), "--preset", "cold", "--no-mlflow"], workdir)
    assert "Preset: cold - Search space: cold (" in proc.stdout
    assert "Sampler: TPESampler - Pruner: MedianPruner" in proc.stdout
    study = load(workdir)
    recorded = study.user_attrs["zoo_ext_options"]
    assert recorded["preset"] == "cold" and recorded["sampler_kwargs"] == {"n_startup_trials": 5}
    ladders = cold_space.BOUNDS["a2c"]
    for trial in study.trials:
        assert trial.params["gamma"] in ladders["gamma"] and trial.params["n_steps"] in ladders["n_steps"]
