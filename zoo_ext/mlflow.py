"""MLflow tracking for plain Optuna studies (no RL): one parent run per study, one nested child run per trial.

A replacement for optuna-integration's deprecated ``MLflowCallback``, without its known problems:
the child runs find their parent in ``n_jobs`` threads and in other processes (runs are addressed
by id through one ``MlflowClient``, never through the fluent API's per-thread active run), pruned
and failed trials get their own status, and a trial's run exists while it runs::

    import optuna
    from zoo_ext.mlflow import track


    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -10, 10)
        for step in range(10):
            trial.report((x - 2) ** 2 + 1 / (step + 1), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return (x - 2) ** 2


    study = optuna.create_study(study_name="quadratic", storage="sqlite:///quadratic.db", load_if_exists=True)
    with track(study, objective, experiment="quadratic") as tracked:
        study.optimize(tracked, n_trials=20, n_jobs=4)

Each trial's run (``trial-<number>``, tag ``mlflow.parentRunId``) gets the trial's params, its user
attributes (numbers as metrics too, all as ``user_attr.<name>`` tags), the values ``trial.report``
received as the step metric ``intermediate_value`` (step = the reported step), the objective
value(s) as metrics, the tag ``optuna.trial_state`` and the status FINISHED (COMPLETE), KILLED
(PRUNED, or interrupted by Ctrl-C) or FAILED (FAIL: the exception in user attribute and tag
``fail_reason`` and in the run's note). The parent run is found again when the study resumes or
another process tracks it (by an id stored in the study's user attribute ``zoo_ext_uid``), so a
study stored in a database or journal file has one parent run however many processes work on it.
If MLflow is down, the study goes on untracked (one warning); afterwards ``python -m zoo_ext
mlflow-sync --storage S --study-name N`` creates the runs missing for its finished trials.
"""

from __future__ import annotations

import logging
import types
import uuid
from collections.abc import Mapping, Sequence

import optuna

from zoo_ext import tracking
from zoo_ext.storage import redact

__all__ = ["MlflowObjective", "track"]

_logger = logging.getLogger(__name__)

#: Run statuses :meth:`MlflowObjective.close` accepts.
_END_STATUSES = ("FINISHED", "FAILED", "KILLED")


class MlflowObjective(tracking.RunPerTrial):
    """An objective for ``study.optimize`` that logs each trial to its own MLflow child run (returned by :func:`track`).

    Use it as a context manager, which ends the parent run when the block exits (FINISHED, KILLED
    after Ctrl-C, FAILED after another exception), or call :meth:`close` yourself. Either way, the
    parent run is reopened when the study is tracked again.
    """

    def __init__(self, study: optuna.Study, objective: tracking.Objective, tracker: tracking.Tracker) -> None:
        super().__init__(objective, tracker, record_fail_reason=True)
        self.study = study

    @property
    def enabled(self) -> bool:
        """False when MLflow could not be set up or became unreachable (the trials run untracked)."""
        return self.tracker.enabled

    @property
    def tracking_uri(self) -> str:
        """The tracking URI the runs go to."""
        return self.tracker.tracking_uri

    @property
    def experiment_id(self) -> str:
        """The id of the MLflow experiment holding the study's runs ('' when untracked)."""
        return self.tracker.experiment_id

    @property
    def parent_run_id(self) -> str:
        """The id of the study's parent run ('' when untracked)."""
        return self.tracker.parent_run_id

    def close(self, status: str = "FINISHED") -> None:
        """End the study's parent run with ``status`` (FINISHED, FAILED or KILLED), closing runs left RUNNING first."""
        if status not in _END_STATUSES:
            raise ValueError(f"status must be one of {', '.join(_END_STATUSES)}; got {status!r}")
        self.tracker.close_stale_runs(self.study)
        self.tracker.end_study(status, study=self.study)

    def __enter__(self) -> MlflowObjective:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close("FINISHED")
        else:
            self.close("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")


def _study_uid(study: optuna.Study) -> str:
    """Return the study's id, set in its user attributes by the first process tracking it."""
    uid = study.user_attrs.get(tracking.UID_ATTR)
    if not isinstance(uid, str) or not uid:
        uid = uuid.uuid4().hex
        study.set_user_attr(tracking.UID_ATTR, uid)
    return uid


