"""Builds and runs the Optuna study of ``rl_zoo3.train -optimize`` (replaces the stock loop).

Order of work: resolve the search space, probe it (a broken space exits before any training),
build sampler and pruner, create or resume the study, run the trials, print the summary and
write the stock report files (CSV and pickle).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
import re
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import yaml
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from zoo_ext import options, reports, storage, tracking, workers, zoo
from zoo_ext.objectives import aggregate, resolve_objectives
from zoo_ext.pruners import create_pruner
from zoo_ext.registry import DottedPathError, FactoryError, UnknownNameError
from zoo_ext.samplers import HubError, create_sampler
from zoo_ext.spaces import SEARCH_SPACES
from zoo_ext.spaces._probe import InvalidSearchSpaceError, probe_space
from zoo_ext.spaces._warm import warm_start
from zoo_ext.trial import Objective, TrialFailed, train_run

if TYPE_CHECKING:
    from collections.abc import Callable

    from zoo_ext.zoo import ZooExperiment

__all__ = ["create_study", "optimize"]

_logger = logging.getLogger(__name__)

#: Samplers that refuse several objectives.
SINGLE_OBJECTIVE_SAMPLERS = ("CmaEsSampler",)
#: Trial states that count towards ``--max-total-trials`` (as in stock rl_zoo3).
COUNTED_STATES = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED)


def create_study(exp: ZooExperiment) -> tuple[optuna.Study, Objective]:
    """Return the (new or resumed) study and its objective; exit with status 2 on bad input."""
    opts = exp.options
    try:
        objectives = resolve_objectives(opts.objectives)
        directions = [o.direction for o in objectives]
        space = SEARCH_SPACES.get(opts.search_space, exp.algo)
        info = probe_space(
            space, opts.search_space, exp.algo_class, exp.n_actions, exp.n_envs, exp.additional_args(), seed=exp.seed
        )
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
        study = _create_or_join(exp, backend, sampler, make_sampler, pruner, directions)
    except Exception as exc:  # noqa: BLE001 - any driver's connection error, reported without the password
        where = storage.redact(str(exp.storage))
        options.exit_with_error(StorageError(f"cannot open storage {where}: {storage.redact(str(exc))}"))
    for trial in storage.fail_dead_local_trials(study, opts.trial_retries):
        _logger.warning("trial %d failed: %s", trial.number, trial.user_attrs["fail_reason"])
    if opts.warm_start and not study.trials:
        _enqueue_warm_start(study, exp, info.distributions)
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


class StorageError(RuntimeError):
    """The ``--storage`` cannot be opened; the message has no password."""


def _create_or_join(
    exp: ZooExperiment,
    backend: Any,
    sampler: optuna.samplers.BaseSampler,
    make_sampler: Callable[..., optuna.samplers.BaseSampler],
    pruner: optuna.pruners.BasePruner,
    directions: list[str],
) -> optuna.Study:
    """Return the study: created by this process (``sampler``, seeded with ``--seed``) or joined.

    The storage decides atomically which process creates a study, so processes starting together
    cannot all believe they created it and sample with the same seed; a joining process samples
    with :func:`joining_seed`.
    """
    try:
        return optuna.create_study(
            sampler=sampler,
            pruner=pruner,
            storage=backend,
            study_name=exp.study_name,
            directions=directions,  # type: ignore[arg-type]
        )
    except optuna.exceptions.DuplicatedStudyError:
        exp.sampler_seed = joining_seed(exp.seed)
        sampler = make_sampler(seed=exp.sampler_seed) if exp.sampler_seed != exp.seed else sampler
        return optuna.load_study(study_name=str(exp.study_name), storage=backend, sampler=sampler, pruner=pruner)


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
    table = yaml.safe_load(zoo.default_config_path(exp.algo).read_text())
    if exp.env_id not in table:
        _logger.warning("warm start: rl_zoo3 has no tuned %s hyperparameters for %s", exp.algo, exp.env_id)
        return
    warm = warm_start(table[exp.env_id], distributions)
    study.enqueue_trial(warm.params, user_attrs={"warm_start": True})
    study.set_user_attr("warm_start", {"represented": warm.represented, "not_represented": warm.not_represented})
    _logger.info("warm start: trial 0 uses rl_zoo3's tuned %s", ", ".join(warm.represented) or "nothing")


def optimize(exp: ZooExperiment) -> None:
    """Run the study with the zoo's budget flags, then print and write the stock report."""
    if exp.verbose > 0:
        print("Optimizing hyperparameters")
    if exp.storage is not None and exp.study_name is None:
        _logger.warning("--storage without --study-name: reuse the generated study name to resume this study")
    if exp.options.n_workers > 1 and not workers.is_worker():
        _optimize_with_workers(exp)
        return
    study, objective = create_study(exp)
    tracker = create_tracker(exp, study)
    with workers.signals_interrupt():
        completed = _run_tracked(study, objective, tracker, exp)
    if not workers.is_worker():
        _finish(study, objective, tracker, exp, completed=completed)


