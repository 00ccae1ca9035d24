"""``python -m zoo_ext mlflow-mirror``: one process that follows a study in its storage and mirrors it into MLflow.

Workers started with ``--no-mlflow`` import no MLflow and hold no client; one mirror per study,
wherever the user likes, writes what their in-process tracking would have: the parent run and its
story, one run per trial (created while the trial runs, with its params and the values it reports,
completed with everything :mod:`._trial_runs` logs when it ends), keyed by the study's uid and the
trial number. Each pass is idempotent (:func:`mirror_pass`): a complete run is never written again,
a mirror started later (or after one died) completes what the last one left, and two mirrors on
one study leave one run per trial (the duplicates a pass finds are deleted, the oldest run kept).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from zoo_ext.attrs import StudyAttr
from zoo_ext.statistics import sign
from zoo_ext.tracking._mapping import intermediate_values
from zoo_ext.tracking._tracker import Tracker
from zoo_ext.tracking._trial_runs import SYNCED_TAG, _ms

if TYPE_CHECKING:
    from mlflow.entities import Run

__all__ = ["Mirror", "mirror_pass"]

_logger = logging.getLogger("zoo_ext.tracking")

#: Tag of a run the mirror created (it is also ``zoo_ext.synced``: a trial's own in-process run wins over it).
MIRROR_TAG = "zoo_ext.mirrored"
#: The step metric a running trial's reported values go to.
REPORTED_METRIC = "intermediate_value"


@dataclass
class Mirror:
    """A mirror's tracker and what it remembers between passes: the last reported step logged per run, and the
    finished trials whose progress the parent run has (None before the first pass: those with a closed run)."""

    tracker: Tracker
    logged: dict[str, int] = field(default_factory=dict)
    finished: set[int] | None = None
    #: Where the study's workers leave each completed trial's model (``trial_<number>.zip``; None: nowhere).
    models: Path | None = None
    #: Upload every completed trial's model, not only a new best one's.
    log_models: bool = False

    def run(
        self, study: optuna.Study, *, interval: float = 1.0, idle: float = 0.0, stop: threading.Event | None = None
    ) -> None:
        """Mirror ``study`` every ``interval`` seconds while tracking works, until ``stop`` is set or, with ``idle``,
        no trial has run or waited for ``idle`` seconds. Call :meth:`finish` after it."""
        stop = stop or threading.Event()
        quiet_since: float | None = None
        while self.tracker.enabled and not stop.is_set():
            mirror_pass(study, self)
            busy = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
            quiet_since = None if busy else (quiet_since or time.monotonic())
            if idle and quiet_since is not None and time.monotonic() - quiet_since >= idle:
                return
            stop.wait(interval)

    def finish(self, study: optuna.Study) -> None:
        """Make a last pass, upload the study's report folder if it is on this machine (``--mlflow-mirror``), and
        end the parent run (it is reopened if the study goes on)."""
        mirror_pass(study, self)
        self._log_test_scores(study)
        report = study.user_attrs.get(StudyAttr.REPORT)
        if isinstance(report, str) and Path(report).is_dir():
            self.tracker.log_study_artifacts(Path(report))
        self.tracker.end_study(study=study)

    def _log_test_scores(self, study: optuna.Study) -> None:
        """Log the re-evaluated trials' fresh-seed scores (``--reevaluate-top``) to runs that do not have them yet."""
        tracker = self.tracker
        tests = study.user_attrs.get(StudyAttr.TEST_SCORES, {})
        runs = tracker.call(tracker.trial_runs) if tests else None
        for key, entry in tests.items():
            found = (runs or {}).get(int(key), []) if key.isdigit() else []
            if found and not any(name.startswith("test_score/") for name in found[0].data.metrics):
                tracker.log_test_scores(int(key), entry["scores"], entry["aggregate"])


