"""The study's parent run and the story it tells: trial counts, best value(s), best trial, stop reason, result card.

Every worker of a study converges on one parent run (the oldest with the study's id). Each ending
trial logs the study's progress there at its step; when the study ends, the final progress is
logged where the parent run holds other values (another worker's trial ended meanwhile), then the
run ends (reopened when the study resumes). No tag is empty: a ``best_params.<name>`` tag the best
trial has no value for (a conditional space) and a stop reason that no longer holds are deleted.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from zoo_ext.attrs import StudyAttr
from zoo_ext.tracking._connection import Connection, first_line
from zoo_ext.tracking._mapping import (
    BEST_PARAMS,
    CARD_ARTIFACT,
    MAX_TAG,
    ROLE_TAG,
    STUDY_TAG,
    UID_TAG,
    StudyProgress,
    TrialMapping,
    card_metrics,
    non_empty,
    objective_names,
    text,
)
from zoo_ext.tracking._names import Names

if TYPE_CHECKING:
    from mlflow.entities import Metric, Run, RunTag

_logger = logging.getLogger("zoo_ext.tracking")

#: The parent run's tag saying why a stop rule ended the study (--budget-steps, --target-value, --patience).
STOP_TAG = "zoo_ext.stop_reason"
#: The packages whose versions tag a parent run.
PACKAGES = ("zoo_ext", "rl_zoo3", "stable_baselines3", "sb3_contrib", "optuna", "torch", "mlflow", "gymnasium")


def versions(packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Return the installed versions of ``packages`` (default: zoo_ext and the libraries a study depends on)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment_tags(packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Return tags describing the process that ran the study: package versions and its pid."""
    return {f"version.{name}": value for name, value in versions(packages).items()} | {"host.pid": str(os.getpid())}


