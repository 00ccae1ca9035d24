"""One definition of every zoo_ext option: used for the CLI flags and the YAML ``zoo_ext:`` block.

A value given on the command line wins over the env's ``zoo_ext:`` block in the hyperparams
YAML, which wins over the default::

    Pendulum-v1:
      n_timesteps: !!float 1e5
      policy: 'MlpPolicy'
      zoo_ext:
        search_space: zoo
        sampler: random
        pruner: hyperband
        pruner_kwargs: {reduction_factor: 2}
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NoReturn

__all__ = ["OPTIONS", "YAML_KEY", "Option", "OptionError", "ZooOptions", "add_arguments", "resolve"]

YAML_KEY = "zoo_ext"


class OptionError(ValueError):
    """A zoo_ext option has a value that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Option:
    """One zoo_ext option: its flag, default, kind (``str``, ``int``, ``float``, ``flag``, ``list``, ``dict``), help."""

    dest: str
    flag: str
    default: Any
    help: str
    kind: str = "str"
    #: Valid values of a ``str`` option (None: any).
    choices: tuple[str, ...] | None = None
    #: Defined by rl_zoo3's own parser (zoo_ext only widens its choices).
    stock: bool = False


OPTIONS: tuple[Option, ...] = (
    Option(
        "preset",
        "--preset",
        None,
        "A named bundle of the options below (e.g. cold: tuning with no tuned table); options given win over it",
    ),
    Option(
        "search_space",
        "--search-space",
        "zoo",
        "Search space: a name registered for --algo (see `python -m zoo_ext list`) or package.module:function",
    ),
    Option("sampler", "--sampler", "tpe", "Optuna sampler: name, hub:PACKAGE or dotted path", stock=True),
    Option("sampler_kwargs", "--sampler-kwargs", {}, "Sampler keyword arguments (key:value ...)", kind="dict"),
    Option("pruner", "--pruner", "median", "Optuna pruner: name or dotted path", stock=True),
    Option("pruner_kwargs", "--pruner-kwargs", {}, "Pruner keyword arguments (key:value ...)", kind="dict"),
    Option(
        "warm_start",
        "--warm-start",
        False,
        "Enqueue rl_zoo3's tuned hyperparameters for this env/algo as trial 0 (what the space can represent)",
        kind="flag",
    ),
    Option(
        "objectives",
        "--objectives",
        ("mean_reward",),
        "Objective names (several: a multi-objective study); see `python -m zoo_ext list`",
        kind="list",
    ),
    Option("n_seeds", "--n-seeds", 1, "Training runs (seeds) per trial", kind="int"),
    Option(
        "seed_racing",
        "--seed-racing",
        False,
        "Train a trial's --n-seeds seeds one after another (the same seeds in every trial), report each seed's score"
        " and stop the trial once the pruner finds it worse than the best trial (default pruner: racing)",
        kind="flag",
    ),
    Option(
        "n_workers",
        "--n-workers",
        1,
        "Worker processes on this machine sharing the study (a journal file in the log folder without --storage)",
        kind="int",
    ),
    Option(
        "heartbeat_interval",
        "--heartbeat-interval",
        30,
        "Database storage: seconds between a running trial's heartbeats (0: off); a trial whose worker died is"
        " failed after --grace-period and retried",
        kind="int",
    ),
    Option(
        "grace_period",
        "--grace-period",
        0,
        "Database storage: seconds without a heartbeat after which a running trial is failed (0: 2 x interval)",
        kind="int",
    ),
    Option(
        "trial_retries",
        "--trial-retries",
        1,
        "Retries of a trial whose worker died or was interrupted (SIGINT/SIGTERM), with its parameters",
        kind="int",
    ),
    Option(
        "max_consecutive_failures",
        "--max-consecutive-failures",
        5,
        "Stop every worker (exit status 1) after this many failed trials in a row in the study (0: never)",
        kind="int",
    ),
    Option(
        "seed_aggregate",
        "--seed-aggregate",
        "mean",
        "How the seeds' values make the trial's value: mean, median, iqm or min",
        choices=("mean", "median", "iqm", "min"),
    ),
    Option(
        "objective_metric",
        "--objective-metric",
        "last",
        "Which evaluation of a run is its reward: last (stock), best or mean",
        choices=("last", "best", "mean"),
    ),
    Option(
        "reevaluate_top",
        "--reevaluate-top",
        0,
        "When the study ends, re-train the K best (Pareto-optimal) trials with fresh seeds",
        kind="int",
    ),
    Option("eval_seeds", "--eval-seeds", 5, "Fresh seeds per re-evaluated trial", kind="int"),
    Option(
        "budget_steps",
        "--budget-steps",
        0,
        "Stop the study once its trials (complete, pruned, failed and running, all workers) trained this many env"
        " steps (0: no limit); a running trial finishes",
        kind="int",
    ),
    Option(
        "target_value",
        "--target-value",
        None,
        "Stop the study once a trial's (first) objective reaches this value, in the study's direction",
        kind="float",
    ),
    Option(
        "patience",
        "--patience",
        0,
        "Stop the study after this many finished trials without a better (first) objective than the best (0: never)",
        kind="int",
    ),
    Option(
        "no_progress",
        "--no-progress",
        False,
        "Do not draw the live progress line (trials or env steps done, states, best value, ETA) on a terminal",
        kind="flag",
    ),
    Option(
        "mlflow_tracking_uri",
        "--mlflow-tracking-uri",
        None,
        "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's default local store ./mlflow.db)",
    ),
    Option("mlflow_experiment", "--mlflow-experiment", None, "MLflow experiment name (default: <algo>-<env id>)"),
    Option("no_mlflow", "--no-mlflow", False, "Do not log the study to MLflow", kind="flag"),
    Option(
        "mlflow_log_models",
        "--mlflow-log-models",
        False,
        "Log every completed trial's model zip to its MLflow run (default: only each new best trial's)",
        kind="flag",
    ),
    Option(
        "hub_registry",
        "--hub-registry",
        None,
        "Local OptunaHub registry folder (holding samplers/<name>/..., pruners/<name>/...) for hub: and auto",
    ),
)
_BY_DEST = {option.dest: option for option in OPTIONS}


