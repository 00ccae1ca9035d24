"""The trials' child runs: created when a trial starts, closed with what it logged, and made later for those missing.

A run is left open, or never created, when its process died (a crashed worker) or was killed before
its tracking thread sent it: :meth:`TrialRuns.log_finished` (``close_stale_runs``, ``mlflow-sync``)
completes or creates it from the trial as stored.

A trial keeps one run. MLflow cannot create a run only if none exists, so every creation is
checked right after it (:meth:`TrialRuns.start`): a create that MLflow's client retried after a
slow answer made two runs carrying the same one-off ``zoo_ext.create_id``, and the extra one is
deleted; a run the trial's own process creates wins over one another process made from the
storage meanwhile (tag ``zoo_ext.synced``), which is deleted whichever of the two checks first.
:meth:`TrialRuns.log_finished` leaves alone a trial whose process still runs on this host.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from zoo_ext import record
from zoo_ext.attrs import StudyAttr, TrialAttr
from zoo_ext.storage import is_live_local, was_not_run
from zoo_ext.tracking._connection import Connection
from zoo_ext.tracking._mapping import (
    NUMBER_TAG,
    PARENT_TAG,
    ROLE_TAG,
    STATE_TAG,
    STATUS,
    STUDY_TAG,
    UID_TAG,
    TrialMapping,
    non_empty,
    stale_reason,
    trial_metrics,
    trial_params,
    trial_run_name,
    trial_tags,
)
from zoo_ext.tracking._names import Names
from zoo_ext.tracking._study_run import StudyRun

if TYPE_CHECKING:
    from mlflow.entities import Metric, Param, Run, RunTag


def yaml_dump(data: Any) -> str:
    """Return ``data`` as YAML, as rl_zoo3 hyperparams files are written."""
    import yaml

    return yaml.safe_dump(data, sort_keys=True)


def hyperparams_file(
    folder: Path, trial: FrozenTrial | optuna.Trial, env_id: str, config: Mapping[str, Any]
) -> Path | None:
    """Write the trial's rl_zoo3 hyperparams entry to ``folder/hyperparams.yml``; return it (None: no record)."""
    hyperparams = trial.user_attrs.get(TrialAttr.RECORD)
    if hyperparams is None:
        return None
    path = folder / "hyperparams.yml"
    path.write_text(yaml_dump({env_id: record.zoo_entry(config, hyperparams)}))
    return path


#: Tag of a run made from the storage for a trial whose own process did not make one.
SYNCED_TAG = "zoo_ext.synced"
#: Tag holding one creation's one-off id: two runs with the same one are a retried create.
CREATE_TAG = "zoo_ext.create_id"


def _ms(when: datetime | None) -> int | None:
    """Return a trial's ``datetime`` in MLflow's milliseconds (None stays None)."""
    return int(when.timestamp() * 1000) if when else None