class StudyRun:
    """The study's parent run: found or created once, then told the study's progress; ``run_id`` is '' until then."""

    def __init__(self, connection: Connection, names: Names, mapping: TrialMapping, run_name: str) -> None:
        self._connection = connection
        self._names = names
        self.mapping = mapping
        self.run_name = run_name
        self.run_id = ""
        #: The study whose trials this process logged, to log its final progress when it ends.
        self.study: optuna.Study | None = None

    def _runs(self) -> list[Run]:
        connection = self._connection
        query = f"tags.`{ROLE_TAG}` = 'study' and tags.`{UID_TAG}` = '{connection.study_uid}'"
        runs = connection.client.search_runs([connection.experiment_id], query)
        return sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))

    def start(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        """Find or create the parent run; a new one gets ``params`` and ``tags``. An error switches tracking off."""
        if not self._connection.enabled:
            return
        try:
            created = self._find_or_create(tags)
        except Exception as exc:  # noqa: BLE001 - MLflow failing at start-up must not stop the study
            self._connection.switch_off(exc)
            return
        if created:
            from mlflow.entities import RunTag

            source = [RunTag("mlflow.source.name", "zoo_ext")]
            self._connection.log(self.run_id, params=self._names.params(params), tags=source)
            self._names.save(self.run_id)

    def _find_or_create(self, tags: Mapping[str, str]) -> bool:
        """Set ``run_id`` (the oldest parent run, reopened); return True if this process created it."""
        client, connection = self._connection.client, self._connection
        runs = self._runs()
        if runs:
            self.run_id = runs[0].info.run_id
            if runs[0].info.status != "RUNNING":
                client.update_run(self.run_id, status="RUNNING")
            return False
        run = client.create_run(
            connection.experiment_id,
            run_name=self.run_name,
            tags=non_empty(
                {ROLE_TAG: "study", STUDY_TAG: connection.study_name, UID_TAG: connection.study_uid, **tags}
            ),
        )
        runs = self._runs()
        self.run_id = runs[0].info.run_id if runs else run.info.run_id
        if self.run_id != run.info.run_id:  # another worker won the race
            client.delete_run(run.info.run_id)
            return False
        return True

    def end(self, status: str, study: optuna.Study | None) -> None:
        """Log the final progress and stop reason of ``study`` (default: :attr:`study`), then end the run.

        The final counts, best value(s) and best trial are logged only where the parent run says
        otherwise (a trial of another worker ended while this one logged). The tag
        ``zoo_ext.stop_reason`` is set when a stop rule ended the study, deleted when none did (a
        resumed study ran on). The run is reopened when the study resumes.
        """
        if not self.run_id:
            return
        study = study or self.study
        connection = self._connection
        if study is not None:
            run = connection.call(connection.client.get_run, self.run_id)
            if run is not None:
                self._log_final_progress(study, run)
                self._log_stop_reason(study, run.data.tags)
        connection.call(connection.client.set_terminated, self.run_id, status)

    def _log_stop_reason(self, study: optuna.Study, logged: Mapping[str, str]) -> None:
        """Set the parent run's :data:`STOP_TAG` to ``study``'s stop reason, or delete it (``logged``) when none."""
        connection = self._connection
        reason = text(study.user_attrs.get(StudyAttr.STOP_REASON) or "", MAX_TAG)
        if reason and logged.get(STOP_TAG) != reason:
            connection.call(connection.client.set_tag, self.run_id, STOP_TAG, reason)
        elif not reason and STOP_TAG in logged:
            connection.call(connection.client.delete_tag, self.run_id, STOP_TAG)

    def _progress(self, trials: Iterable[FrozenTrial], study: optuna.Study) -> StudyProgress:
        progress = StudyProgress(study.directions, objective_names(study, self.mapping))
        for trial in trials:
            progress.add_trial(trial)
        return progress

    def _metrics(self, progress: StudyProgress, step: int, timestamp: int | None = None) -> list[Metric]:
        """Return ``progress``'s metrics as points at ``step`` (time: ``timestamp`` or now), keys MLflow accepts."""
        return self._names.metrics(((name, value, step) for name, value in progress.metrics().items()), timestamp)

    def _tags(self, progress: StudyProgress) -> list[RunTag]:
        """Return ``progress``'s tags for the parent run, keys MLflow accepts."""
        return self._names.tags(progress.tags())

    def _send(self, metrics: Sequence[Metric], tags: Sequence[RunTag] = ()) -> None:
        self._connection.log(self.run_id, metrics, tags=tags)
        self._names.save(self.run_id)

    def _send_progress(self, metrics: Sequence[Metric], tags: Sequence[RunTag], progress: StudyProgress) -> None:
        """Log ``progress``'s ``metrics`` and ``tags``; if the best trial lacks a parameter, delete stale best tags."""
        self._send(metrics, tags)
        if progress.partial:
            run = self._connection.call(self._connection.client.get_run, self.run_id)
            if run is not None:
                self._delete_stale(run.data.tags, tags)

    def _delete_stale(self, logged: Mapping[str, str], tags: Sequence[RunTag]) -> None:
        """Delete the parent run's ``best_params.*`` tags (``logged``) not in ``tags``: an earlier best trial's."""
        keys = {tag.key for tag in tags}
        for key in logged:
            if key.startswith(BEST_PARAMS) and key not in keys:
                # Quiet: another worker may have deleted it meanwhile, which is what this call is for.
                self._connection.attempt(self._connection.client.delete_tag, self.run_id, key, quiet=True)

    def log_progress(
        self, study: optuna.Study, number: int, state: TrialState, values: Sequence[float] | None,
        params: Mapping[str, Any], finished: Sequence[FrozenTrial] | None = None,
    ) -> None:  # fmt: skip
        """Log the study's progress to the parent run at step ``number`` when trial ``number`` ends: one ``log_batch``.

        The trial ended with ``state``, ``values`` and ``params`` (Optuna stores them after this);
        the other finished trials are ``finished`` (read when the trial ended), else read from the
        storage, so whichever worker logs last logs the whole study. Metrics: ``n_complete``,
        ``n_pruned``, ``n_failed``, then ``best_value`` (the best so far) or, for several objectives,
        ``pareto_front_size`` and ``best_<objective>``; tags: ``best_trial`` and
        ``best_params.<name>`` (those the best trial has no value for deleted), or ``pareto_trials``.
        A failure to compute them is a warning.
        """
        if not self._connection.enabled or not self.run_id:
            return
        self.study = study
        try:
            trials = study.get_trials(deepcopy=False) if finished is None else finished
            others = (t for t in trials if t.number != number and t.state.is_finished())
            progress = self._progress(others, study)
            progress.add(number, state, values, params)
            metrics, tags = self._metrics(progress, number), self._tags(progress)
        except Exception as exc:  # noqa: BLE001 - the study's progress must not change the trial's outcome
            _logger.warning("trial %d: study progress not logged (%s)", number, first_line(exc))
            return
        self._send_progress(metrics, tags, progress)

    def log_history(self, study: optuna.Study, numbers: Collection[int]) -> None:
        """Log the study's progress as :meth:`log_progress` would have when each trial in ``numbers`` ended.

        The finished trials are replayed in the order they finished (``mlflow-sync``); the tags are
        the finished study's.
        """
        if not self._connection.enabled or not self.run_id:
            return
        self.study = study
        numbers = set(numbers)
        finished = sorted(
            (t for t in study.get_trials(deepcopy=False) if t.state.is_finished()),
            key=lambda t: (t.datetime_complete or datetime.max, t.number),
        )
        progress = self._progress((), study)
        metrics: list[Metric] = []
        for trial in finished:
            progress.add_trial(trial)
            if trial.number in numbers:
                when = trial.datetime_complete or datetime.now()
                metrics += self._metrics(progress, trial.number, int(when.timestamp() * 1000))
        if metrics:
            self._send_progress(metrics, self._tags(progress), progress)

    def _log_final_progress(self, study: optuna.Study, run: Run) -> None:
        """Log the finished trials' progress where the parent ``run`` holds other values, at the last trial's step.

        Its ``best_params.*`` tags the best trial has no value for are deleted.
        """
        try:
            finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
            if not finished:
                return
            progress = self._progress(finished, study)
            step = max(t.number for t in finished)
            metrics, tags = self._metrics(progress, step), self._tags(progress)
        except Exception as exc:  # noqa: BLE001 - the parent run must still end
            _logger.warning("study %r: final progress not logged (%s)", self._connection.study_name, first_line(exc))
            return
        changed = [t for t in tags if run.data.tags.get(t.key) != t.value]
        metrics = [m for m in metrics if run.data.metrics.get(m.key) != m.value]
        if metrics or changed:
            self._send(metrics, changed)
        self._delete_stale(run.data.tags, tags)

    def log_artifacts(self, folder: Path) -> None:
        """Upload every file of ``folder`` to the parent run."""
        if self.run_id:
            self._connection.call(self._connection.client.log_artifacts, self.run_id, str(folder))

    def log_result_card(self, card: Mapping[str, Mapping[str, Any]], html: str) -> None:
        """Log a result card to the parent run: its :func:`card_metrics` and ``html`` as :data:`CARD_ARTIFACT`."""
        if self.run_id:
            self._connection.call(self._log_result_card, card, html)

    def _log_result_card(self, card: Mapping[str, Mapping[str, Any]], html: str) -> None:
        self._send(self._names.metrics((name, value, 0) for name, value in card_metrics(card).items()))
        with tempfile.TemporaryDirectory(prefix="zoo_ext_") as tmp:
            path = Path(tmp) / CARD_ARTIFACT
            path.write_text(html, encoding="utf-8")
            self._connection.client.log_artifact(self.run_id, str(path))