def _default(dest: str) -> Any:
    """Return a dataclass field whose default is ``OPTIONS``' default for ``dest`` (a fresh copy)."""
    return field(default_factory=functools.partial(copy.deepcopy, _BY_DEST[dest].default))


@dataclass(frozen=True)
class ZooOptions:
    """The resolved zoo_ext options of one experiment (defaults: :data:`OPTIONS`, written once there)."""

    preset: str | None = _default("preset")
    search_space: str = _default("search_space")
    sampler: str = _default("sampler")
    sampler_kwargs: dict[str, Any] = _default("sampler_kwargs")
    pruner: str = _default("pruner")
    pruner_kwargs: dict[str, Any] = _default("pruner_kwargs")
    hub_registry: str | None = _default("hub_registry")
    warm_start: bool = _default("warm_start")
    mlflow_tracking_uri: str | None = _default("mlflow_tracking_uri")
    mlflow_experiment: str | None = _default("mlflow_experiment")
    no_mlflow: bool = _default("no_mlflow")
    mlflow_log_models: bool = _default("mlflow_log_models")
    objectives: tuple[str, ...] = _default("objectives")
    n_seeds: int = _default("n_seeds")
    seed_racing: bool = _default("seed_racing")
    n_workers: int = _default("n_workers")
    heartbeat_interval: int = _default("heartbeat_interval")
    grace_period: int = _default("grace_period")
    trial_retries: int = _default("trial_retries")
    max_consecutive_failures: int = _default("max_consecutive_failures")
    seed_aggregate: str = _default("seed_aggregate")
    objective_metric: str = _default("objective_metric")
    reevaluate_top: int = _default("reevaluate_top")
    eval_seeds: int = _default("eval_seeds")
    budget_steps: int = _default("budget_steps")
    target_value: float | None = _default("target_value")
    patience: int = _default("patience")
    no_progress: bool = _default("no_progress")


