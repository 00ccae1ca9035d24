"""Builds and runs the Optuna study of ``rl_zoo3.train -optimize`` (replaces the stock loop).

Order of work: resolve the search space, probe it (a broken space exits before any training),
build sampler and pruner, create or resume the study, run the trials, print the summary and
write the stock report files (CSV and pickle).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import pickle
import re
import signal as signal_module
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import yaml
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from zoo_ext import adapter, options, reports, storage, tracking, workers
from zoo_ext.objectives import aggregate, resolve_objectives
from zoo_ext.pruners import create_pruner
from zoo_ext.registry import DottedPathError, FactoryError, UnknownNameError
from zoo_ext.samplers import HubError, create_sampler
from zoo_ext.spaces import SEARCH_SPACES, SearchSpace
from zoo_ext.spaces._probe import InvalidSearchSpaceError, SpaceInfo, probe_space
from zoo_ext.spaces._warm import warm_start
from zoo_ext.trial import Objective, TrialFailed, merge_kwargs, train_run

if TYPE_CHECKING:
    from collections.abc import Callable

    from zoo_ext.integration import ZooExperiment

__all__ = ["Outcome", "consecutive_failures", "create_study", "fingerprint", "optimize", "resolve_study"]

_logger = logging.getLogger(__name__)

#: Samplers that refuse several objectives.
SINGLE_OBJECTIVE_SAMPLERS = ("CmaEsSampler",)
#: Trial states that count towards the budget (``--n-trials``, ``--max-total-trials``), as in stock rl_zoo3.
COUNTED_STATES = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED)
#: Study user attribute holding what defines the study's parameters and values (see :func:`fingerprint`).
FINGERPRINT_ATTR = "zoo_ext_fingerprint"


def fingerprint(opts: options.ZooOptions, algo: str) -> dict[str, Any]:
    """Return what defines a study's parameters and values; a resume with other values is refused.

    The search space (its name, and a hash of its content for a YAML file or a dotted path),
    the objectives with their directions, and the per-trial seed settings. Sampler and pruner
    are not part of it: changing them on resume is allowed.
    """
    objectives = resolve_objectives(opts.objectives)
    return {
        "search_space": opts.search_space,
        "search_space_hash": _space_hash(opts.search_space, algo),
        "objectives": [f"{o.name}:{o.direction}" for o in objectives],
        "n_seeds": opts.n_seeds,
        "seed_aggregate": opts.seed_aggregate,
        "objective_metric": opts.objective_metric,
    }


def _space_hash(name: str, algo: str) -> str | None:
    """Return a hash of a YAML or dotted-path space's content (None for a registered name)."""
    space = SEARCH_SPACES.get(name, algo)
    path = getattr(space, "path", None)
    if isinstance(path, Path):
        text = path.read_bytes()
    elif ":" in name:
        try:
            text = inspect.getsource(space).encode()  # type: ignore[arg-type]
        except (OSError, TypeError):
            return None
    else:
        return None
    return hashlib.sha256(text).hexdigest()[:16]


def resolve_study(
    *,
    algo: str,
    env_id: str,
    opts: options.ZooOptions,
    storage_url: str | None,
    study_name: str | None,
    seed: int | None,
    log_folder: str,
) -> tuple[str | None, str | None]:
    """Return the ``(storage, study name)`` of this run; exit with status 2 if that study cannot be resumed by it.

    Without ``--study-name`` (with a storage or ``--n-workers``), the name is derived from the
    study-defining settings and ``seed`` (the explicit ``--seed``), so the same command resumes
    the same study; ``--n-workers`` without ``--storage`` keeps it in a journal file in the log
    folder. Runs before any environment is built.
    """
    print_ = fingerprint(opts, algo)
    if study_name is None and (storage_url is not None or opts.n_workers > 1):
        key = json.dumps({"algo": algo, "env": env_id, "seed": seed, **print_}, sort_keys=True)
        study_name = f"{algo}-{env_id}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    if storage_url is None and opts.n_workers > 1:
        storage_url = os.path.join(log_folder, algo, f"{study_name}.log")
    if storage_url is not None and study_name is not None and storage.exists(storage_url):
        try:
            backend = storage.open_storage(storage_url)
            attrs = backend.get_study_user_attrs(backend.get_study_id_from_name(study_name))
        except KeyError:
            return storage_url, study_name
        except Exception as exc:  # noqa: BLE001 - any driver's connection error, reported without the password
            where = storage.redact(storage_url)
            options.exit_with_error(StorageError(f"cannot open storage {where}: {storage.redact(str(exc))}"))
        check_resume(attrs, print_, opts, study_name=study_name, storage_url=storage_url)
    return storage_url, study_name


