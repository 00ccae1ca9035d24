"""Creating or joining the study: input checks, sampler and pruner, study attributes, warm start, tracker."""

from __future__ import annotations

import functools
import logging
import shlex
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
import yaml

from zoo_ext import envs, options, pbt, storage, tracking, workers
from zoo_ext.attrs import StudyAttr, TrialAttr
from zoo_ext.ceiling import BudgetError, fit_to_budget
from zoo_ext.errors import ZooExtError
from zoo_ext.objectives import resolve_objectives
from zoo_ext.pruners import create_pruner, is_multi_objective_pruner
from zoo_ext.registry import did_you_mean
from zoo_ext.samplers import create_sampler
from zoo_ext.schedules import LIVE_KEYS, live_keys
from zoo_ext.spaces import SEARCH_SPACES, SearchSpace
from zoo_ext.spaces._probe import SpaceInfo, accepted_kwargs, probe_space
from zoo_ext.spaces._warm import warm_start
from zoo_ext.study._resume import (
    FINGERPRINT_ATTR,
    StorageError,
    check_resume,
    fingerprint,
    joining_seed,
)
from zoo_ext.trial import Objective, merge_kwargs

if TYPE_CHECKING:
    from zoo_ext.experiment import Experiment

__all__ = ["StudySetup", "budget", "create_study", "create_tracker"]

_logger = logging.getLogger("zoo_ext.study")

#: Samplers that refuse several objectives.
SINGLE_OBJECTIVE_SAMPLERS = ("CmaEsSampler",)


@dataclass(frozen=True)
class StudySetup:
    """What :func:`create_study` decided: the study, its objective, and the settings this process runs it with."""

    study: optuna.Study
    objective: Objective
    #: The pruner the study runs with: ``--pruner``, or ``none`` for several objectives.
    pruner_used: str
    #: This process's sampler seed: ``--seed`` if it created the study, its own if it joined one.
    sampler_seed: int