def add_arguments(parser: argparse.ArgumentParser, store_dict: type[argparse.Action]) -> None:
    """Add zoo_ext's own flags to ``parser`` (stock flags it widens are already there)."""
    group = parser.add_argument_group("zoo_ext")
    store_dict = _with_quoting_hint(store_dict)
    for option in OPTIONS:
        if option.stock:
            continue
        if option.kind == "dict":
            group.add_argument(option.flag, dest=option.dest, type=str, nargs="+", action=store_dict, help=option.help)
        elif option.kind == "flag":
            group.add_argument(option.flag, dest=option.dest, action="store_true", default=None, help=option.help)
        elif option.kind == "list":
            group.add_argument(option.flag, dest=option.dest, type=str, nargs="+", default=None, help=option.help)
        elif option.kind == "int":
            group.add_argument(option.flag, dest=option.dest, type=int, default=None, help=option.help)
        elif option.kind == "float":
            group.add_argument(option.flag, dest=option.dest, type=float, default=None, help=option.help)
        else:
            group.add_argument(option.flag, dest=option.dest, type=str, default=None, help=option.help)


def _with_quoting_hint(store_dict: type[argparse.Action]) -> type[argparse.Action]:
    """Return ``store_dict`` (rl_zoo3's ``key:value`` action, which ``eval``s each value) exiting 2 on a bad value.

    A bare word such as ``restart_strategy:ipop`` is a NameError in ``eval``: the message says to quote it.
    """

    class QuotingStoreDict(store_dict):  # type: ignore[misc,valid-type]
        def __call__(
            self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: Any = None
        ) -> None:
            parsed: dict[str, Any] = {}
            for item in values:
                key, sep, value = item.partition(":")
                if not sep or not key:
                    exit_with_error(OptionError(f"{option_string} {item!r}: expected key:value"))
                try:
                    super().__call__(parser, namespace, [item], option_string)
                except (NameError, SyntaxError) as exc:
                    exit_with_error(
                        OptionError(
                            f"{option_string} {item!r}: values are Python expressions ({type(exc).__name__}: {exc});"
                            f" to pass a string, quote it: {key}:\"'{value}'\""
                        )
                    )
                parsed.update(getattr(namespace, self.dest))
            setattr(namespace, self.dest, parsed)

    return QuotingStoreDict


def resolve(args: argparse.Namespace, block: Any, *, algo: str) -> ZooOptions:
    """Return the options of this run: command line, then the YAML block, then the preset, then defaults.

    Names are checked here, before any environment is built: an unknown search space, sampler
    or pruner raises :class:`OptionError` with the valid choices.
    """
    if block is None:
        block = {}
    if not isinstance(block, Mapping):
        raise OptionError(f"the {YAML_KEY!r} block of the hyperparams file must be a mapping, got {block!r}")
    unknown = sorted(set(block) - set(_BY_DEST))
    if unknown:
        raise OptionError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in the {YAML_KEY!r} block. "
            f"Valid keys: {', '.join(sorted(_BY_DEST))}"
        )
    # Parsed by zoo_ext's parser: stock flags default to None when not given. Parsed by the stock
    # parser (activation through --gym-packages): a stock flag left at its stock default is "unset".
    zoo_parsed = hasattr(args, "search_space")
    preset = _preset(getattr(args, "preset", None) or block.get("preset"), algo)
    values: dict[str, Any] = {}
    given: set[str] = set()
    for option in OPTIONS:
        cli = getattr(args, option.dest, None)
        if option.stock and not zoo_parsed and cli == option.default:
            cli = None
        if cli is not None or option.dest in block:
            given.add(option.dest)
        default = preset.get(option.dest, option.default)
        value = cli if cli is not None else block.get(option.dest, default)
        if option.kind == "dict":
            if not isinstance(value, Mapping):
                raise OptionError(f"{option.dest} must be a mapping of keyword arguments, got {value!r}")
            value = dict(value)
        elif option.kind == "flag":
            if not isinstance(value, bool):
                raise OptionError(f"{option.dest} must be true or false, got {value!r}")
        elif option.kind == "list":
            value = [value] if isinstance(value, str) else value
            if not value or not all(isinstance(item, str) for item in value):
                raise OptionError(f"{option.dest} must be a list of names, got {value!r}")
            value = tuple(value)
        elif option.kind == "int":
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # YAML step counts are often written !!float 8e5, as rl_zoo3's n_timesteps
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise OptionError(f"{option.dest} must be a non-negative integer, got {value!r}")
        elif option.kind == "float":
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise OptionError(f"{option.dest} must be a number, got {value!r}")
            if value is not None and not math.isfinite(value):
                raise OptionError(f"{option.dest} must be a finite number, got {value!r}")
            value = None if value is None else float(value)
        elif value is not None and not isinstance(value, str):
            raise OptionError(f"{option.dest} must be a string, got {value!r}")
        elif option.choices is not None and value not in option.choices:
            raise OptionError(f"{option.dest} must be one of {', '.join(option.choices)}, got {value!r}")
        values[option.dest] = value
    for name in ("sampler", "pruner"):  # a preset's kwargs belong to its own sampler/pruner
        if name in given and f"{name}_kwargs" not in given and values[name] != preset.get(name):
            values[f"{name}_kwargs"] = {}
    if values["seed_racing"] and "pruner" not in given:
        values["pruner"] = "racing"
        if "pruner_kwargs" not in given:
            values["pruner_kwargs"] = {}
    options = ZooOptions(**values)
    if options.n_seeds < 1:
        raise OptionError("n_seeds must be at least 1")
    if options.n_workers < 1:
        raise OptionError(f"n_workers must be at least 1 (1: this process only), not {options.n_workers}")
    if options.eval_seeds < 1:
        raise OptionError(
            f"eval_seeds must be at least 1 (fresh seeds per re-evaluated trial), not {options.eval_seeds}"
        )
    if 0 < options.grace_period < options.heartbeat_interval:
        raise OptionError(
            f"grace_period ({options.grace_period} s) must be at least heartbeat_interval "
            f"({options.heartbeat_interval} s): a trial silent for the grace period is failed, so a shorter one "
            "fails live trials between two heartbeats (0: twice the interval)"
        )
    _check_racing(options)
    check(options, algo=algo)
    return options


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


