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
import contextlib
import copy
import functools
import math
import stat
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

from zoo_ext.errors import BadInputError

__all__ = [
    "OPTIONS",
    "YAML_KEY",
    "Option",
    "OptionError",
    "ZooOptions",
    "add_arguments",
    "check_writable_folder",
    "resolve",
]

YAML_KEY = "zoo_ext"


class OptionError(BadInputError, ValueError):
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
    #: Smallest valid value of an ``int`` option, and what that value means (said when a smaller one is refused).
    minimum: int = 0
    minimum_note: str = ""


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
    Option("n_seeds", "--n-seeds", 1, "Training runs (seeds) per trial", kind="int", minimum=1),
    Option(
        "seed_racing",
        "--seed-racing",
        False,
        "Train a trial's --n-seeds seeds one after another (the same seeds in every trial), report each seed's score"
        " and stop the trial once the pruner finds it worse than the best trial (default pruner: racing)",
        kind="flag",
    ),
    Option(
        "no_clip_to_budget",
        "--no-clip-to-budget",
        False,
        "Train every sampled value as it is, as stock rl_zoo3 does, even a rollout (n_steps x n_envs) or train_freq"
        " longer than -n (default: clipped to fit -n, recorded in the trial's user attribute clipped)",
        kind="flag",
    ),
    Option(
        "n_workers",
        "--n-workers",
        1,
        "Worker processes on this machine sharing the study (a journal file in the log folder without --storage)",
        kind="int",
        minimum=1,
        minimum_note="1: this process only",
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
    Option(
        "eval_seeds",
        "--eval-seeds",
        5,
        "Fresh seeds per re-evaluated trial",
        kind="int",
        minimum=1,
        minimum_note="fresh seeds per re-evaluated trial",
    ),
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
    no_clip_to_budget: bool = _default("no_clip_to_budget")
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
    """Add zoo_ext's own flags to ``parser`` (stock flags it widens are already there); help texts in plain text."""
    from zoo_ext.registry import plain_text

    group = parser.add_argument_group("zoo_ext")
    store_dict = _with_quoting_hint(store_dict)
    for option in OPTIONS:
        if option.stock:
            continue
        text = plain_text(option.help)
        if option.kind == "dict":
            group.add_argument(option.flag, dest=option.dest, type=str, nargs="+", action=store_dict, help=text)
        elif option.kind == "flag":
            group.add_argument(option.flag, dest=option.dest, action="store_true", default=None, help=text)
        elif option.kind == "list":
            group.add_argument(option.flag, dest=option.dest, type=str, nargs="+", default=None, help=text)
        elif option.kind == "int":
            group.add_argument(option.flag, dest=option.dest, type=int, default=None, help=text)
        elif option.kind == "float":
            group.add_argument(option.flag, dest=option.dest, type=float, default=None, help=text)
        else:
            group.add_argument(option.flag, dest=option.dest, type=str, default=None, help=text)


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
        if not value or not all(isinstance(item, str) for item in value):
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
    if options.seed_racing and options.n_seeds < 2:
        raise names.error(
            f"{racing} races a trial's seeds: it needs {n_seeds} of at least 2, got {options.n_seeds}",
            "seed_racing",
            "n_seeds",
        )
    if options.seed_racing and len(options.objectives) > 1:
        raise names.error(
            f"{racing} needs a single objective (Optuna cannot prune a multi-objective study), got "
            f"{', '.join(options.objectives)}",
            "seed_racing",
            "objectives",
        )
    if options.pruner == "racing" and not options.seed_racing:
        raise names.error(f"{pruner} 'racing' compares the seeds of trials: it needs {racing}", "pruner", "seed_racing")


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


def as_dict(options: ZooOptions) -> dict[str, Any]:
    """Return ``options`` as a plain dict (for study attributes and logs), passwords in URLs redacted."""
    from zoo_ext.storage import redact_all

    return {f.name: redact_all(getattr(options, f.name)) for f in fields(options)}


def check_writable_folder(folder: str | Path, flag: str, *, value: str | None = None) -> None:
    """Raise :class:`OptionError` unless ``folder`` can be created (``mkdir -p``) and a file written in it.

    Tried, not read from permission bits: root writes in a ``chmod 555`` folder anyway, while nobody
    writes under ``/proc``, under a regular file or on a read-only mount. ``value``: the flag's value
    when it names a file in ``folder`` (default: ``folder``). Leaves nothing behind: the folders it
    made are removed again (the run makes them when it writes).
    """
    path = Path(folder)
    subject = f"{flag} {str(folder) if value is None else value!r}"
    missing = [p for p in (path, *path.parents) if _missing(p)]  # deepest first
    try:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocking = next((p for p in (path, *path.parents) if _not_a_folder(p)), None)
            reason = f"{str(blocking)!r} is not a folder" if blocking is not None else exc.strerror
            raise OptionError(f"{subject}: cannot create the folder {str(path)!r}: {reason or exc}") from exc
        try:
            with tempfile.NamedTemporaryFile(dir=path, prefix=".zoo_ext-write-check-"):
                pass
        except OSError as exc:
            raise OptionError(f"{subject}: cannot write in the folder {str(path)!r}: {exc.strerror or exc}") from exc
    finally:
        for made in missing:
            with contextlib.suppress(OSError):
                made.rmdir()


def _missing(path: Path) -> bool:
    """Return True only if ``path`` surely does not exist (a path it cannot look at counts as existing)."""
    try:
        path.stat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def _not_a_folder(path: Path) -> bool:
    """Return True if ``path`` exists and is no folder (a regular file, a device such as /dev/null)."""
    try:
        return not stat.S_ISDIR(path.stat().st_mode)
    except OSError:
        return False


def exit_with_error(exc: Exception) -> NoReturn:
    """Print ``exc`` like argparse does and exit with status 2 (a usage error)."""
    print(f"zoo_ext: error: {exc}", file=sys.stderr)
    raise SystemExit(2)
