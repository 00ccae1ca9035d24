"""``python -m zoo_ext mlflow-sync``: the runs a study's finished trials are missing, made from its Optuna storage."""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna
from optuna.trial import TrialState

from zoo_ext.storage import StudyError
from zoo_ext.tracking._client import Tracker, environment_tags
from zoo_ext.tracking._mapping import (
    TRACK_ATTR,
    UID_ATTR,
    TrialMapping,
    default_experiment_name,
    optuna_study_params,
    study_params,
)
from zoo_ext.tracking._objective import hyperparams_file

#: The packages whose versions tag the parent run of a plain Optuna study.
OPTUNA_PACKAGES = ("zoo_ext", "optuna", "mlflow")


def sync_tracker(study: optuna.Study, *, tracking_uri: str | None, experiment: str | None) -> Tracker:
    """Return a started :class:`Tracker` for ``study``: a zoo_ext study, or one :func:`zoo_ext.mlflow.track` logs.

    ``experiment`` defaults to the one the study logs to. Raises :class:`~zoo_ext.storage.StudyError`
    for a study neither made (stock rl_zoo3, plain Optuna): it records no study id to find its runs by.
    """
    attrs = study.user_attrs
    name = study.study_name
    settings = attrs.get(TRACK_ATTR)
    if isinstance(settings, dict) and UID_ATTR in attrs:
        mapping = TrialMapping.from_attr(settings)
        tracker = Tracker(tracking_uri=tracking_uri, experiment=experiment or settings.get("experiment") or name,
                          study_name=name, study_uid=attrs[UID_ATTR], mapping=mapping,
                          run_name=settings.get("run_name"))  # fmt: skip
        tracker.start_study(optuna_study_params(study, mapping), environment_tags(OPTUNA_PACKAGES))
        return tracker
    if "zoo_config" not in attrs:
        raise StudyError(
            f"study {name!r} was not created by zoo_ext: it records no env config (zoo_config), nor was it "
            "logged with zoo_ext.mlflow.track"
        )
    if UID_ATTR not in attrs:
        raise StudyError(f"study {name!r} was not created by zoo_ext")
    tracker = Tracker(tracking_uri=tracking_uri,
                      experiment=experiment or default_experiment_name(attrs["algo"], attrs["env_id"]),
                      study_name=name, study_uid=attrs[UID_ATTR])  # fmt: skip
    tracker.start_study(study_params(study), environment_tags())
    return tracker


def sync_study(study: optuna.Study, tracker: Tracker) -> list[int]:
    """Create the runs missing for ``study``'s finished trials; return their numbers.

    Each run gets what a live run gets (params, metrics, tags, ``hyperparams.yml`` for a zoo_ext
    trial); the parent run gets the study's progress at the end of each of these trials (replayed in
    the order the trials finished, :meth:`Tracker.log_history`) and the study's report
    (``trials.csv`` and the plots). ``Tracker.end_study`` then logs the finished study's progress.
    """
    from zoo_ext import reports

    logged = tracker.call(tracker.logged_trial_numbers)
    if logged is None:
        return []
    env_id, config = str(study.user_attrs.get("env_id")), study.user_attrs.get("zoo_config") or {}
    created = []
    with tempfile.TemporaryDirectory(prefix="zoo_ext_") as tmp:
        for trial in study.get_trials(deepcopy=False):
            if trial.number in logged or not trial.state.is_finished():
                continue
            start = int(trial.datetime_start.timestamp() * 1000) if trial.datetime_start else None
            run_id = tracker.start_trial(trial.number, start_time=start, tags={"zoo_ext.synced": "true"})
            if not run_id:
                continue
            folder = Path(tmp, str(trial.number))
            folder.mkdir()
            path = hyperparams_file(folder, trial, env_id, config) if tracker.mapping.zoo else None
            end = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else None
            # As a live run: a value for a complete trial only (Optuna gives a pruned one its last intermediate value).
            values = trial.values if trial.state == TrialState.COMPLETE else None
            tracker.end_trial(run_id, trial, trial.state, values, {"hyperparams": path} if path else None,
                              end_time=end)  # fmt: skip
            created.append(trial.number)
        tracker.log_history(study, created)
        if tracker.enabled:
            report = Path(tmp, "report")
            reports.write_report(study, report)
            tracker.log_study_artifacts(report)
    return created