class TrialRuns:
    """The child runs of the study's trials, nested under its parent run (``study_run``)."""

    def __init__(self, connection: Connection, names: Names, study_run: StudyRun, mapping: TrialMapping) -> None:
        self._connection = connection
        self._names = names
        self._study_run = study_run
        self.mapping = mapping
        #: Trials of this process whose run its tracking thread has yet to close: :meth:`log_finished` leaves them be.
        self.pending: set[int] = set()

    def start(self, number: int, *, start_time: int | None = None, tags: Mapping[str, str] | None = None) -> str:
        """Create trial ``number``'s child run (status RUNNING); return its id ('' when off or refused).

        Its tags name the study, the trial and the parent run (none while there is no parent run: no tag is empty).
        """
        connection = self._connection
        if not connection.enabled:
            return ""
        create_id = uuid.uuid4().hex
        run = connection.call(
            connection.client.create_run,
            connection.experiment_id,
            start_time,
            non_empty({**self._tags(number), STATE_TAG: "RUNNING", CREATE_TAG: create_id, **(tags or {})}),
            trial_run_name(number),
        )
        if run is None:
            return ""
        kept = connection.call(self._keep_one, number, run.info.run_id, create_id, synced=SYNCED_TAG in (tags or {}))
        return run.info.run_id if kept is None else kept

    def _keep_one(self, number: int, run_id: str, create_id: str, *, synced: bool) -> str:
        """Return the run trial ``number`` keeps after this process created ``run_id`` ('' : none of its own).

        Deleted: the other runs of this creation (a retried create), and the synced runs when this
        one is the trial's own; this run itself when it is synced and the trial has its own run.
        """
        client = self._connection.client
        others = [run for run in self.find(number).get(number, []) if run.info.run_id != run_id]
        doomed = [run.info.run_id for run in others if run.data.tags.get(CREATE_TAG) == create_id]
        kept = run_id
        if synced and any(SYNCED_TAG not in run.data.tags for run in others):
            doomed, kept = [*doomed, run_id], ""
        elif not synced:
            doomed += [run.info.run_id for run in others if SYNCED_TAG in run.data.tags]
        for doomed_id in dict.fromkeys(doomed):
            self._connection.call(client.delete_run, doomed_id)
        return kept

    def _tags(self, number: int) -> dict[str, str]:
        return {
            PARENT_TAG: self._study_run.run_id,
            STUDY_TAG: self._connection.study_name,
            UID_TAG: self._connection.study_uid,
            NUMBER_TAG: str(number),
            ROLE_TAG: "trial",
        }

    def end(
        self,
        run_id: str,
        trial: FrozenTrial | optuna.Trial,
        state: TrialState,
        values: Sequence[float] | None,
        artifacts: Mapping[str, Path] | None = None,
        *,
        status: str | None = None,
        reason: str | None = None,
        end_time: int | None = None,
    ) -> None:
        """Log the trial's params, curve, values and tags, upload ``artifacts``, then close the run.

        ``state`` is the trial's final Optuna state (tag ``optuna.trial_state``); ``status`` the
        run's status when it is not the state's (KILLED for an interrupted trial Optuna records as
        FAIL); ``reason`` why the trial failed when its user attribute ``fail_reason`` does not say.
        Each step is tried on its own, so a rejected param still leaves the run closed.
        """
        if not run_id:
            return
        connection = self._connection
        data = connection.call(self.data, trial, state, values, reason=reason)
        if data is not None:
            connection.log(run_id, *data)
        for path in (artifacts or {}).values():
            connection.call(connection.client.log_artifact, run_id, str(path))
        connection.call(connection.client.set_terminated, run_id, status or STATUS[state], end_time)
        self._names.save(self._study_run.run_id)

    def data(
        self,
        trial: FrozenTrial | optuna.Trial,
        state: TrialState,
        values: Sequence[float] | None,
        *,
        reason: str | None = None,
    ) -> tuple[list[Metric], list[Param], list[RunTag]]:
        """Return (metrics, params, tags) of a trial for ``MlflowClient.log_batch``, keys MLflow accepts."""
        metrics = self._names.metrics(trial_metrics(trial, values, self.mapping))
        tags = self._names.tags(trial_tags(trial, state, reason, self.mapping))
        return metrics, self._names.params(trial_params(trial, self.mapping)), tags

    def log_finished(self, study: optuna.Study, *, defer_live: bool = True) -> list[int]:
        """Complete the RUNNING runs of finished trials, create the runs finished trials lack; return the created.

        Each gets what a live run gets from the trial as stored (params, metrics, tags,
        ``hyperparams.yml`` for a zoo_ext trial), then its final status (an open run of a failed
        trial without ``fail_reason``: its worker died); a created run is tagged ``zoo_ext.synced``. A
        finished trial without a run whose process still runs on this host is left to that process.
        """
        runs = self.find()
        env_id = str(study.user_attrs.get(StudyAttr.ENV_ID))
        config = study.user_attrs.get(StudyAttr.ZOO_CONFIG) or {}
        created = []
        with tempfile.TemporaryDirectory(prefix="zoo_ext_") as tmp:
            for trial in study.get_trials(deepcopy=False):
                if not trial.state.is_finished() or trial.number in self.pending or was_not_run(trial):
                    continue
                if defer_live and trial.number not in runs and is_live_local(trial.user_attrs.get(TrialAttr.WORKER)):
                    continue  # its own process runs on: it creates the run (its tracking thread may lag)
                found = runs.get(trial.number, [])
                open_runs = [run.info.run_id for run in found if run.info.status == "RUNNING"]
                if found and not open_runs:
                    continue  # a complete run is never written again
                # As a live run: a value for a complete trial only (not a pruned one's last intermediate value).
                values = trial.values if trial.state == TrialState.COMPLETE else None
                folder = Path(tmp, str(trial.number))
                folder.mkdir()
                path = hyperparams_file(folder, trial, env_id, config) if self.mapping.zoo else None
                artifacts = {"hyperparams": path} if path else None
                for run_id in open_runs:
                    self.end(run_id, trial, trial.state, values, artifacts, reason=stale_reason(trial))
                if found:
                    continue
                run_id = self.start(trial.number, start_time=_ms(trial.datetime_start), tags={SYNCED_TAG: "true"})
                if not run_id:
                    continue
                self.end(run_id, trial, trial.state, values, artifacts, end_time=_ms(trial.datetime_complete))
                created.append(trial.number)
        return created

    def find(self, number: int | None = None) -> dict[int, list[Run]]:
        """Return the runs of this study's trials (only trial ``number``'s if given), by trial number."""
        connection = self._connection
        query = f"tags.`{UID_TAG}` = '{connection.study_uid}' and tags.`{ROLE_TAG}` = 'trial'"
        if number is not None:
            query += f" and tags.`{NUMBER_TAG}` = '{number}'"
        runs: dict[int, list[Run]] = {}
        token = None
        while True:
            page = connection.client.search_runs([connection.experiment_id], query, max_results=1000, page_token=token)
            for run in page:
                if NUMBER_TAG in run.data.tags:
                    runs.setdefault(int(run.data.tags[NUMBER_TAG]), []).append(run)
            token = page.token
            if not token:
                return runs

    def log_test_scores(
        self, number: int, scores: Mapping[str, Sequence[float]], aggregate: Mapping[str, float]
    ) -> None:
        """Log a re-evaluated trial's test scores (one step per fresh seed) to its run, if it has one."""
        connection = self._connection
        query = f"tags.`{UID_TAG}` = '{connection.study_uid}' and tags.`{NUMBER_TAG}` = '{number}'"
        runs = connection.client.search_runs([connection.experiment_id], query)
        if not runs:
            return
        points = [(f"test/{name}", float(v), i) for name, values in scores.items() for i, v in enumerate(values)]
        points += [(f"test_score/{name}", float(v), 0) for name, v in aggregate.items()]
        connection.log(runs[0].info.run_id, self._names.metrics(points))
        self._names.save(self._study_run.run_id)