def check_resume(
    attrs: dict[str, Any], requested: dict[str, Any], opts: options.ZooOptions, *, study_name: str, storage_url: str
) -> None:
    """Exit with status 2 if the study's stored fingerprint differs from ``requested``; log a sampler/pruner change.

    A study without a fingerprint (made by stock rl_zoo3) is joined as is.
    """
    stored = attrs.get(FINGERPRINT_ATTR)
    if stored is not None:
        diffs = [
            f"{key}={stored.get(key)!r} (requested {value!r})"
            for key, value in requested.items()
            if stored.get(key) != value
        ]
        if diffs:
            options.exit_with_error(
                options.OptionError(
                    f"study {study_name!r} in {storage.redact(storage_url)} was made with {', '.join(diffs)}. These "
                    "define its parameters and values, so it cannot be resumed with other ones: pass a new "
                    "--study-name for a new study, or the study's own settings to resume it"
                )
            )
    made = attrs.get("zoo_ext_options", {})
    for key in ("sampler", "pruner"):
        if key in made and made[key] != getattr(opts, key):
            now = getattr(opts, key)
            _logger.info("resuming study %r with %s %r (it was made with %r)", study_name, key, now, made[key])


def create_study(exp: ZooExperiment) -> tuple[optuna.Study, Objective]:
    """Return the (new or resumed) study and its objective; exit with status 2 on bad input."""
    opts = exp.options
    try:
        objectives = resolve_objectives(opts.objectives)
        directions = [o.direction for o in objectives]
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
        pruner_name = opts.pruner
        if len(directions) > 1 and pruner_name != "none":
            _logger.warning(
                "pruner %r disabled: Optuna cannot prune a multi-objective study (trial.report is single-objective)",
                pruner_name,
            )
            pruner_name = "none"
        # A trial with K seeds reports K runs of evaluations: the pruners' step budget grows with it.
        n_steps = exp.n_evaluations * opts.n_seeds
        pruner = create_pruner(
            pruner_name, opts.pruner_kwargs, n_startup_trials=exp.n_startup_trials, n_evaluations=n_steps
        )
    except (
        InvalidSearchSpaceError,
        UnknownNameError,
        DottedPathError,
        FactoryError,
        HubError,
        ImportError,
        options.OptionError,
    ) as exc:
        options.exit_with_error(exc)
    if exp.verbose > 0:
        print(
            f"Search space: {opts.search_space} ({info.describe()}) - Sampler: {type(sampler).__name__}"
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
        study, created = _create_or_join(exp, backend, sampler, make_sampler, pruner, directions)
    except Exception as exc:  # noqa: BLE001 - any driver's connection error, reported without the password
        where = storage.redact(str(exp.storage))
        options.exit_with_error(StorageError(f"cannot open storage {where}: {storage.redact(str(exc))}"))
    requested = fingerprint(opts, exp.algo)
    if created:
        study.set_user_attr(FINGERPRINT_ATTR, requested)
    elif exp.storage is not None:
        check_resume(study.user_attrs, requested, opts, study_name=study.study_name, storage_url=exp.storage)
    exp.pruner_used = pruner_name
    for trial in storage.fail_dead_local_trials(study, opts.trial_retries):
        _logger.warning("trial %d failed: %s", trial.number, trial.user_attrs["fail_reason"])
    # Only the process that created the study warm-starts it (others may join before trial 0 exists).
    if opts.warm_start and created:
        _enqueue_warm_start(study, exp, info.distributions)
    if exp.storage is not None and not workers.is_worker():
        print(
            f"Study {study.study_name!r} in {storage.redact(exp.storage)}: run the same command "
            f"(or --storage {storage.redact(exp.storage)} --study-name {study.study_name}) to resume it"
        )
    if "command" not in study.user_attrs:
        study.set_user_attr("command", storage.redact(" ".join(sys.orig_argv)))
        study.set_user_attr("algo", exp.algo)
        study.set_user_attr("env_id", exp.env_id)
        study.set_user_attr("zoo_config", exp.config)
        study.set_user_attr("zoo_ext_options", options.as_dict(opts))
        study.set_user_attr("budget", budget(exp))
        study.set_user_attr("objectives", list(opts.objectives))
    if tracking.UID_ATTR not in study.user_attrs:
        study.set_user_attr(tracking.UID_ATTR, study_uid(exp.storage, study.study_name))
    objective = Objective(
        exp,
        space,
        opts.search_space,
        objectives=objectives,
        n_seeds=opts.n_seeds,
        seed_aggregate=opts.seed_aggregate,
        objective_metric=opts.objective_metric,
    )
    return study, objective


def _probe(exp: ZooExperiment, space: SearchSpace, space_name: str) -> SpaceInfo:
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


class StorageError(RuntimeError):
    """The ``--storage`` cannot be opened; the message has no password."""


def _create_or_join(
    exp: ZooExperiment,
    backend: Any,
    sampler: optuna.samplers.BaseSampler,
    make_sampler: Callable[..., optuna.samplers.BaseSampler],
    pruner: optuna.pruners.BasePruner,
    directions: list[str],
) -> tuple[optuna.Study, bool]:
    """Return the study and whether this process created it (``sampler``, seeded with ``--seed``) or joined it.

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
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        exp.sampler_seed = joining_seed(exp.seed)
        sampler = make_sampler(seed=exp.sampler_seed) if exp.sampler_seed != exp.seed else sampler
        study = optuna.load_study(study_name=str(exp.study_name), storage=backend, sampler=sampler, pruner=pruner)
        return study, False


def joining_seed(seed: int) -> int:
    """Return the sampler seed of a process joining or resuming a study: one of its own.

    With the seed that created the study it would sample the same parameters again (a seeded
    sampler restarts its random stream); ``--n-workers`` workers keep the distinct seeds their
    launcher gave them.
    """
    if workers.is_worker():
        return seed
    me = storage.worker_identity()
    key = f"{seed}|{me['host']}|{me['pid']}|{me['started']}"
    derived = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 2**31
    _logger.info("joining an existing study: this process samples with its own seed %d", derived)
    return derived


def study_uid(storage_url: str | None, study_name: str) -> str:
    """Return the id that ties a study to its MLflow parent run.

    Derived from the storage (without credentials) and the study name, so workers creating the
    same new study at the same moment store the same id; an in-memory study gets a random one.
    """
    if storage_url is None:
        return uuid.uuid4().hex
    # Without user info: workers may pass credentials in the URL or through PGPASSWORD/.pgpass.
    where = os.path.abspath(storage_url) if storage_url.endswith(".log") else re.sub(r"//[^/@]*@", "//", storage_url)
    return hashlib.sha256(f"{where}|{study_name}".encode()).hexdigest()[:32]


def budget(exp: ZooExperiment) -> dict[str, Any]:
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


def create_tracker(exp: ZooExperiment, study: optuna.Study) -> tracking.Tracker | None:
    """Return the study's MLflow tracker (parent run found or created), or None with --no-mlflow."""
    opts = exp.options
    if opts.no_mlflow:
        return None
    tracker = tracking.Tracker(
        tracking_uri=opts.mlflow_tracking_uri,
        experiment=opts.mlflow_experiment or tracking.default_experiment_name(exp.algo, exp.env_id),
        study_name=study.study_name,
        study_uid=study.user_attrs[tracking.UID_ATTR],
        log_models=opts.mlflow_log_models,
    )
    tracker.start_study(tracking.study_params(study), tracking.environment_tags())
    tracker.close_stale_runs(study)
    if tracker.enabled:
        _logger.info(
            "MLflow: experiment %r (%s), study run %s",
            tracker.experiment_name,
            storage.redact(tracker.tracking_uri),
            tracker.parent_run_id,
        )
    return tracker


def _enqueue_warm_start(study: optuna.Study, exp: ZooExperiment, distributions: dict) -> None:
    table = yaml.safe_load(adapter.default_config_path(exp.algo).read_text())
    if exp.env_id not in table:
        _logger.warning("warm start: rl_zoo3 has no tuned %s hyperparameters for %s", exp.algo, exp.env_id)
        return
    warm = warm_start(table[exp.env_id], distributions)
    study.enqueue_trial(warm.params, user_attrs={"warm_start": True})
    study.set_user_attr("warm_start", {"represented": warm.represented, "not_represented": warm.not_represented})
    _logger.info("warm start: trial 0 uses rl_zoo3's tuned %s", ", ".join(warm.represented) or "nothing")


@dataclass
class Outcome:
    """How this process's part of a study ended: budget done, interrupted by a signal, or failing trials."""

    #: The signal that stopped the run (``SIGINT``, ``SIGTERM``), if any.
    signal: str | None = None
    #: Why the study was stopped for failing trials, if it was.
    failure: str | None = None

    @property
    def completed(self) -> bool:
        return self.signal is None and self.failure is None

    @property
    def exit_code(self) -> int:
        """Return the command's exit status: 0 done, 128 + signal number when interrupted, 1 when failing."""
        if self.signal is not None:
            return 128 + int(getattr(signal_module.Signals, self.signal, signal_module.SIGINT))
        return 1 if self.failure is not None else 0


def optimize(exp: ZooExperiment) -> None:
    """Run the study with the zoo's budget flags, print and write the stock report; exit non-zero unless done.

    Exit status 130 (SIGINT) or 143 (SIGTERM) when interrupted, 1 when trials kept failing.
    """
    if exp.verbose > 0:
        print("Optimizing hyperparameters")
    if exp.options.n_workers > 1 and not workers.is_worker():
        study, outcome = _optimize_with_workers(exp)
    else:
        study, objective = create_study(exp)
        tracker = create_tracker(exp, study)
        with workers.signals_interrupt():
            outcome = _run_tracked(study, objective, tracker, exp)
        if not workers.is_worker():
            _finish(study, objective, tracker, exp, outcome)
    if outcome.signal is not None:
        print(
            f"Interrupted by {outcome.signal}: study {study.study_name!r} is saved in "
            f"{storage.redact(str(exp.storage))}; run the same command to resume it",
            file=sys.stderr,
        )
    elif outcome.failure is not None:
        print(f"zoo_ext: study {study.study_name!r} stopped: {outcome.failure}", file=sys.stderr)
    if outcome.exit_code:
        raise SystemExit(outcome.exit_code)


def _run_tracked(
    study: optuna.Study, objective: Objective, tracker: tracking.Tracker | None, exp: ZooExperiment
) -> Outcome:
    """Run this process's trials, logged to MLflow if ``tracker``; return how they ended."""
    with tempfile.TemporaryDirectory(prefix="zoo_ext_models_") as model_dir:
        run: Any = objective
        if tracker is not None:
            objective.model_dir = Path(model_dir)
            run = tracking.TrackedObjective(objective, tracker, env_id=exp.env_id, config=exp.config)
        with _Recovery(study, tracker, exp):
            return _run(study, run, objective, exp)


def _finish(
    study: optuna.Study,
    objective: Objective,
    tracker: tracking.Tracker | None,
    exp: ZooExperiment,
    outcome: Outcome,
) -> None:
    """Re-evaluate (if asked and done), print the summary, write the reports, close the parent run."""
    if exp.options.reevaluate_top and outcome.completed:
        reevaluate(study, objective, tracker, exp.options.reevaluate_top, exp.options.eval_seeds)
    report = summarize(study, exp)
    if tracker is not None:
        tracker.close_stale_runs(study)
        tracker.log_study_artifacts(report)
        tracker.end_study("FINISHED" if outcome.completed else "FAILED" if outcome.failure else "KILLED")


def _optimize_with_workers(exp: ZooExperiment) -> tuple[optuna.Study, Outcome]:
    """Create the study and its MLflow parent run once, run trials here and in ``--n-workers - 1`` more processes.

    This process is worker 0: it would otherwise sit idle, and the other workers' start-up
    (imports, MLflow connection) overlaps its first trial.
    """
    import torch

    n = exp.options.n_workers
    study, objective = create_study(exp)
    tracker = create_tracker(exp, study)
    total = budget_total(exp)
    threads = max(1, (os.cpu_count() or 1) // n)
    commands = [
        workers.worker_command(sys.orig_argv, storage=str(exp.storage), study_name=study.study_name,
                               seed=(exp.sampler_seed + 7919 * i) % 2**31, max_total_trials=total,
                               threads=threads)
        for i in range(1, n)
    ]  # fmt: skip
    where = storage.redact(str(exp.storage))
    print(f"Running {n} worker processes on study {study.study_name!r} ({where}), {total} trials")
    torch.set_num_threads(threads)
    exp.n_jobs = 1
    with workers.signals_interrupt(), workers.Workers(commands) as pool:
        outcome = _run_tracked(study, objective, tracker, exp)
        if outcome.signal is not None:
            pool.interrupt(outcome.signal)
    if any(pool.exit_codes):
        _logger.warning("worker exit codes: %s", pool.exit_codes)
        if outcome.completed and _n_counted(study) < total:
            outcome.failure = f"worker processes exited with {pool.exit_codes} before the budget was spent"
    _finish(study, objective, tracker, exp, outcome)
    return study, outcome


def budget_total(exp: ZooExperiment) -> int:
    """Return the study's trial budget: ``--max-total-trials``, else ``--n-trials``, counted over the whole study.

    Complete, pruned and running trials count (failed ones do not), so a resumed study runs
    only what is missing; raise ``--n-trials`` to ask for more.
    """
    return exp.max_total_trials if exp.max_total_trials is not None else exp.n_trials


def _run(study: optuna.Study, run_trial: Any, objective: Objective, exp: ZooExperiment) -> Outcome:
    """Run trials until the study's budget is spent; return how it ended.

    The budget is the study's, shared by all its workers: live and finished trials count,
    failed ones do not. Once it is spent while trials of other workers still run, this worker
    waits for them: a dead worker's trial is failed when its heartbeats stop (database storages)
    and retried here, so the study still reaches its budget. After ``--max-consecutive-failures``
    failed trials in a row it stops. A trial interrupted by SIGINT/SIGTERM is queued again
    (``--trial-retries``), so resuming runs it first.
    """
    total = budget_total(exp)
    limit = exp.options.max_consecutive_failures
    counted = _n_counted(study)
    if counted:
        _logger.info("study %r: %d of %d trials counted so far", study.study_name, counted, total)

    def stop_when_failing(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.FAIL and consecutive_failures(study, limit):
            study.stop()

    run = functools.partial(study.optimize, run_trial, n_jobs=exp.n_jobs, gc_after_trial=True, catch=(TrialFailed,))
    seen: dict[int, float] = {}
    try:
        while True:
            failure = consecutive_failures(study, limit)
            if failure:
                return Outcome(failure=failure)
            if _n_counted(study) < total:
                run(n_trials=None, callbacks=[MaxTrialsCallback(total, states=COUNTED_STATES), stop_when_failing])
            elif not _wait_for_running(study, exp, seen):
                return Outcome()
    except KeyboardInterrupt as exc:
        name = getattr(exc, "signal_name", "SIGINT")
        for number in objective.interrupted:
            trial = study.get_trials(deepcopy=False)[number]
            retries = exp.options.trial_retries
            if trial.state == TrialState.FAIL and storage.retry_trial(study, trial, max_retry=retries):
                _logger.warning("trial %d was interrupted: queued again, it runs first when the study resumes", number)
        return Outcome(signal=name)


def consecutive_failures(study: optuna.Study, limit: int) -> str | None:
    """Return why the study must stop if its last ``limit`` finished trials all failed (None otherwise).

    Trials failed by an interruption or a dead worker are skipped: they say nothing about the
    configuration. ``limit`` 0 never stops.
    """
    if limit <= 0:
        return None
    finished = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state.is_finished()),
        key=lambda t: (t.datetime_complete or datetime.min, t.number),
    )
    failed: list[optuna.trial.FrozenTrial] = []
    for trial in reversed(finished):
        if trial.state != TrialState.FAIL:
            break
        if storage.is_external_failure(trial):
            continue
        failed.append(trial)
        if len(failed) == limit:
            last = failed[0]
            return (
                f"{limit} trials failed in a row (--max-consecutive-failures); the last, trial {last.number}: "
                f"{last.user_attrs.get('fail_reason', 'no reason recorded')}"
            )
    return None


def _n_counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED_STATES))


