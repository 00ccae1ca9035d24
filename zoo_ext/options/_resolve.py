"""Resolving the options of one run (command line, YAML block, preset, defaults) and checking their values."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from typing import Any

from zoo_ext.options._table import _BY_DEST, OPTIONS, YAML_KEY, Option, OptionError, ZooOptions

__all__ = ["check", "resolve"]


class _Names:
    """Names each option as the user gave it: its flag (command line), its YAML key (the block, or a preset)."""

    def __init__(self, source: str | None) -> None:
        #: Where a YAML value is: ``in the 'zoo_ext' block of FILE``.
        self.block = f"in the {YAML_KEY!r} block" + (f" of {source}" if source else "")
        self.preset: str | None = None
        #: dest -> "cli", "yaml" or "preset"; a default has no entry.
        self.origin: dict[str, str] = {}

    def __call__(self, dest: str) -> str:
        return dest if self.origin.get(dest) in ("yaml", "preset") else _BY_DEST[dest].flag

    def error(self, message: str, *dests: str) -> OptionError:
        """Return an :class:`OptionError` of ``message``, saying where the values of ``dests`` came from."""
        origins = {self.origin.get(dest) for dest in dests}
        if "yaml" in origins:
            return OptionError(f"{message} ({self.block})")
        if "preset" in origins:
            return OptionError(f"{message} (set by preset {self.preset!r})")
        return OptionError(message)


def resolve(args: argparse.Namespace, block: Any, *, algo: str, source: str | None = None) -> ZooOptions:
    """Return the options of this run: command line, then the YAML block, then the preset, then defaults.

    Names are checked here, before any environment is built: an unknown search space, sampler
    or pruner raises :class:`OptionError` with the valid choices. An error names a value from the
    command line by its flag (``--n-workers``), one from the block by its key and ``source``, the
    hyperparams file (``n_workers ... (in the 'zoo_ext' block of conf.yml)``).
    """
    names = _Names(source)
    if block is None:
        block = {}
    if not isinstance(block, Mapping):
        where = source or "the hyperparams file"
        raise OptionError(f"the {YAML_KEY!r} block of {where} must be a mapping, got {block!r}")
    unknown = sorted(set(block) - set(_BY_DEST))
    if unknown:
        from zoo_ext.registry import did_you_mean

        hint = did_you_mean(unknown, sorted(_BY_DEST))
        valid = ", ".join(sorted(_BY_DEST))
        raise OptionError(f"unknown key(s) {', '.join(map(repr, unknown))} {names.block}.{hint} Valid keys: {valid}")
    # Parsed by zoo_ext's parser: stock flags default to None when not given. Parsed by the stock
    # parser (activation through --gym-packages): a stock flag left at its stock default is "unset".
    zoo_parsed = hasattr(args, "search_space")
    names.preset = getattr(args, "preset", None) or block.get("preset")
    preset = _preset(names.preset, algo)
    values: dict[str, Any] = {}
    given: set[str] = set()
    for option in OPTIONS:
        cli = getattr(args, option.dest, None)
        if option.stock and not zoo_parsed and cli == option.default:
            cli = None
        if cli is not None or option.dest in block:
            given.add(option.dest)
        if cli is not None:
            names.origin[option.dest] = "cli"
        elif option.dest in block:
            names.origin[option.dest] = "yaml"
        elif option.dest in preset:
            names.origin[option.dest] = "preset"
        default = preset.get(option.dest, option.default)
        value = cli if cli is not None else block.get(option.dest, default)
        values[option.dest] = _checked(option, value, names)
    for name in ("sampler", "pruner"):  # a preset's kwargs belong to its own sampler/pruner
        if name in given and f"{name}_kwargs" not in given and values[name] != preset.get(name):
            values[f"{name}_kwargs"] = {}
    if values["seed_racing"] and "pruner" not in given:
        values["pruner"] = "racing"
        if "pruner_kwargs" not in given:
            values["pruner_kwargs"] = {}
    options = ZooOptions(**values)
    if 0 < options.grace_period < options.heartbeat_interval:
        raise names.error(
            f"{names('grace_period')} ({options.grace_period} s) must be at least {names('heartbeat_interval')} "
            f"({options.heartbeat_interval} s): a trial silent for the grace period is failed, so a shorter one "
            "fails live trials between two heartbeats (0: twice the interval)",
            "grace_period",
            "heartbeat_interval",
        )
    _check_racing(options, names)
    _check_scheduler(options, names, given)
    if options.env_scores and not options.tune_envs:
        raise names.error(
            f"{names('env_scores')} normalises the scores of several envs: it needs {names('tune_envs')}",
            "env_scores",
            "tune_envs",
        )
    check(options, algo=algo, names=names)
    return options


def _checked(option: Option, value: Any, names: _Names) -> Any:
    """Return ``value`` converted to ``option``'s kind; raise :class:`OptionError` naming it if it does not fit."""
    name = names(option.dest)

    def error(message: str) -> OptionError:
        return names.error(f"{name} {message}", option.dest)

    if option.kind == "dict":
        if not isinstance(value, Mapping):
            raise error(f"must be a mapping of keyword arguments, got {value!r}")
        return dict(value)
    if option.kind == "flag":
        if not isinstance(value, bool):
            raise error(f"must be true or false, got {value!r}")
        return value
    if option.kind == "list":
        value = [value] if isinstance(value, str) else value
        if not (value or option.default == ()) or not all(isinstance(item, str) for item in value):
            raise error(f"must be a list of names, got {value!r}")
        return tuple(value)
    if option.kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # YAML step counts are often written !!float 8e5, as rl_zoo3's n_timesteps
        integer = isinstance(value, int) and not isinstance(value, bool)
        if option.minimum <= 0 and (not integer or value < 0):
            raise error(f"must be a non-negative integer, got {value!r}")
        note = f" ({option.minimum_note})" if option.minimum_note else ""
        if not integer:
            raise error(f"must be an integer of at least {option.minimum}{note}, got {value!r}")
        if value < option.minimum:  # the same message for 0 and -1
            raise error(f"must be at least {option.minimum}{note}, not {value}")
        return value
    if option.kind == "float":
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise error(f"must be a number, got {value!r}")
        if value is not None and not math.isfinite(value):
            raise error(f"must be a finite number, got {value!r}")
        return None if value is None else float(value)
    if value is not None and not isinstance(value, str):
        raise error(f"must be a string, got {value!r}")
    if option.choices is not None and value not in option.choices:
        raise error(f"must be one of {', '.join(option.choices)}, got {value!r}")
    return value