def create_study(exp: Experiment) -> StudySetup:
    """Return the (new or resumed) study, its objective and the settings it runs with.

    Raise a :class:`~zoo_ext.errors.ZooExtError` on bad input (before the storage is touched), an
    unreachable storage or a study that may not be resumed with these settings.
    """
    opts = exp.options
    try:
        objectives = resolve_objectives(opts.objectives)
        directions = [o.direction for o in objectives]
        _check_config_keys(exp)
        plan = pbt.plan_for(exp)
        if not opts.no_clip_to_budget:
            _check_ceiling(exp, plan.interval if plan is not None else exp.n_timesteps)
        tuned = _tune_envs(exp)
        store = _check_population(exp, plan) if plan is not None else None
        space = SEARCH_SPACES.get(opts.search_space, exp.algo)
        info = _probe(exp, space, opts.search_space)
        make_sampler = functools.partial(
            create_sampler,
            opts.sampler,
            opts.sampler_kwargs,
            n_startup_trials=exp.n_startup_trials,
            directions=directions,
            space=info,
            hub_registry=opts.hub_registry,
        )
        sampler = make_sampler(seed=exp.seed)
        if len(directions) > 1 and type(sampler).__name__ in SINGLE_OBJECTIVE_SAMPLERS:
            raise options.OptionError(
                f"sampler {opts.sampler!r} ({type(sampler).__name__}) supports one objective only; "
                f"{len(directions)} objectives need a multi-objective sampler: tpe, nsga2, nsga3, random, qmc, gp"
            )
        pruner_name = opts.pruner if plan is None else "none"  # a population exploits instead of pruning
        # A trial with K seeds on E envs reports K x E runs of evaluations: the pruners' step budget grows with it.
        # Racing reports once per run instead (step = run index): K x E steps.
        n_runs = opts.n_seeds * (1 + len(tuned))
        n_steps = n_runs if opts.seed_racing else exp.n_evaluations * n_runs
        make_pruner = functools.partial(
            create_pruner,
            n_startup_trials=exp.n_startup_trials,
            n_evaluations=n_steps,
            hub_registry=opts.hub_registry,
            objectives=[(o.name, o.direction) for o in objectives],
        )
        pruner = make_pruner(pruner_name, opts.pruner_kwargs if plan is None else {})
        if len(directions) > 1 and not is_multi_objective_pruner(pruner):
            _logger.warning(
                "pruner %r disabled: it prunes on one objective (Optuna refuses trial.report with several); for"
                " several objectives use --seed-racing (racing, by Pareto dominance) or hub:multi_metric_pruner",
                pruner_name,
            )
            pruner_name = "none"
            pruner = make_pruner(pruner_name, {})
    except ImportError as exc:  # a sampler's or pruner's missing package
        if isinstance(exc, ZooExtError):
            raise
        raise options.OptionError(str(exc)) from exc
    if exp.verbose > 0:
        preset = f"Preset: {opts.preset} - " if opts.preset else ""
        print(
            f"{preset}Search space: {opts.search_space} ({info.describe()}) - Sampler: {type(sampler).__name__}"
            f" - Pruner: {type(pruner).__name__}"
        )
    # Only valid input reaches the storage: a bad flag leaves no study file or table behind.
    try:
        backend = storage.open_storage(
            exp.storage,
            heartbeat_interval=opts.heartbeat_interval,
            grace_period=opts.grace_period,
            retries=opts.trial_retries,
        )
        study, created, sampler_seed = _create_or_join(exp, backend, sampler, make_sampler, pruner, directions)
    except Exception as exc:  # noqa: BLE001 - any driver's connection error, reported without the password
        raise StorageError.of(exp.storage, exc) from None
    requested = fingerprint(opts, exp.algo)
    if created:
        study.set_user_attr(FINGERPRINT_ATTR, requested)
    elif exp.storage is not None:
        check_resume(study.user_attrs, requested, opts, study_name=study.study_name, storage_url=exp.storage)
    for trial in storage.fail_dead_local_trials(study, opts.trial_retries):
        _logger.warning("trial %d failed: %s", trial.number, trial.user_attrs[TrialAttr.FAIL_REASON])
    # Only the process that created the study warm-starts it (others may join before trial 0 exists).
    if opts.warm_start and created:
        _enqueue_warm_start(study, exp, info.distributions)
    if exp.storage is not None and not workers.is_worker():
        where = storage.redact(exp.storage)
        flags = shlex.join(["--storage", where, "--study-name", study.study_name])
        print(f"Study {study.study_name!r} in {where}: run the same command (or {flags}) to resume it")
    if StudyAttr.COMMAND not in study.user_attrs:
        study.set_user_attr(StudyAttr.COMMAND, storage.redact(" ".join(sys.orig_argv)))
        study.set_user_attr(StudyAttr.ALGO, exp.algo)
        study.set_user_attr(StudyAttr.ENV_ID, exp.env_id)
        study.set_user_attr(StudyAttr.ZOO_CONFIG, exp.config)
        if tuned:
            study.set_user_attr(StudyAttr.ZOO_CONFIG_PER_ENV, {t.env_id: t.config for t in tuned})
        study.set_user_attr(StudyAttr.OPTIONS, options.as_dict(opts))
        study.set_user_attr(StudyAttr.BUDGET, budget(exp))
        study.set_user_attr(StudyAttr.OBJECTIVES, list(opts.objectives))
    if not study.metric_names:  # also a study an older zoo_ext made, on resume
        _set_metric_names(study, [o.name for o in objectives])
    if tracking.UID_ATTR not in study.user_attrs:
        study.set_user_attr(tracking.UID_ATTR, tracking.study_uid(exp.storage, study.study_name))
    if plan is not None:
        segment = pbt.SegmentObjective(exp, space, opts.search_space, plan=plan, store=store)
        made = study.user_attrs.get(StudyAttr.PBT_PLAN)
        if made is None:
            study.set_user_attr(StudyAttr.PBT_PLAN, plan.as_dict())
        elif made["n_timesteps"] != plan.n_timesteps:
            raise storage.StudyError(
                f"study {study.study_name!r} is a population of members of -n {made['n_timesteps']} env steps: resume"
                f" it with -n {made['n_timesteps']}, or pass a new --study-name (requested -n {plan.n_timesteps})"
            )
        if not workers.is_worker():
            segment.population.fill(study)
        return StudySetup(study, segment, pruner_used="none", sampler_seed=sampler_seed)
    objective = Objective(
        exp,
        space,
        opts.search_space,
        objectives=objectives,
        n_seeds=opts.n_seeds,
        seed_aggregate=opts.seed_aggregate,
        objective_metric=opts.objective_metric,
        seed_racing=opts.seed_racing,
        envs=tuned,
        score_ranges=_score_ranges(study, exp, tuned),
        env_aggregate=opts.env_aggregate,
    )
    return StudySetup(study, objective, pruner_used=pruner_name, sampler_seed=sampler_seed)