def _wait_for_running(study: optuna.Study, exp: ZooExperiment, seen: dict[int, float]) -> bool:
    """Wait for other workers' running trials; return False once none is left that could still fail.

    ``seen`` maps a running trial to when this worker first saw it. A trial whose worker died is
    failed within the grace period (plus the recovery interval); one still running after that
    sends heartbeats (or none at all: a worker without them), so it is not waited for.
    """
    if _recover(study, None, exp):
        return True
    opts = exp.options
    if not storage.has_heartbeats(exp.storage, opts.heartbeat_interval):
        return False
    now = time.monotonic()
    running = [seen.setdefault(t.number, now) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    patience = (opts.grace_period or 2 * opts.heartbeat_interval) + 2 * opts.heartbeat_interval
    if all(now - since > patience for since in running):
        return False
    time.sleep(min(opts.heartbeat_interval, 2))
    return True


def _recover(study: optuna.Study, tracker: tracking.Tracker | None, exp: ZooExperiment) -> bool:
    """Fail the trials of dead workers (retrying them) and close their MLflow runs; return True if any."""
    failed = storage.fail_dead_local_trials(study, exp.options.trial_retries)
    if storage.has_heartbeats(exp.storage, exp.options.heartbeat_interval):
        running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        with storage.experimental():
            optuna.storages.fail_stale_trials(study)
        failed += [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number in running]
    if failed and tracker is not None:
        tracker.close_stale_runs(study)
    for trial in failed:
        _logger.warning("trial %d: its worker died (no heartbeat); failed and queued again", trial.number)
    return bool(failed)


class _Recovery:
    """A daemon thread that calls :func:`_recover` every heartbeat interval while trials run.

    Optuna fails a stale trial only when a worker starts its next trial; with long trials that
    can take many minutes. This thread fails it, queues its retry and closes its MLflow run as
    FAILED within about one interval after the grace period.
    """

    def __init__(self, study: optuna.Study, tracker: tracking.Tracker | None, exp: ZooExperiment) -> None:
        self.study, self.tracker, self.exp = study, tracker, exp
        self.interval = exp.options.heartbeat_interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="zoo_ext-recovery", daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                _recover(self.study, self.tracker, self.exp)
            except Exception as exc:  # noqa: BLE001 - a storage hiccup must not end the study
                _logger.debug("recovery check failed: %s", storage.redact(str(exc)))

    def __enter__(self) -> _Recovery:
        if self.interval > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()


def summarize(study: optuna.Study, exp: ZooExperiment) -> Path:
    """Print the best trial, write the stock report (CSV, pickle) and the report folder; return the folder."""
    print("Number of finished trials: ", len(study.trials))
    states = {state.name: len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    print("Trial states: ", ", ".join(f"{name}={n}" for name, n in states.items() if n))
    print(reports.describe_best(study))
    warm = study.user_attrs.get("warm_start")
    if warm:
        print(_describe_warm_start(study, warm))
    opts = exp.options
    pruner = exp.pruner_used
    report_name = (
        (f"report_{exp.env_id}_{exp.n_trials}-trials-{exp.n_timesteps}-{opts.sampler}-{pruner}_{int(time.time())}")
        .replace(":", "_")
        .replace("/", "_")
    )
    log_path = os.path.join(exp.log_folder, exp.algo, report_name)
    if exp.verbose:
        print(f"Writing report to {log_path}")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    trials = study.trials_dataframe()
    trials.to_csv(f"{log_path}.csv")
    try:
        with open(f"{log_path}.pkl", "wb+") as f:
            pickle.dump(_detached(study), f)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        _logger.warning("The study object cannot be pickled (%s); load it from its storage instead", exc)
    folder = Path(log_path)
    reports.write_report(study, folder, plots=not exp.no_optim_plots, trials=trials)
    return folder


def _describe_warm_start(study: optuna.Study, warm: dict[str, Any]) -> str:
    """Return the summary lines of the warm start: what trial 0 used, and whether it (or its retry) completed."""
    runs = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("warm_start")]
    states = ", ".join(f"trial {t.number} {t.state.name}" for t in runs) or "not run"
    done = any(t.state == TrialState.COMPLETE for t in runs)
    used = ", ".join(warm["represented"]) or "nothing"
    lines = [
        f"Warm start ({states}): " + (f"completed with rl_zoo3's tuned {used}" if done else "did not complete"),
        "Not representable in this space (left to the sampler): " + (", ".join(warm["not_represented"]) or "none"),
    ]
    return "\n".join(lines)


def _detached(study: optuna.Study) -> optuna.Study:
    """Return an in-memory copy of ``study`` to pickle: a database storage would pickle its URL (password)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        copy = optuna.create_study(
            study_name=study.study_name, directions=study.directions, sampler=study.sampler, pruner=study.pruner
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    for key, value in study.user_attrs.items():
        copy.set_user_attr(key, value)
    copy.add_trials(study.get_trials(deepcopy=False, states=tuple(s for s in TrialState if s.is_finished())))
    return copy


def _candidates(study: optuna.Study, top: int) -> list[optuna.trial.FrozenTrial]:
    """Return the trials to re-evaluate: the ``top`` best (one objective) or Pareto-optimal (several)."""
    if len(study.directions) > 1:
        trials = study.best_trials
    else:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return sorted(trials, key=lambda t: t.values[0], reverse=maximize)[:top]


def fresh_seeds(study: optuna.Study, study_seed: int, n: int) -> list[int]:
    """Return ``n`` seeds never used to train any trial of ``study`` (reproducible per study seed)."""
    used = {s for t in study.get_trials(deepcopy=False) for s in t.user_attrs.get("seeds", [t.user_attrs.get("seed")])}
    rng = np.random.default_rng([study_seed, 2**20])
    seeds: list[int] = []
    while len(seeds) < n:
        seed = int(rng.integers(2**31))
        if seed not in used and seed not in seeds:
            seeds.append(seed)
    return seeds


def _claim(study: optuna.Study, key: str) -> Callable[[], None] | None:
    """Return a release function if this process won ``key`` for ``study`` (None if another process holds it).

    The storage decides atomically: the claim is a study named ``<study>:<key>``, which only one
    process can create (in-memory studies always win).
    """
    if isinstance(study._storage, optuna.storages.InMemoryStorage):
        return lambda: None
    name = f"{study.study_name}:{key}"
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        optuna.create_study(storage=study._storage, study_name=name)
    except optuna.exceptions.DuplicatedStudyError:
        return None
    finally:
        optuna.logging.set_verbosity(verbosity)
    return functools.partial(optuna.delete_study, study_name=name, storage=study._storage)


def _wait_for_local_trials(study: optuna.Study) -> None:
    """Wait while live processes on this host still run trials of ``study`` (a re-evaluation needs them all)."""
    while any(
        storage.is_live_local(t.user_attrs.get(storage.WORKER_ATTR))
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    ):
        time.sleep(2)


def reevaluate(study: optuna.Study, objective: Objective, tracker: tracking.Tracker | None, top: int, n: int) -> None:
    """Re-train the ``top`` best trials with ``n`` fresh seeds; store the scores in study attr ``test_scores``.

    Several processes finishing one study re-evaluate it once: the first to claim it does, the
    others skip it; trials already re-evaluated are not trained again.
    """
    exp = objective.exp
    _wait_for_local_trials(study)
    todo = [t for t in _candidates(study, top) if str(t.number) not in study.user_attrs.get("test_scores", {})]
    if not todo:
        return
    release = _claim(study, f"reevaluation-{'-'.join(str(t.number) for t in todo)}")
    if release is None:
        _logger.info("another process re-evaluates study %r", study.study_name)
        return
    try:
        _reevaluate(study, objective, tracker, todo, fresh_seeds(study, exp.seed, n))
    finally:
        release()


def _reevaluate(
    study: optuna.Study,
    objective: Objective,
    tracker: tracking.Tracker | None,
    todo: list[optuna.trial.FrozenTrial],
    seeds: list[int],
) -> None:
    exp = objective.exp
    n = len(seeds)
    tests = dict(study.user_attrs.get("test_scores", {}))
    for trial in todo:
        fixed = optuna.trial.FixedTrial(trial.params, number=trial.number)
        kwargs = objective.sample(fixed)  # type: ignore[arg-type]
        inference = any(o.needs_inference for o in objective.objectives)
        results = [train_run(exp, kwargs, seed, measure_inference=inference) for seed in seeds]
        scores = {o.name: [o(r, objective.objective_metric) for r in results] for o in objective.objectives}
        summary = {name: aggregate(values, objective.seed_aggregate) for name, values in scores.items()}
        tests[str(trial.number)] = {"seeds": seeds, "scores": scores, "aggregate": summary}
        study.set_user_attr("test_scores", tests)
        if tracker is not None:
            tracker.log_test_scores(trial.number, scores, summary)
        _logger.info("trial %d re-evaluated on %d fresh seeds: %s", trial.number, n, summary)