def mirror_pass(study: optuna.Study, mirror: Mirror) -> list[int]:
    """Bring MLflow up to ``study`` as stored now; return the trials whose run this pass completed or created.

    Running trials get a RUNNING run (their params, then each value they report as the step metric
    ``intermediate_value``); finished trials get their run completed or created
    (``Tracker.log_finished``), and the parent run their progress in the order they finished.
    """
    tracker = mirror.tracker
    runs = tracker.call(tracker.trial_runs)
    if runs is None:
        return []
    for number, found in runs.items():
        if len(found) > 1:
            runs[number] = _keep_oldest(tracker, found)
    if mirror.finished is None:  # a mirror after another one: the trials it closed keep their progress
        mirror.finished = {number for number, found in runs.items() if found[0].info.status != "RUNNING"}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        found = runs.get(trial.number)
        if found:
            run_id = found[0].info.run_id if found[0].info.status == "RUNNING" else ""
        else:
            tags = {SYNCED_TAG: "true", MIRROR_TAG: "true"}
            run_id = tracker.start_trial(trial.number, start_time=_ms(trial.datetime_start), tags=tags)
            data = tracker.call(tracker.trial_data, trial, TrialState.RUNNING, None) if run_id else None
            if data is not None:
                tracker.call(tracker.client.log_batch, run_id, params=data[1])
        if run_id:
            _log_reported(mirror, run_id, trial)
    done = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    tracker.call(tracker.log_finished, study, defer_live=False)
    ended = sorted(done - mirror.finished)
    if ended:
        tracker.log_history(study, ended)
    if mirror.models is not None:
        _upload_models(study, mirror, done, set(ended))
    if ended and StudyAttr.PBT_PLAN in study.user_attrs:  # a member's run gets its new segments only
        tracker.log_population(study)
    mirror.finished |= done
    return ended


def _upload_models(study: optuna.Study, mirror: Mirror, done: set[int], ended: set[int]) -> None:
    """Upload the models the workers left for trials that ended in this pass (every one with ``log_models``, else
    a new best one's) to their runs, and delete every finished trial's model file."""
    assert mirror.models is not None
    tracker = mirror.tracker
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for path in sorted(mirror.models.glob("trial_*.zip")):
        number = int(path.stem.removeprefix("trial_")) if path.stem.removeprefix("trial_").isdigit() else None
        if number is None or number not in done:
            continue
        trial = trials[number]
        if number in ended and trial.state == TrialState.COMPLETE and (mirror.log_models or _new_best(study, trial)):
            runs = tracker.call(tracker.trial_runs, number) or {}
            for run in runs.get(number, [])[:1]:
                tracker.call(tracker.client.log_artifact, run.info.run_id, str(path))
        path.unlink(missing_ok=True)


def _new_best(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Return True if no trial completed before ``trial`` is as good (one objective) or dominates it (several)."""
    signs = [sign(d) for d in study.directions]
    mine = [s * v for s, v in zip(signs, trial.values, strict=True)]
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if other.number == trial.number or not (other.datetime_complete and trial.datetime_complete):
            continue
        if other.datetime_complete < trial.datetime_complete:
            theirs = [s * v for s, v in zip(signs, other.values, strict=True)]
            if all(t >= m for t, m in zip(theirs, mine, strict=True)):
                return False
    return True


def _keep_oldest(tracker: Tracker, runs: list[Run]) -> list[Run]:
    """Delete all but one of a trial's runs (two mirrors created one each): its own run if any, else the oldest."""
    own = [run for run in runs if SYNCED_TAG not in run.data.tags]
    kept = min(own or runs, key=lambda run: (run.info.start_time or 0, run.info.run_id))
    for run in runs:
        if run.info.run_id != kept.info.run_id:
            tracker.call(tracker.client.delete_run, run.info.run_id)
    return [kept]


def _log_reported(mirror: Mirror, run_id: str, trial: optuna.trial.FrozenTrial) -> None:
    """Log the values ``trial`` reported since the last pass to its run (step = the reported step)."""
    from mlflow.entities import Metric

    last = mirror.logged.get(run_id, -1)
    new = sorted((step, value) for step, value in intermediate_values(trial).items() if step > last)
    if not new:
        return
    now = int(time.time() * 1000)
    metrics = [Metric(REPORTED_METRIC, float(value), now, int(step)) for step, value in new]
    tracker = mirror.tracker
    tracker.call(tracker.client.log_batch, run_id, metrics=metrics)
    if tracker.enabled:
        mirror.logged[run_id] = new[-1][0]
