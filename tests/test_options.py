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
