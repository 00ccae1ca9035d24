"""The option table: every zoo_ext option once (flag, YAML key, default, kind, help), and :class:`ZooOptions`."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from zoo_ext.errors import BadInputError

__all__ = ["OPTIONS", "YAML_KEY", "Option", "OptionError", "ZooOptions", "as_dict"]

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
        "scheduler",
        "--scheduler",
        "none",
        "Population-based training instead of one static config per trial: pbt (exploit a better member's"
        " checkpoint, perturb its values) or pb2 (the same, explore by a GP bandit); none: a plain study",
        choices=("none", "pbt", "pb2"),
    ),
    Option(
        "population",
        "--population",
        8,
        "PBT/PB2: members trained side by side; each runs -n env steps in segments of --perturb-interval",
        kind="int",
        minimum=2,
        minimum_note="a population needs another member to copy",
    ),
    Option(
        "perturb_interval",
        "--perturb-interval",
        0,
        "PBT/PB2: env steps of one segment (one trial) between exploit/explore steps (0: a tenth of -n)",
        kind="int",
    ),
    Option(
        "pbt_quantile",
        "--pbt-quantile",
        0.25,
        "PBT/PB2: the bottom fraction of members that copy a member of the top fraction (0 to 0.5)",
        kind="float",
    ),
    Option(
        "pbt_resample_probability",
        "--pbt-resample-probability",
        0.25,
        "PBT: chance that an explored value is drawn anew from its range instead of multiplied by 0.8 or 1.2",
        kind="float",
    ),
    Option(
        "pbt_keys",
        "--pbt-keys",
        (),
        "PBT/PB2: the constructor kwargs perturbed during training (default: every key the algorithm can change"
        " in a live model; see `python -m zoo_ext list`)",
        kind="list",
    ),
    Option(
        "artifact_store",
        "--artifact-store",
        None,
        "PBT/PB2: where checkpoints go: a folder (default: <log folder>/artifacts) or s3://BUCKET for many machines",
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
        "tune_envs",
        "--tune-envs",
        (),
        "Train and evaluate each trial's config on these envs too (--env first; each env's own rl_zoo3 config"
        " for n_envs, wrappers, normalisation and policy, the sampled keys on top); the value aggregates their"
        " normalised scores",
        kind="list",
    ),
    Option(
        "env_scores",
        "--env-scores",
        (),
        "--tune-envs: the returns that score 0 and 1 per env, as ENV:LO:HI (default: LO a random policy's"
        " return, HI the best return so far on that env)",
        kind="list",
    ),
    Option(
        "env_aggregate",
        "--env-aggregate",
        "iqm",
        "--tune-envs: how the envs' normalised scores (each aggregated over seeds) make the trial's value",
        choices=("iqm", "mean", "median", "min"),
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
        "mlflow_mirror",
        "--mlflow-mirror",
        False,
        "Log to MLflow from one mirror process (python -m zoo_ext mlflow-mirror) that follows the study's storage,"
        " instead of inside the training processes (which then import no MLflow); without --storage the study is"
        " kept in a journal file in the log folder",
        kind="flag",
    ),
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


def _fresh(dest: str) -> Callable[[], Any]:
    """Return a factory of fresh copies of ``OPTIONS``' default for ``dest`` (a :class:`ZooOptions` field's)."""
    return functools.partial(copy.deepcopy, _BY_DEST[dest].default)


@dataclass(frozen=True)
class ZooOptions:
    """The resolved zoo_ext options of one experiment (defaults: :data:`OPTIONS`, written once there)."""

    preset: str | None = field(default_factory=_fresh("preset"))
    search_space: str = field(default_factory=_fresh("search_space"))
    sampler: str = field(default_factory=_fresh("sampler"))
    sampler_kwargs: dict[str, Any] = field(default_factory=_fresh("sampler_kwargs"))
    pruner: str = field(default_factory=_fresh("pruner"))
    pruner_kwargs: dict[str, Any] = field(default_factory=_fresh("pruner_kwargs"))
    hub_registry: str | None = field(default_factory=_fresh("hub_registry"))
    warm_start: bool = field(default_factory=_fresh("warm_start"))
    mlflow_tracking_uri: str | None = field(default_factory=_fresh("mlflow_tracking_uri"))
    mlflow_experiment: str | None = field(default_factory=_fresh("mlflow_experiment"))
    no_mlflow: bool = field(default_factory=_fresh("no_mlflow"))
    mlflow_mirror: bool = field(default_factory=_fresh("mlflow_mirror"))
    mlflow_log_models: bool = field(default_factory=_fresh("mlflow_log_models"))
    objectives: tuple[str, ...] = field(default_factory=_fresh("objectives"))
    n_seeds: int = field(default_factory=_fresh("n_seeds"))
    seed_racing: bool = field(default_factory=_fresh("seed_racing"))
    no_clip_to_budget: bool = field(default_factory=_fresh("no_clip_to_budget"))
    scheduler: str = field(default_factory=_fresh("scheduler"))
    population: int = field(default_factory=_fresh("population"))
    perturb_interval: int = field(default_factory=_fresh("perturb_interval"))
    pbt_quantile: float = field(default_factory=_fresh("pbt_quantile"))
    pbt_resample_probability: float = field(default_factory=_fresh("pbt_resample_probability"))
    pbt_keys: tuple[str, ...] = field(default_factory=_fresh("pbt_keys"))
    artifact_store: str | None = field(default_factory=_fresh("artifact_store"))
    n_workers: int = field(default_factory=_fresh("n_workers"))
    heartbeat_interval: int = field(default_factory=_fresh("heartbeat_interval"))
    grace_period: int = field(default_factory=_fresh("grace_period"))
    trial_retries: int = field(default_factory=_fresh("trial_retries"))
    max_consecutive_failures: int = field(default_factory=_fresh("max_consecutive_failures"))
    seed_aggregate: str = field(default_factory=_fresh("seed_aggregate"))
    tune_envs: tuple[str, ...] = field(default_factory=_fresh("tune_envs"))
    env_scores: tuple[str, ...] = field(default_factory=_fresh("env_scores"))
    env_aggregate: str = field(default_factory=_fresh("env_aggregate"))
    objective_metric: str = field(default_factory=_fresh("objective_metric"))
    reevaluate_top: int = field(default_factory=_fresh("reevaluate_top"))
    eval_seeds: int = field(default_factory=_fresh("eval_seeds"))
    budget_steps: int = field(default_factory=_fresh("budget_steps"))
    target_value: float | None = field(default_factory=_fresh("target_value"))
    patience: int = field(default_factory=_fresh("patience"))
    no_progress: bool = field(default_factory=_fresh("no_progress"))


def as_dict(options: ZooOptions) -> dict[str, Any]:
    """Return ``options`` as a plain dict (for study attributes and logs), passwords in URLs redacted."""
    from zoo_ext.storage import redact_all

    return {f.name: redact_all(getattr(options, f.name)) for f in fields(options)}