def _preset(name: Any, algo: str) -> dict[str, Any]:
    """Return the option values of preset ``name`` for ``algo`` ({} for none); an unknown name lists the presets."""
    if name is None:
        return {}
    if not isinstance(name, str):
        raise OptionError(f"preset must be a name, got {name!r}")
    from zoo_ext.presets import PRESETS
    from zoo_ext.registry import UnknownNameError

    try:
        values = PRESETS.get(name)(algo)
    except UnknownNameError as exc:
        raise OptionError(str(exc)) from exc
    unknown = sorted(key for key in values if key not in _BY_DEST or key == "preset")
    if unknown:
        raise OptionError(f"preset {name!r} sets unknown option(s) {', '.join(unknown)}")
    return values


def _check_racing(options: ZooOptions, names: _Names) -> None:
    """Raise :class:`OptionError` if seed racing is asked for without seeds to race, or the racing pruner without it."""
    racing, n_seeds, pruner = names("seed_racing"), names("n_seeds"), names("pruner")
    if options.seed_racing and options.n_seeds < 2 and not options.tune_envs:
        raise names.error(
            f"{racing} races a trial's seeds: it needs {n_seeds} of at least 2, got {options.n_seeds} (or several"
            f" envs: {names('tune_envs')})",
            "seed_racing",
            "n_seeds",
        )
    if options.pruner == "racing" and not options.seed_racing:
        raise names.error(f"{pruner} 'racing' compares the seeds of trials: it needs {racing}", "pruner", "seed_racing")


def _check_scheduler(options: ZooOptions, names: _Names, given: set[str]) -> None:
    """Raise :class:`OptionError` for a population setting out of range or a combination PBT cannot run."""
    scheduler = names("scheduler")
    if not 0 <= options.pbt_quantile <= 0.5:
        quantile = names("pbt_quantile")
        raise names.error(f"{quantile} must be between 0 and 0.5, got {options.pbt_quantile}", "pbt_quantile")
    if not 0 <= options.pbt_resample_probability <= 1:
        raise names.error(
            f"{names('pbt_resample_probability')} must be between 0 and 1, got {options.pbt_resample_probability}",
            "pbt_resample_probability",
        )
    if options.scheduler == "none":
        return
    refusals = {
        "seed_racing": (options.seed_racing, "has no seeds to race: each member is one model"),
        "n_seeds": (options.n_seeds != 1, f"trains one model per member: {names('n_seeds')} must be 1"),
        "objectives": (
            options.objectives != ("mean_reward",),
            f"ranks members by their evaluation return: drop {names('objectives')}",
        ),
        "pruner": (
            "pruner" in given and options.pruner != "none",
            f"replaces pruning (a bad member copies a good one): drop {names('pruner')}",
        ),
        "tune_envs": (bool(options.tune_envs), f"trains each member on one env: drop {names('tune_envs')}"),
        "n_workers": (
            options.n_workers > options.population,
            f"runs at most one segment per member at a time: {names('n_workers')} {options.n_workers} is more"
            f" than {names('population')} {options.population}",
        ),
    }
    for dest, (refused, why) in refusals.items():
        if refused:
            raise names.error(f"{scheduler} {options.scheduler} {why}", "scheduler", dest)


def check(options: ZooOptions, *, algo: str, names: _Names | None = None) -> None:
    """Raise :class:`OptionError` if a name in ``options`` does not resolve or an objective is unusable."""
    from zoo_ext.hub import HubError
    from zoo_ext.objectives import ObjectiveError, resolve_objectives
    from zoo_ext.pruners import check_pruner_name
    from zoo_ext.registry import DottedPathError, UnknownNameError
    from zoo_ext.samplers import check_sampler_name
    from zoo_ext.spaces import SEARCH_SPACES
    from zoo_ext.spaces._probe import InvalidSearchSpaceError

    checks: dict[str, Callable[[], object]] = {
        "search_space": lambda: SEARCH_SPACES.check(options.search_space, algo),
        "sampler": lambda: check_sampler_name(options.sampler),
        "pruner": lambda: check_pruner_name(options.pruner),
        "objectives": lambda: resolve_objectives(options.objectives),
    }
    for dest, run in checks.items():
        try:
            run()
        except (UnknownNameError, DottedPathError, InvalidSearchSpaceError, HubError, ObjectiveError) as exc:
            raise (OptionError(str(exc)) if names is None else names.error(str(exc), dest)) from exc
