"""Options: one definition (flag, default, help) for the command line, the YAML block and ZooOptions."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields
from pathlib import Path

import pytest

from zoo_ext.options import OPTIONS, ZooOptions

#: What a message about a value from the YAML block ends with.
IN_CONF = " (in the 'zoo_ext' block of conf.yml)"


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


def _parsed(*argv: str) -> argparse.Namespace:
    """Return ``argv`` parsed by zoo_ext's flags (a namespace as zoo_ext's parser makes it)."""
    from zoo_ext import adapter
    from zoo_ext.options import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser, adapter.store_dict_action())
    return parser.parse_args(list(argv))


def _error(args: argparse.Namespace, block: dict[str, object]) -> str:
    """Return the message of the OptionError ``resolve`` raises for ``args`` and YAML ``block`` (file conf.yml)."""
    from zoo_ext.options import OptionError, resolve

    with pytest.raises(OptionError) as info:
        resolve(args, block, algo="ppo", source="conf.yml")
    return str(info.value)


@pytest.mark.parametrize(
    ("argv", "block", "message"),
    [
        (["--n-workers", "0"], {}, "--n-workers must be at least 1 (1: this process only), not 0"),
        (["--n-workers", "-1"], {}, "--n-workers must be at least 1 (1: this process only), not -1"),
        ([], {"n_workers": -1}, "n_workers must be at least 1 (1: this process only), not -1" + IN_CONF),
        (
            [],
            {"n_workers": 1.5},
            "n_workers must be an integer of at least 1 (1: this process only), got 1.5" + IN_CONF,
        ),
        (["--n-seeds", "0"], {"n_seeds": 3}, "--n-seeds must be at least 1, not 0"),
        ([], {"n_seeds": 0}, "n_seeds must be at least 1, not 0" + IN_CONF),
        (["--eval-seeds", "-2"], {}, "--eval-seeds must be at least 1 (fresh seeds per re-evaluated trial), not -2"),
        (
            ["--seed-racing"],
            {},
            "--seed-racing races a trial's seeds: it needs --n-seeds of at least 2, got 1 (or several envs:"
            " --tune-envs)",
        ),
        (
            [],
            {"seed_racing": True},
            "seed_racing races a trial's seeds: it needs --n-seeds of at least 2, got 1 (or several envs: --tune-envs)"
            + IN_CONF,
        ),
        ([], {"pruner": "racing"}, "pruner 'racing' compares the seeds of trials: it needs --seed-racing" + IN_CONF),
        (["--budget-steps", "-5"], {}, "--budget-steps must be a non-negative integer, got -5"),
        ([], {"objective_metric": "worst"}, "objective_metric must be one of last, best, mean, got 'worst'" + IN_CONF),
    ],
)
def test_errors_name_the_flag_or_the_yaml_key_and_file(argv: list[str], block: dict[str, object], message: str) -> None:
    assert _error(_parsed(*argv), block) == message


def test_a_message_about_two_options_names_each_as_given_and_the_file() -> None:
    error = _error(_parsed("--grace-period", "5"), {"heartbeat_interval": 10})
    assert error.startswith("--grace-period (5 s) must be at least heartbeat_interval (10 s): a trial silent"), error
    assert error.endswith(IN_CONF)
    error = _error(_parsed("--grace-period", "5", "--heartbeat-interval", "10"), {})
    assert error.startswith("--grace-period (5 s) must be at least --heartbeat-interval (10 s): ")
    assert "zoo_ext" not in error
    sampler = _error(_parsed(), {"sampler": "tpee"})
    assert sampler.startswith("unknown sampler 'tpee'. Did you mean 'tpe'?") and sampler.endswith(IN_CONF), sampler


def test_option_help_texts_are_plain_text() -> None:
    from zoo_ext import adapter
    from zoo_ext.options import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser, adapter.store_dict_action())
    text = parser.format_help()
    assert "--search-space" in text and "'python -m zoo_ext list'" in text
    assert "`" not in text, text


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("/proc/zoo_ext_logs", "cannot create the folder '/proc/zoo_ext_logs': No such file or directory"),
        ("/proc/self", "cannot write in the folder '/proc/self': No such file or directory"),
        ("{tmp}/a_file/logs", "cannot create the folder '{tmp}/a_file/logs': '{tmp}/a_file' is not a folder"),
    ],
)
def test_an_unwritable_folder_is_refused_and_a_writable_one_left_as_it_was(
    tmp_path: Path, folder: str, message: str
) -> None:
    from zoo_ext.options import OptionError, check_writable_folder

    (tmp_path / "a_file").write_text("")
    folder, message = folder.format(tmp=tmp_path), message.format(tmp=tmp_path)
    with pytest.raises(OptionError) as info:
        check_writable_folder(folder, "-f/--log-folder")
    assert str(info.value) == f"-f/--log-folder {folder!r}: {message}"
    check_writable_folder(tmp_path / "new" / "logs", "-f/--log-folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing made, no write-check file left


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits: it writes in a chmod 555 folder")
def test_a_read_only_folder_is_refused(tmp_path: Path) -> None:
    from zoo_ext.options import OptionError, check_writable_folder

    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(OptionError, match=r"cannot create the folder .*: Permission denied"):
        check_writable_folder(tmp_path / "ro" / "logs", "-f/--log-folder")