def _check_racing(options: ZooOptions) -> None:
    """Raise :class:`OptionError` if seed racing is asked for without seeds to race, or the racing pruner without it."""
    if options.seed_racing and options.n_seeds < 2:
        raise OptionError(f"seed_racing races a trial's seeds: it needs n_seeds of at least 2, got {options.n_seeds}")
    if options.seed_racing and len(options.objectives) > 1:
        raise OptionError(
            f"seed_racing needs a single objective (Optuna cannot prune a multi-objective study), got "
            f"{', '.join(options.objectives)}"
        )
    if options.pruner == "racing" and not options.seed_racing:
        raise OptionError("pruner 'racing' compares the seeds of trials: it needs seed_racing (--seed-racing)")


def check(options: ZooOptions, *, algo: str) -> None:
    """Raise :class:`OptionError` if a name in ``options`` does not resolve or an objective is unusable."""
    from zoo_ext.hub import HubError
    from zoo_ext.objectives import ObjectiveError, resolve_objectives
    from zoo_ext.pruners import check_pruner_name
    from zoo_ext.registry import DottedPathError, UnknownNameError
    from zoo_ext.samplers import check_sampler_name
    from zoo_ext.spaces import SEARCH_SPACES
    from zoo_ext.spaces._probe import InvalidSearchSpaceError

    try:
        SEARCH_SPACES.check(options.search_space, algo)
        check_sampler_name(options.sampler)
        check_pruner_name(options.pruner)
        resolve_objectives(options.objectives)
    except (UnknownNameError, DottedPathError, InvalidSearchSpaceError, HubError, ObjectiveError) as exc:
        raise OptionError(str(exc)) from exc


def as_dict(options: ZooOptions) -> dict[str, Any]:
    """Return ``options`` as a plain dict (for study attributes and logs), passwords in URLs redacted."""
    from zoo_ext.storage import redact_all

    return {f.name: redact_all(getattr(options, f.name)) for f in fields(options)}


def exit_with_error(exc: Exception) -> NoReturn:
    """Print ``exc`` like argparse does and exit with status 2 (a usage error)."""
    print(f"zoo_ext: error: {exc}", file=sys.stderr)
    raise SystemExit(2)