def _run_tracked(
    study: optuna.Study, objective: Objective, tracker: tracking.Tracker | None, exp: ZooExperiment
) -> bool:
    """Run this process's trials, logged to MLflow if ``tracker``; return False if interrupted."""
    with tempfile.TemporaryDirectory(prefix="zoo_ext_models_") as model_dir:
        run: Any = objective
        if tracker is not None:
            objective.model_dir = Path(model_dir)
            run = tracking.TrackedObjective(objective, tracker, env_id=exp.env_id, config=exp.config)
        with _Recovery(study, tracker, exp):
            return _run(study, run, exp)


def _finish(
    study: optuna.Study,
    objective: Objective,
    tracker: tracking.Tracker | None,
    exp: ZooExperiment,
    *,
    completed: bool = True,
) -> None:
    """Re-evaluate (if asked and not interrupted), print the summary, write the reports, close the parent run."""
    if exp.options.reevaluate_top and completed:
        reevaluate(study, objective, tracker, exp.options.reevaluate_top, exp.options.eval_seeds)
    report = summarize(study, exp)
    if tracker is not None:
        tracker.close_stale_runs(study)
        tracker.log_study_artifacts(report)
        tracker.end_study("FINISHED" if completed else "KILLED")


def _optimize_with_workers(exp: ZooExperiment) -> None:
    """Create the study and its MLflow parent run once, run trials here and in ``--n-workers - 1`` more processes.

    This process is worker 0: it would otherwise sit idle, and the other workers' start-up
    (imports, MLflow connection) overlaps its first trial.
    """
    import torch

    n = exp.options.n_workers
    exp.study_name = exp.study_name or f"{exp.algo}-{exp.env_id}-{uuid.uuid4().hex[:8]}"
    exp.storage = exp.storage or os.path.join(exp.log_folder, exp.algo, f"{exp.study_name}.log")
    study, objective = create_study(exp)
    tracker = create_tracker(exp, study)
    if exp.max_total_trials is None:
        exp.max_total_trials = len(study.get_trials(deepcopy=False, states=COUNTED_STATES)) + exp.n_trials
    threads = max(1, (os.cpu_count() or 1) // n)
    commands = [
        workers.worker_command(sys.orig_argv, storage=exp.storage, study_name=exp.study_name,
                               seed=(exp.sampler_seed + 7919 * i) % 2**31, max_total_trials=exp.max_total_trials,
                               threads=threads)
        for i in range(1, n)
    ]  # fmt: skip
    print(
        f"Running {n} worker processes on study {exp.study_name!r} ({storage.redact(exp.storage)}),"
        f" {exp.max_total_trials} trials"
    )
    torch.set_num_threads(threads)
    exp.n_jobs = 1
    with workers.signals_interrupt(), workers.Workers(commands) as pool:
        completed = _run_tracked(study, objective, tracker, exp)
        if not completed:
            pool.interrupt()
    if any(pool.exit_codes):
        _logger.warning("worker exit codes: %s", pool.exit_codes)
        completed = False
    _finish(study, objective, tracker, exp, completed=completed)


def _run(study: optuna.Study, objective: Any, exp: ZooExperiment) -> bool:
    """Run trials until the budget is spent; return False if interrupted (Ctrl-C, SIGTERM).

    With ``--max-total-trials`` the budget is the study's, shared by all its workers: live and
    finished trials count, failed ones do not. Once it is spent while trials of other workers
    still run, this worker waits for them: a dead worker's trial is failed when its heartbeats
    stop (database storages) and retried here, so the study still reaches its budget.
    """
    run = functools.partial(study.optimize, objective, n_jobs=exp.n_jobs, gc_after_trial=True, catch=(TrialFailed,))
    try:
        if exp.max_total_trials is None:
            run(n_trials=exp.n_trials)
            return True
        total = exp.max_total_trials
        seen: dict[int, float] = {}
        while True:
            if _n_counted(study) < total:
                run(n_trials=None, callbacks=[MaxTrialsCallback(total, states=COUNTED_STATES)])
            elif not _wait_for_running(study, exp, seen):
                return True
    except KeyboardInterrupt:
        _logger.warning("Interrupted: the study is saved and can be resumed with the same --storage/--study-name")
        return False


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
        print("Warm start (trial 0) used rl_zoo3's tuned: ", ", ".join(warm["represented"]) or "nothing")
        print("Not representable in this space (left to the sampler): ", ", ".join(warm["not_represented"]) or "none")
    opts = exp.options
    report_name = (
        (f"report_{exp.env_id}_{exp.n_trials}-trials-{exp.n_timesteps}-{opts.sampler}-{opts.pruner}_{int(time.time())}")
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


def _detached(study: optuna.Study) -> optuna.Study:
    """Return an in-memory copy of ``study`` to pickle: a database storage would pickle its URL (password)."""
    copy = optuna.create_study(
        study_name=study.study_name, directions=study.directions, sampler=study.sampler, pruner=study.pruner
    )
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


def reevaluate(study: optuna.Study, objective: Objective, tracker: tracking.Tracker | None, top: int, n: int) -> None:
    """Re-train the ``top`` best trials with ``n`` fresh seeds; store the scores in study attr ``test_scores``."""
    exp = objective.exp
    seeds = fresh_seeds(study, exp.seed, n)
    tests = dict(study.user_attrs.get("test_scores", {}))
    for trial in _candidates(study, top):
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
