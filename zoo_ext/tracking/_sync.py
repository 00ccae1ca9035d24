"""``python -m zoo_ext mlflow-sync``: the runs a study's finished trials are missing, made from its Optuna storage."""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna

from zoo_ext.attrs import StudyAttr
from zoo_ext.storage import StudyError
from zoo_ext.tracking._mapping import (
    TRACK_ATTR,
    UID_ATTR,
    TrialMapping,
    default_experiment_name,
    optuna_study_params,
    study_params,
)
from zoo_ext.tracking._study_run import environment_tags
from zoo_ext.tracking._tracker import Tracker

#: The packages whose versions tag the parent run of a plain Optuna study.
OPTUNA_PACKAGES = ("zoo_ext", "optuna", "mlflow")


def sync_tracker(study: optuna.Study, *, tracking_uri: str | None, experiment: str | None) -> Tracker:
    """Return a started :class:`Tracker` for ``study``: a zoo_ext study, or one :func:`zoo_ext.mlflow.track` logs.

    ``experiment`` defaults to the one the study logs to. Raises :class:`~zoo_ext.storage.StudyError`
    for a study neither made (stock rl_zoo3, plain Optuna): it records no study id to find its runs by.
    The tracker is ``quiet``: when MLflow cannot be used, ``failure`` says why and the caller reports it.
    """
    attrs = study.user_attrs
    name = study.study_name
    settings = attrs.get(TRACK_ATTR)
    if isinstance(settings, dict) and UID_ATTR in attrs:
        mapping = TrialMapping.from_attr(settings)
        tracker = Tracker(tracking_uri=tracking_uri, experiment=experiment or settings.get("experiment") or name,
                          study_name=name, study_uid=attrs[UID_ATTR], mapping=mapping,
                          run_name=settings.get("run_name"), quiet=True)  # fmt: skip
        tracker.start_study(optuna_study_params(study, mapping), environment_tags(OPTUNA_PACKAGES))
        return tracker
    if StudyAttr.ZOO_CONFIG not in attrs:
        raise StudyError(
            f"study {name!r} was not created by zoo_ext: it records no env config (zoo_config), nor was it "
            "logged with zoo_ext.mlflow.track"
        )
    if UID_ATTR not in attrs:
        raise StudyError(f"study {name!r} was not created by zoo_ext")
    tracker = Tracker(tracking_uri=tracking_uri,
                      experiment=experiment or default_experiment_name(attrs[StudyAttr.ALGO], attrs[StudyAttr.ENV_ID]),
                      study_name=name, study_uid=attrs[UID_ATTR], quiet=True)  # fmt: skip
    tracker.start_study(study_params(study), environment_tags())
    return tracker


def sync_study(study: optuna.Study, tracker: Tracker) -> list[int]:
    """Create the runs missing for ``study``'s finished trials; return their numbers.

    Each run gets what a live run gets (params, metrics, tags, ``hyperparams.yml`` for a zoo_ext
    trial); the parent run gets the study's progress at the end of each of these trials (replayed in
    the order the trials finished, :meth:`Tracker.log_history`) and the study's report
    (``trials.csv`` and the plots). ``Tracker.end_study`` then logs the finished study's progress.
    A run left RUNNING for a finished trial (its process was killed before closing it) is completed
    instead (:meth:`Tracker.log_finished`), so each trial keeps one run.
    """
    from zoo_ext import reports

    created = tracker.call(tracker.log_finished, study)
    if created is None:
        return []
    tracker.log_history(study, created)
    if tracker.enabled:
        with tempfile.TemporaryDirectory(prefix="zoo_ext_") as tmp:
            report = Path(tmp, "report")
            reports.write_report(study, report)
            tracker.log_study_artifacts(report)
    return created
