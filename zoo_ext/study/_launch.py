"""Running a study: in this process, or with ``--n-workers`` worker processes; exit status by outcome."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from zoo_ext import pbt, progress, storage, tracking, workers
from zoo_ext.attrs import StudyAttr
from zoo_ext.study._create import StudySetup, create_study, create_tracker
from zoo_ext.study._loop import Outcome, budget_total, mirror_models, n_finished, progress_line, recover, run_tracked
from zoo_ext.study._reevaluate import reevaluate
from zoo_ext.study._summary import summarize

if TYPE_CHECKING:
    from zoo_ext.experiment import Experiment

__all__ = ["optimize"]

_logger = logging.getLogger("zoo_ext.study")

#: Seconds the mirror may take for its last pass once the study is over.
MIRROR_STOP_TIMEOUT = 120


def optimize(exp: Experiment) -> int:
    """Run the study with the zoo's budget flags, print and write the stock report; return the exit status.

    0 when the trial budget is spent or a stop rule (``--budget-steps``, ``--target-value``,
    ``--patience``) ended the study, 130 (SIGINT) or 143 (SIGTERM) when interrupted, 1 when trials
    kept failing or the budget was not done. Raises :class:`~zoo_ext.errors.ZooExtError` on bad input.
    """
    if exp.verbose > 0:
        print("Optimizing hyperparameters")
    if exp.options.n_workers > 1 and not workers.is_worker():
        study, outcome = _optimize_with_workers(exp)
    else:
        setup = create_study(exp)
        study = setup.study
        tracker = create_tracker(exp, study)
        with _mirror(exp, study):
            with workers.signals_interrupt(), progress_line(study, exp):
                outcome = run_tracked(study, setup.objective, tracker, exp, n_jobs=exp.n_jobs)
            if not workers.is_worker():
                _finish(setup, tracker, exp, outcome)
    if outcome.signal is not None:
        print(_interrupted_message(study.study_name, outcome.signal, exp), file=sys.stderr)
    elif outcome.failure is not None:
        print(f"zoo_ext: study {study.study_name!r} stopped: {outcome.failure}", file=sys.stderr)
    return outcome.exit_code


def _interrupted_message(study_name: str, signal_name: str, exp: Experiment) -> str:
    """Return what an interrupted run tells the user: how to resume its study, or that nothing was saved."""
    if exp.storage is None:
        where = shlex.quote(str(Path(exp.log_folder) / f"{study_name}.log"))
        return (
            f"Interrupted by {signal_name}: study {study_name!r} was in memory (no --storage), nothing is saved; "
            f"add --storage {where} next time to be able to resume it"
        )
    return (
        f"Interrupted by {signal_name}: study {study_name!r} is saved in {storage.redact(exp.storage)}; "
        "run the same command to resume it"
    )


@contextlib.contextmanager
def _mirror(exp: Experiment, study: optuna.Study) -> Iterator[None]:
    """With ``--mlflow-mirror``, run ``python -m zoo_ext mlflow-mirror`` on the study while the block runs.

    Started by the launcher only (not by a worker), its output in ``<log folder>/<algo>/<study>-mlflow-mirror.log``;
    the storage URL goes by environment, never on a command line. SIGTERM at the end: its last pass
    logs the last trials and ends the parent run.
    """
    opts = exp.options
    if not opts.mlflow_mirror or opts.no_mlflow or workers.is_worker() or exp.storage is None:
        yield
        return
    cmd = [sys.executable, "-m", "zoo_ext", "mlflow-mirror", "--study-name", study.study_name]
    if opts.mlflow_tracking_uri:
        cmd += ["--mlflow-tracking-uri", opts.mlflow_tracking_uri]
    if opts.mlflow_experiment:
        cmd += ["--mlflow-experiment", opts.mlflow_experiment]
    cmd += ["--models", str(mirror_models(exp, study.study_name))] + (
        ["--log-models"] if opts.mlflow_log_models else []
    )
    log = Path(exp.log_folder, exp.algo, f"{study.study_name}-mlflow-mirror.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ZOO_EXT_STORAGE": str(exp.storage)}
    with log.open("w") as out:
        mirror = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    _logger.info("MLflow mirror: process %d, output in %s", mirror.pid, log)
    try:
        yield
    finally:
        mirror.terminate()
        try:
            mirror.wait(timeout=MIRROR_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            mirror.kill()
            _logger.warning(
                "the MLflow mirror did not stop in %d s: run python -m zoo_ext mlflow-sync", MIRROR_STOP_TIMEOUT
            )
        if mirror.returncode not in (0, -signal.SIGKILL):
            _logger.warning("the MLflow mirror exited with status %s: see %s", mirror.returncode, log)


def _finish(setup: StudySetup, tracker: tracking.Tracker | None, exp: Experiment, outcome: Outcome) -> None:
    """Re-evaluate (if asked and done), print the summary, write the reports, close the parent run."""
    study = setup.study
    if exp.options.reevaluate_top and outcome.completed:
        reevaluate(study, setup.objective, tracker, exp.options.reevaluate_top, exp.options.eval_seeds)
    report = summarize(study, exp, pruner=setup.pruner_used)
    if exp.options.mlflow_mirror and not exp.options.no_mlflow:  # the mirror uploads it when it stops
        study.set_user_attr(StudyAttr.REPORT, str(report.resolve()))
    if tracker is not None:
        tracker.close_stale_runs(study)
        tracker.log_study_artifacts(report)  # a population's report holds population.png
        if isinstance(setup.objective, pbt.SegmentObjective):
            tracker.log_population(study)
        status = "FINISHED" if outcome.completed else "FAILED" if outcome.failure else "KILLED"
        tracker.end_study(status, study=study)


def _optimize_with_workers(exp: Experiment) -> tuple[optuna.Study, Outcome]:
    """Create the study and its MLflow parent run once, run trials here and in ``--n-workers - 1`` more processes.

    This process is worker 0: it would otherwise sit idle. The others are forked from it first,
    imports done and before any model is built, and start once the study and parent run exist
    (:func:`zoo_ext.workers.fork_workers`), so their start-up takes no interpreter nor imports.
    """
    import torch

    n = exp.options.n_workers
    # While the study is created, the forked workers import what their first model (torch._dynamo, imported by SB3's
    # first optimizer) and tracker need.
    preload = ["torch._dynamo", *([] if exp.options.no_mlflow or exp.options.mlflow_mirror else ["mlflow"])]
    forked = workers.fork_workers(n - 1, exp.worker_main, preload=preload)
    setup = create_study(exp)
    study = setup.study
    tracker = create_tracker(exp, study)
    total = budget_total(exp)
    threads = max(1, (os.cpu_count() or 1) // n)
    flags = [
        workers.worker_flags(storage=str(exp.storage), study_name=study.study_name,
                             seed=(setup.sampler_seed + 7919 * i) % 2**31, max_total_trials=total, threads=threads)
        for i in range(1, n)
    ]  # fmt: skip
    where = storage.redact(str(exp.storage))
    print(f"Running {n} worker processes on study {study.study_name!r} ({where}), {total} trials")
    torch.set_num_threads(threads)
    line = progress_line(study, exp)  # drawn until every worker is done; their output is relayed above it
    relayed = isinstance(line, progress.LiveProgress)
    with _mirror(exp, study):
        with (
            workers.signals_interrupt(),
            line,
            progress.Relay() as relay,
            workers.Workers(
                flags, forked=forked, pipe_output=relayed, on_death=lambda *_: recover(study, tracker, exp)
            ) as pool,
        ):
            relay.start(pool.processes)
            outcome = run_tracked(study, setup.objective, tracker, exp, n_jobs=1)
            if outcome.signal is not None:
                pool.interrupt(outcome.signal)
        if any(pool.exit_codes):
            _logger.warning("worker exit codes: %s", pool.exit_codes)
        done = n_finished(study)
        if outcome.completed and outcome.stopped is None and done < total:
            outcome.failure = f"{done} of {total} trials finished; worker processes exited with {pool.exit_codes}"
        _finish(setup, tracker, exp, outcome)
    return study, outcome