def _set_metric_names(study: optuna.Study, names: list[str]) -> None:
    """Name the study's objectives (optuna-dashboard shows ``mean_reward``, not ``Objective 0``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)


def _tune_envs(exp: Experiment) -> list[Experiment]:
    """Return the experiments of ``--tune-envs`` other than ``--env``; raise for an env or range that cannot work.

    Each is checked like ``--env``: its config's keys against the algorithm, and ``-n`` against
    its config (a rollout of its ``n_envs`` must fit), before any training.
    """
    opts = exp.options
    names = envs.tune_envs(exp.env_id, opts.tune_envs)
    if not names:
        return []
    for env_id in names[1:]:
        envs.check_env_id(env_id)
    envs.parse_env_scores(opts.env_scores, names)
    tuned = [_for_env(exp, env_id) for env_id in names[1:]]
    for other in tuned:
        _check_config_keys(other)
        if not opts.no_clip_to_budget:
            _check_ceiling(other, other.n_timesteps)
        _check_builds(other)
    return tuned


def _for_env(exp: Experiment, env_id: str) -> Experiment:
    """Return ``exp`` on ``env_id``; raise :class:`~zoo_ext.options.OptionError` if its config or env cannot be
    read or built (no hyperparams entry, a package the env needs missing)."""
    try:
        return exp.for_env(env_id)
    except Exception as exc:  # whatever rl_zoo3 or gymnasium raises, said before any training
        raise options.OptionError(f"--tune-envs {env_id}: cannot set it up ({type(exc).__name__}: {exc})") from exc


def _check_builds(exp: Experiment) -> None:
    """Raise :class:`~zoo_ext.options.OptionError` if the algorithm cannot be built on ``exp``'s env at all
    (e.g. DQN on continuous actions): every trial would fail on it."""
    env = exp.make_env(1)
    try:
        exp.algo_class(env=env, tensorboard_log=None, verbose=0, device="cpu", **exp.base_kwargs())
    except Exception as exc:
        raise options.OptionError(
            f"--tune-envs {exp.env_id}: {exp.algo_class.__name__} cannot be built on it with its config"
            f" ({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        env.close()


def _score_ranges(study: optuna.Study, exp: Experiment, tuned: list[Experiment]) -> dict[str, envs.ScoreRange]:
    """Return each env's score range: ``--env-scores``, else a random policy's return as ``lo`` (measured once,
    stored in the study: every worker and resume normalises alike) and the best so far as ``hi``."""
    if not tuned:
        return {}
    stored = study.user_attrs.get(StudyAttr.ENV_SCORES)
    if stored is not None:
        return {env: envs.ScoreRange.of(data) for env, data in stored.items()}
    given = envs.parse_env_scores(exp.options.env_scores, [exp.env_id, *(t.env_id for t in tuned)])
    ranges = {}
    for one in [exp, *tuned]:
        if one.env_id in given:
            ranges[one.env_id] = envs.ScoreRange(*given[one.env_id], source=envs.GIVEN)
        else:
            lo = envs.random_policy_return(one, seed=exp.seed)
            ranges[one.env_id] = envs.ScoreRange(lo, None, source=envs.MEASURED)
            _logger.info("--tune-envs: %s scores 0 at %.2f (a random policy's return)", one.env_id, lo)
    study.set_user_attr(StudyAttr.ENV_SCORES, {env: r.as_dict() for env, r in ranges.items()})
    return ranges


def _check_ceiling(exp: Experiment, n_timesteps: int) -> None:
    """Raise :class:`~zoo_ext.options.OptionError` if no trial can fit ``n_timesteps`` (too few for the envs)."""
    try:
        fit_to_budget(exp.algo_class, exp.base_kwargs(), n_timesteps=n_timesteps, n_envs=exp.n_envs)
    except BudgetError as exc:
        larger = "-n" if n_timesteps == exp.n_timesteps else "--perturb-interval"
        raise options.OptionError(f"{exc}: no trial fits it; give a larger {larger}") from exc


def _check_population(exp: Experiment, plan: pbt.Plan) -> Any:
    """Return the checkpoints' artifact store; raise :class:`~zoo_ext.options.OptionError` for keys or a
    store the population cannot use."""
    valid = live_keys(exp.algo)
    if not valid:
        raise options.OptionError(
            f"--scheduler {plan.scheduler}: zoo_ext does not know which {exp.algo} hyperparameters can change during"
            f" training; algorithms it knows: {', '.join(sorted(LIVE_KEYS))}"
        )
    unknown = [key for key in plan.keys if key not in valid or key not in pbt.RANGES]
    if unknown:
        raise options.OptionError(
            f"--pbt-keys {', '.join(unknown)}: {exp.algo} cannot change {'it' if len(unknown) == 1 else 'them'} in a"
            f" live model.{did_you_mean(unknown, list(valid))} Valid keys: {', '.join(valid)}"
        )
    if exp.options.warm_start:
        raise options.OptionError(f"--scheduler {plan.scheduler} samples its first generation: drop --warm-start")
    try:
        return pbt.artifact_store(exp.options.artifact_store, exp.log_folder)
    except pbt.ArtifactStoreError as exc:
        raise options.OptionError(str(exc)) from exc


def _check_config_keys(exp: Experiment) -> None:
    """Raise :class:`~zoo_ext.options.OptionError` for a key of the env's config the algorithm's constructor refuses.

    Else every probe build and every trial would fail on it, blamed on the search space.
    """
    valid = accepted_kwargs(exp.algo_class)
    unknown = [] if valid is None else sorted(set(exp.base_kwargs()) - valid)
    if valid is None or not unknown:
        return
    raise options.OptionError(
        f"{exp.algo_class.__name__} takes no keyword argument {', '.join(map(repr, unknown))} (from the env's"
        f" hyperparams or -params).{did_you_mean(unknown, sorted(valid))} Valid keys: {', '.join(sorted(valid))}"
    )


def _probe(exp: Experiment, space: SearchSpace, space_name: str) -> SpaceInfo:
    """Probe ``space`` before the study; a categorical string choice is tried by building the model once.

    The environment is built only if the space has such a choice.
    """
    envs: list[Any] = []

    def build(sampled: dict[str, Any]) -> None:
        if not envs:
            envs.append(exp.make_env(exp.n_envs))
        exp.algo_class(env=envs[0], tensorboard_log=None, verbose=0, device="cpu",
                       **merge_kwargs(exp.base_kwargs(), sampled))  # fmt: skip

    try:
        return probe_space(
            space, space_name, exp.algo_class, exp.n_actions, exp.n_envs, exp.additional_args(), seed=exp.seed,
            build=build,
        )  # fmt: skip
    finally:
        for env in envs:
            env.close()


def _create_or_join(
    exp: Experiment,
    backend: Any,
    sampler: optuna.samplers.BaseSampler,
    make_sampler: Callable[..., optuna.samplers.BaseSampler],
    pruner: optuna.pruners.BasePruner,
    directions: list[str],
) -> tuple[optuna.Study, bool, int]:
    """Return the study, whether this process created it (``sampler``, seeded with ``--seed``), and its sampler seed.

    The storage decides atomically which process creates a study, so processes starting together
    cannot all believe they created it and sample with the same seed; a joining process samples
    with :func:`joining_seed`.
    """
    try:
        study = optuna.create_study(
            sampler=sampler,
            pruner=pruner,
            storage=backend,
            study_name=exp.study_name,
            directions=directions,  # type: ignore[arg-type]
        )
        return study, True, exp.seed
    except optuna.exceptions.DuplicatedStudyError:
        seed = joining_seed(exp.seed)
        sampler = make_sampler(seed=seed) if seed != exp.seed else sampler
        study = optuna.load_study(study_name=str(exp.study_name), storage=backend, sampler=sampler, pruner=pruner)
        return study, False, seed


def budget(exp: Experiment) -> dict[str, Any]:
    """Return the budget flags of this run (recorded on the study and its MLflow parent run)."""
    return {
        "n_timesteps": exp.n_timesteps,
        "n_trials": exp.n_trials,
        "max_total_trials": exp.max_total_trials,
        "n_evaluations": exp.n_evaluations,
        "n_eval_episodes": exp.n_eval_episodes,
        "n_envs": exp.n_envs,
        "n_jobs": exp.n_jobs,
        "seed": exp.seed,
    }


def create_tracker(exp: Experiment, study: optuna.Study) -> tracking.Tracker | None:
    """Return the study's MLflow tracker, or None with --no-mlflow or --mlflow-mirror (a mirror process tracks).

    It works in the background: MLflow's import, the store, the parent run (found or created) and
    every trial's run are set up on its thread while trials train.
    """
    opts = exp.options
    if opts.no_mlflow or opts.mlflow_mirror:
        return None
    tracker = tracking.Tracker(
        tracking_uri=opts.mlflow_tracking_uri,
        experiment=opts.mlflow_experiment or tracking.default_experiment_name(exp.algo, exp.env_id),
        study_name=study.study_name,
        study_uid=study.user_attrs[tracking.UID_ATTR],
        log_models=opts.mlflow_log_models,
        background=True,
        storage=exp.storage,
    )
    tracker.start_study(tracking.study_params(study), tracking.environment_tags())
    tracker.close_stale_runs(study)
    tracker.submit(_announce, tracker)
    return tracker


def _announce(tracker: tracking.Tracker) -> None:
    if tracker.enabled:
        _logger.info(
            "MLflow: experiment %r (%s), study run %s",
            tracker.experiment_name,
            storage.redact(tracker.tracking_uri),
            tracker.parent_run_id,
        )


def _enqueue_warm_start(study: optuna.Study, exp: Experiment, distributions: dict) -> None:
    table = yaml.safe_load(exp.tuned_config_path.read_text())
    if exp.env_id not in table:
        _logger.warning("warm start: rl_zoo3 has no tuned %s hyperparameters for %s", exp.algo, exp.env_id)
        return
    warm = warm_start(table[exp.env_id], distributions)
    study.enqueue_trial(warm.params, user_attrs={TrialAttr.WARM_START: True})
    represented = {"represented": warm.represented, "not_represented": warm.not_represented}
    study.set_user_attr(StudyAttr.WARM_START, represented)
    _logger.info("warm start: trial 0 uses rl_zoo3's tuned %s", ", ".join(warm.represented) or "nothing")
