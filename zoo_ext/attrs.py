"""What a study stores: every study and trial user attribute zoo_ext reads or writes, with its type.

A study is the source of truth for resumes, workers on other machines, reports and
``mlflow-sync``, so its keys are declared once here and imported everywhere else; a key typed as a
bare string elsewhere is a bug. :data:`STUDY_TYPES` and :data:`TRIAL_TYPES` give each key's
JSON type. Why a trial failed is a :class:`FailKind` in its own attribute (``fail_kind``) beside
the human ``fail_reason``; :func:`fail_kind` also reads studies written before that attribute
existed, from the reason's prefix.

Example::

    from zoo_ext.attrs import FailKind, TrialAttr, fail_kind

    trial.set_user_attr(TrialAttr.FAIL_REASON, "diverged")
    if fail_kind(frozen) is FailKind.INTERRUPTED:
        ...
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

__all__ = ["STUDY_TYPES", "TRIAL_TYPES", "FailKind", "StudyAttr", "TrialAttr", "fail_kind", "set_failure"]


class StudyAttr(StrEnum):
    """Study user attributes."""

    #: The command line that created the study (storage password redacted).
    COMMAND = "command"
    ALGO = "algo"
    ENV_ID = "env_id"
    #: The env's hyperparams entry the trials' records are exported on top of.
    ZOO_CONFIG = "zoo_config"
    #: zoo_ext's resolved options when the study was created.
    OPTIONS = "zoo_ext_options"
    #: What defines the study (space, objectives, seeds): a resume must match it.
    FINGERPRINT = "zoo_ext_fingerprint"
    #: The study's stable id in MLflow (its parent run is found by it).
    UID = "zoo_ext_uid"
    #: ``zoo_ext.mlflow.track``'s settings, for ``mlflow-sync``.
    TRACK = "zoo_ext_mlflow"
    #: The stop rules' settings (budget steps, target, patience).
    BUDGET = "budget"
    #: Why a stop rule ended the study (None once a resumed study ran on).
    STOP_REASON = "stop_reason"
    #: Re-evaluation on fresh seeds: per trial number (and ``baseline``) seeds, scores, statistics.
    TEST_SCORES = "test_scores"
    #: The objectives' names, in order.
    OBJECTIVES = "objectives"
    #: The warm start: which tuned values the space could and could not represent.
    WARM_START = "warm_start"
    #: A population's plan (``--scheduler``): scheduler, population, interval, generations, keys.
    PBT_PLAN = "pbt_plan"
    #: ``--tune-envs``: per env, the returns scoring 0 and 1 (``lo``, ``hi``; hi None: the best so far), their source.
    ENV_SCORES = "env_scores"
    #: ``--tune-envs``: per env other than ``--env``, its hyperparams entry (as ``zoo_config`` is ``--env``'s).
    ZOO_CONFIG_PER_ENV = "zoo_config_per_env"
    #: ``--mlflow-mirror``: the folder of the study's report (trials.csv, plots) the mirror uploads at the end.
    REPORT = "report_folder"


class TrialAttr(StrEnum):
    """Trial user attributes."""

    #: The constructor kwargs the trial trained with (``zoo_ext.record``).
    RECORD = "hyperparams"
    SEARCH_SPACE = "search_space"
    #: The process that runs the trial: host, pid, start time.
    WORKER = "worker"
    SEED = "seed"
    SEEDS = "seeds"
    #: Seeds a raced trial ran before it was stopped.
    SEEDS_RUN = "seeds_run"
    OBJECTIVES = "objectives"
    #: Objective name -> score per seed.
    PER_SEED = "per_seed"
    #: Evaluation curve (aggregate over seeds): timesteps, mean_reward, std_reward.
    EVALUATIONS = "evaluations"
    EVALUATIONS_PER_SEED = "evaluations_per_seed"
    #: Env steps trained by all its seeds, written at every evaluation.
    ENV_STEPS = "env_steps"
    #: Gradient steps of all its seeds.
    N_UPDATES = "n_updates"
    N_PARAMS = "n_params"
    TRAIN_TIME = "train_time"
    NORMALIZE_GAMMA = "normalize_gamma"
    #: The kwargs fitted under ``-n``: key -> {"from": sampled, "to": trained}.
    CLIPPED = "clipped"
    PRUNE_REASON = "prune_reason"
    #: Which pruner rule pruned the trial (the summary counts them).
    PRUNE_RULE = "prune_rule"
    #: ``--tune-envs``: per env, the raw and normalised score of each seed, and the ``hi`` it was normalised by.
    PER_ENV = "per_env"
    #: ``--tune-envs``: per env other than ``--env``, its constructor kwargs (the ``hyperparams`` record's format).
    RECORD_PER_ENV = "hyperparams_per_env"
    FAIL_REASON = "fail_reason"
    #: A :class:`FailKind`.
    FAIL_KIND = "fail_kind"
    #: The trial is the warm start (the env's tuned config).
    WARM_START = "warm_start"
    #: Written by the built-in spaces for reports.
    NET_ARCH = "net_arch"
    REPLAY_RATIO = "replay_ratio"
    #: Population-based training: the member a segment trial belongs to (0 ... population - 1).
    PBT_MEMBER = "pbt_member"
    #: The segment's index in its member's training (0: the first ``--perturb-interval`` steps).
    PBT_GENERATION = "pbt_generation"
    #: The trial whose checkpoint the segment started from (absent in generation 0).
    PBT_PARENT_TRIAL = "pbt_parent_trial"
    #: The segment copied a better member's checkpoint (exploit) instead of its own member's.
    PBT_EXPLOITED = "pbt_exploited"
    #: The segment's end checkpoint in the artifact store: file kind -> artifact id.
    PBT_CHECKPOINT = "pbt_checkpoint"
    #: The model's env steps when the segment ended (its age, across its lineage's segments).
    PBT_MODEL_STEPS = "pbt_model_steps"
    #: The perturbable values read back from the live model after the segment trained.
    PBT_LIVE = "pbt_live"


#: JSON type of each study attribute's value (None allowed where a value may be cleared).
STUDY_TYPES: Mapping[StudyAttr, type | tuple[type, ...]] = {
    StudyAttr.COMMAND: str,
    StudyAttr.ALGO: str,
    StudyAttr.ENV_ID: str,
    StudyAttr.ZOO_CONFIG: dict,
    StudyAttr.OPTIONS: dict,
    StudyAttr.FINGERPRINT: dict,
    StudyAttr.UID: str,
    StudyAttr.TRACK: dict,
    StudyAttr.BUDGET: dict,
    StudyAttr.STOP_REASON: (str, type(None)),
    StudyAttr.TEST_SCORES: dict,
    StudyAttr.OBJECTIVES: list,
    StudyAttr.WARM_START: dict,
    StudyAttr.PBT_PLAN: dict,
    StudyAttr.ENV_SCORES: dict,
    StudyAttr.ZOO_CONFIG_PER_ENV: dict,
    StudyAttr.REPORT: str,
}

#: JSON type of each trial attribute's value.
TRIAL_TYPES: Mapping[TrialAttr, type | tuple[type, ...]] = {
    TrialAttr.RECORD: dict,
    TrialAttr.SEARCH_SPACE: str,
    TrialAttr.WORKER: dict,
    TrialAttr.SEED: int,
    TrialAttr.SEEDS: list,
    TrialAttr.SEEDS_RUN: int,
    TrialAttr.OBJECTIVES: list,
    TrialAttr.PER_SEED: dict,
    TrialAttr.EVALUATIONS: list,
    TrialAttr.EVALUATIONS_PER_SEED: list,
    TrialAttr.ENV_STEPS: int,
    TrialAttr.N_UPDATES: int,
    TrialAttr.N_PARAMS: int,
    TrialAttr.TRAIN_TIME: float,
    TrialAttr.NORMALIZE_GAMMA: float,
    TrialAttr.CLIPPED: dict,
    TrialAttr.PRUNE_REASON: str,
    TrialAttr.PRUNE_RULE: str,
    TrialAttr.PER_ENV: dict,
    TrialAttr.RECORD_PER_ENV: dict,
    TrialAttr.FAIL_REASON: str,
    TrialAttr.FAIL_KIND: str,
    TrialAttr.WARM_START: bool,
    TrialAttr.NET_ARCH: list,
    TrialAttr.REPLAY_RATIO: float,
    TrialAttr.PBT_MEMBER: int,
    TrialAttr.PBT_GENERATION: int,
    TrialAttr.PBT_PARENT_TRIAL: int,
    TrialAttr.PBT_EXPLOITED: bool,
    TrialAttr.PBT_CHECKPOINT: dict,
    TrialAttr.PBT_MODEL_STEPS: int,
    TrialAttr.PBT_LIVE: dict,
}


class FailKind(StrEnum):
    """Why a trial failed: only ``ERROR`` says something about its configuration."""

    #: Its own configuration or code failed (exception, divergence, bad space output).
    ERROR = "error"
    #: SIGINT or SIGTERM stopped it.
    INTERRUPTED = "interrupted"
    #: Its worker process died (killed, out of memory, no heartbeat).
    DEAD_WORKER = "dead_worker"
    #: Created after other workers had taken the study's last trials: never run.
    NOT_RUN = "not_run"


#: ``fail_reason`` prefixes of the kinds, for studies written before ``fail_kind`` existed.
_LEGACY_PREFIXES = {
    "interrupted by ": FailKind.INTERRUPTED,
    "worker process ": FailKind.DEAD_WORKER,
    "not run: ": FailKind.NOT_RUN,
}


def fail_kind(user_attrs: Mapping[str, Any]) -> FailKind | None:
    """Return why a failed trial failed, from its user attributes; None if it records no reason at all.

    None: a worker killed before it wrote a reason, or a stock study; callers treat it as not the
    configuration's fault, like every kind but :attr:`FailKind.ERROR`.
    """
    kind = user_attrs.get(TrialAttr.FAIL_KIND)
    if isinstance(kind, str) and kind in FailKind._value2member_map_:
        return FailKind(kind)
    reason = user_attrs.get(TrialAttr.FAIL_REASON)
    if not isinstance(reason, str):
        return None
    for prefix, legacy in _LEGACY_PREFIXES.items():
        if reason.startswith(prefix):
            return legacy
    return FailKind.ERROR


def set_failure(set_user_attr: Any, kind: FailKind, reason: str) -> None:
    """Record why a trial failed with ``set_user_attr(key, value)`` (a trial's, or a storage's bound to one)."""
    set_user_attr(TrialAttr.FAIL_KIND, kind.value)
    set_user_attr(TrialAttr.FAIL_REASON, reason)