def _storage_value(study: optuna.Study) -> str | None:
    """Return the ``--storage`` value that opens ``study``'s storage again (for ``mlflow-sync``); None if none does.

    A database gives its URL, a journal file its path (``mlflow-sync`` reads a journal ending in ``.log``), a gRPC
    proxy ``grpc://host:port``; in memory, or another storage: None.
    """
    from optuna.storages import GrpcStorageProxy, JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    backend = study._storage
    if isinstance(backend, JournalStorage):
        log = getattr(backend, "_backend", None)
        path = str(getattr(log, "_file_path", ""))
        return path if isinstance(log, JournalFileBackend) and path.endswith(".log") else None
    backend = getattr(backend, "_backend", backend)  # a database behind Optuna's cache
    if isinstance(backend, RDBStorage):
        return str(backend.url)
    if isinstance(backend, GrpcStorageProxy):
        return f"grpc://{getattr(backend, '_host', 'localhost')}:{getattr(backend, '_port', 13000)}"
    return None


def track(
    study: optuna.Study,
    objective: tracking.Objective,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    metric_name: str | Sequence[str] = "value",
    intermediate_metric: str | None = "intermediate_value",
    tags: Mapping[str, str] | None = None,
) -> MlflowObjective:
    """Return ``objective`` wrapped so each trial of ``study`` is logged to MLflow; pass it to ``study.optimize``.

    Finds or creates the study's parent run first (it never raises for MLflow: if MLflow cannot be
    used, one warning is logged and the trials run untracked). Safe with ``n_jobs`` threads and with
    several processes on one stored study. Stores in the study's user attributes what
    ``python -m zoo_ext mlflow-sync`` needs to log the study later (``zoo_ext_uid``, ``zoo_ext_mlflow``).

    Args:
        study: The study to track; in-memory or stored.
        objective: The objective, as for ``study.optimize``.
        tracking_uri: MLflow tracking URI (default: ``$MLFLOW_TRACKING_URI``, else MLflow's default,
            ``sqlite:///mlflow.db`` in the working directory).
        experiment: MLflow experiment (created if missing; default: the study's name).
        run_name: Name of the parent run (default: the study's name).
        metric_name: Metric name of the objective value, or one name per objective; one name for
            several objectives becomes ``<name>_0``, ``<name>_1``, ...
        intermediate_metric: Metric holding the values ``trial.report`` received, one step per
            reported step (None: not logged).
        tags: Extra tags of the parent run, set when it is created (keys MLflow rejects are sanitised).

    Example::

        with track(study, objective, experiment="quadratic") as tracked:
            study.optimize(tracked, n_trials=20, n_jobs=4)
    """
    if not isinstance(study, optuna.Study):
        raise TypeError(f"study must be an optuna.Study; got {type(study).__name__}")
    if not callable(objective):
        raise TypeError(f"objective must be callable; got {type(objective).__name__}")
    for name, value in {
        "experiment": experiment,
        "run_name": run_name,
        "intermediate_metric": intermediate_metric,
    }.items():
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{name} must be a non-empty string or None; got {value!r}")
    names = tracking.value_names(metric_name, len(study.directions))
    if intermediate_metric in names:
        raise ValueError(f"intermediate_metric {intermediate_metric!r} is also an objective's metric name")
    mapping = tracking.TrialMapping(zoo=False, value_names=names, intermediate_metric=intermediate_metric)
    experiment = experiment or study.study_name
    settings = {"experiment": experiment, "run_name": run_name, **mapping.to_attr()}
    if study.user_attrs.get(tracking.TRACK_ATTR) != settings:
        study.set_user_attr(tracking.TRACK_ATTR, settings)
    uid = _study_uid(study)
    tracker = tracking.Tracker(tracking_uri=tracking_uri, experiment=experiment, study_name=study.study_name,
                               study_uid=uid, mapping=mapping, run_name=run_name,
                               storage=_storage_value(study))  # fmt: skip
    # Two processes tracking a new study at the same moment may both have set an id; the stored one wins.
    tracker.study_uid = study.user_attrs.get(tracking.UID_ATTR, uid)
    params = {
        **tracking.optuna_study_params(study, mapping),
        "sampler": type(study.sampler).__name__,
        "pruner": type(study.pruner).__name__,
    }
    extra = {tracking.mlflow_key(str(key)): str(value) for key, value in (tags or {}).items()}
    tracker.start_study(params, {**tracking.environment_tags(tracking.OPTUNA_PACKAGES), **extra})
    if tracker.enabled:
        tracker.close_stale_runs(study)
        _logger.info("MLflow: study %r logs to experiment %r, parent run %s at %s", study.study_name, experiment,
                     tracker.parent_run_id, redact(tracker.tracking_uri))  # fmt: skip
    return MlflowObjective(study, objective, tracker)
