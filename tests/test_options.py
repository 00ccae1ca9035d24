"""Options: one definition (flag, default, help) for the command line, the YAML block and ZooOptions."""

from __future__ import annotations

from dataclasses import fields

from zoo_ext.options import OPTIONS, ZooOptions


def test_zoo_options_defaults_are_the_table_defaults() -> None:
    defaults = ZooOptions()
    assert sorted(f.name for f in fields(ZooOptions)) == sorted(option.dest for option in OPTIONS)
    for option in OPTIONS:
        assert getattr(defaults, option.dest) == option.default, option.dest
    assert ZooOptions().sampler_kwargs is not ZooOptions().sampler_kwargs  # no shared mutable default


def test_yaml_step_counts_written_as_floats_are_integers() -> None:
    import argparse

    from zoo_ext.options import OptionError, resolve

    options = resolve(argparse.Namespace(), {"budget_steps": 8e5}, algo="ppo")
    assert options.budget_steps == 800_000 and isinstance(options.budget_steps, int)
    try:
        resolve(argparse.Namespace(), {"budget_steps": 1.5}, algo="ppo")
    except OptionError as exc:
        assert "non-negative integer" in str(exc)
    else:
        raise AssertionError("1.5 env steps accepted")
