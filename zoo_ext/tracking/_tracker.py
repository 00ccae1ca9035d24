"""The :class:`Tracker`: a study's parent run and its trials' child runs, one object the engine talks to.

It delegates each concern to a collaborator: the connection and its error policy
(:mod:`._connection`), the background thread (:mod:`._queue`), MLflow keys and renamed names
(:mod:`._names`), the parent run's story (:mod:`._study_run`) and the trials' runs (:mod:`._trial_runs`).
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

import optuna
from optuna.trial import FrozenTrial, TrialState

from zoo_ext.tracking._connection import Connection
from zoo_ext.tracking._mapping import ZOO, TrialMapping
from zoo_ext.tracking._names import Names
from zoo_ext.tracking._population import log_population
from zoo_ext.tracking._queue import FLUSH_TIMEOUT, UpdateQueue, queued
from zoo_ext.tracking._study_run import StudyRun
from zoo_ext.tracking._trial_runs import TrialRuns

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, Run, RunTag

_logger = logging.getLogger("zoo_ext.tracking")

_P = ParamSpec("_P")


class Tracker:
    """Logs one study to MLflow. Create it before ``study.optimize``: it never raises.

    ``enabled`` is False when MLflow could not be set up (one warning was logged) or became
    unreachable (with ``background``: also until the thread has set it up); ``failure`` then says
    why. ``mapping`` says what of a trial its run gets (:class:`TrialMapping`); the parent run is
    named ``run_name`` (default: the study's name). With ``background``, MLflow is set up and every
    logging method runs on one background thread, in the order called (see :mod:`._queue`).
    ``storage`` is the study's ``--storage`` value (None: in memory), named in the ``mlflow-sync``
    command the warnings give; with ``quiet`` there is no such warning: the caller reports ``failure``.
    """

    def __init__(
        self,
        *,
        tracking_uri: str | None,
        experiment: str,
        study_name: str,
        study_uid: str,
        log_models: bool = False,
        mapping: TrialMapping = ZOO,
        run_name: str | None = None,
        background: bool = False,
        storage: str | None = None,
        quiet: bool = False,
    ) -> None:
        self.log_models = log_models
        self._connection = Connection(tracking_uri=tracking_uri, experiment=experiment, study_name=study_name,
                                      study_uid=study_uid, storage=storage, quiet=quiet)  # fmt: skip
        names = Names(self._connection)
        self._study_run = StudyRun(self._connection, names, mapping, run_name or study_name)
        self._trials = TrialRuns(self._connection, names, self._study_run, mapping)
        self._queue = UpdateQueue(f"zoo_ext-mlflow-{study_name}" if background else None)
        self.submit(self._connection.connect)
        if background:
            atexit.register(self.flush)

    @property
    def mapping(self) -> TrialMapping:
        """What of a trial its run gets."""
        return self._trials.mapping

    @property
    def run_name(self) -> str:
        """The parent run's name."""
        return self._study_run.run_name

    @property
    def enabled(self) -> bool:
        """True while MLflow calls are made: set up, and not unreachable since."""
        return self._connection.enabled

    @property
    def failure(self) -> str:
        """Why tracking is off ("MLflow at URI is unavailable (reason)"); "" while it is on or not set up yet."""
        return self._connection.failure

    @property
    def client(self) -> MlflowClient:
        """The ``MlflowClient`` every call goes through (set once connected)."""
        return self._connection.client

    @property
    def tracking_uri(self) -> str:
        """The tracking URI (MLflow's default one once connected, when none was given)."""
        return self._connection.tracking_uri

    @property
    def experiment_name(self) -> str:
        """The experiment the study logs to."""
        return self._connection.experiment_name

    @property
    def experiment_id(self) -> str:
        """The experiment's id ('' until connected)."""
        return self._connection.experiment_id

    @property
    def study_name(self) -> str:
        """The Optuna study's name."""
        return self._connection.study_name

    @property
    def study_uid(self) -> str:
        """The study's id in MLflow, every run of the study is tagged with; settable before :meth:`start_study`."""
        return self._connection.study_uid

    @study_uid.setter
    def study_uid(self, value: str) -> None:
        self._connection.study_uid = value

    @property
    def storage(self) -> str | None:
        """The study's ``--storage`` value named in the ``mlflow-sync`` hints (None: in memory)."""
        return self._connection.storage

    @property
    def quiet(self) -> bool:
        """True if the caller, not a warning, reports ``failure``."""
        return self._connection.quiet

    @property
    def parent_run_id(self) -> str:
        """The study's parent run ('' until :meth:`start_study` found or created it)."""
        return self._study_run.run_id

    @property
    def pending(self) -> set[int]:
        """Trials of this process whose run the tracking thread has yet to close (:meth:`log_finished` skips them)."""
        return self._trials.pending

    @property
    def background(self) -> bool:
        """True if MLflow calls run on this tracker's background thread."""
        return self._queue.worker is not None

    def submit(self, fn: Callable[_P, object], *args: _P.args, **kwargs: _P.kwargs) -> None:
        """Run ``fn(*args, **kwargs)``: now, or queued on the background thread (from any other thread)."""
        self._queue.submit(fn, *args, **kwargs)

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Wait until every queued MLflow update ran; return False (after one warning) if some could not run.

        Without a background thread there is nothing to wait for. Called by :meth:`end_study` and at exit.
        """
        left = self._queue.flush(timeout)
        if left:
            _logger.warning(
                "MLflow: %d update(s) of study %r not sent; %s", left, self.study_name,
                self._connection.sync_hint("to log its finished trials"),
            )  # fmt: skip
        return not left

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run an MLflow call under the error policy; return its result, or None if tracking is off or it failed.

        A connection failure switches tracking off for this process (one warning); a call MLflow
        rejects is a warning and tracking stays on.
        """
        return self._connection.call(fn, *args, **kwargs)

    def sync_command(self) -> str | None:
        """Return the ``mlflow-sync`` command that logs this study later, shell-quoted, passwords redacted.

        It names the study's storage, the tracking URI once known and the experiment; None for a study in memory.
        """
        return self._connection.sync_command()

    @queued
    def start_study(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        """Find or create the study's parent run; every worker converges on the oldest one.

        Any error here leaves tracking off for this process, with one warning.
        """
        self._study_run.start(params, tags)

    def end_study(self, status: str = "FINISHED", study: optuna.Study | None = None) -> None:
        """Log ``study``'s final progress (default: the logged one's), end the parent run; return once all ran.

        See ``StudyRun.end``; in background mode it returns after :meth:`flush`.
        """
        self.submit(self._study_run.end, status, study)
        self.flush()

    @queued
    def log_progress(
        self, study: optuna.Study, number: int, state: TrialState, values: Sequence[float] | None,
        params: Mapping[str, Any], finished: Sequence[FrozenTrial] | None = None,
    ) -> None:  # fmt: skip
        """Log the study's progress (counts, best so far) to the parent run at step ``number`` as trial ``number`` ends.

        See ``StudyRun.log_progress``. Never raises.
        """
        self._study_run.log_progress(study, number, state, values, params, finished)

    def log_history(self, study: optuna.Study, numbers: Collection[int]) -> None:
        """Log the study's progress as :meth:`log_progress` would have when each trial in ``numbers`` ended."""
        self._study_run.log_history(study, numbers)

    @queued
    def log_study_artifacts(self, folder: Path) -> None:
        """Upload every file of ``folder`` to the parent run."""
        self._study_run.log_artifacts(folder)

    @queued
    def log_result_card(self, card: Mapping[str, Mapping[str, Any]], html: str) -> None:
        """Log a result card to the parent run: its ``card/...`` metrics and ``html`` as ``result_card.html``."""
        self._study_run.log_result_card(card, html)

    def start_trial(self, number: int, *, start_time: int | None = None, tags: Mapping[str, str] | None = None) -> str:
        """Create trial ``number``'s child run (status RUNNING); return its id ('' when off or refused)."""
        return self._trials.start(number, start_time=start_time, tags=tags)

    def end_trial(
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
        """Log the trial's params, curve, values and tags, upload ``artifacts``, then close run ``run_id``.

        See ``TrialRuns.end`` for ``state``, ``status`` and ``reason``.
        """
        self._trials.end(run_id, trial, state, values, artifacts, status=status, reason=reason, end_time=end_time)

    def trial_data(
        self, trial: FrozenTrial | optuna.Trial, state: TrialState, values: Sequence[float] | None, *,
        reason: str | None = None,
    ) -> tuple[list[Metric], list[Param], list[RunTag]]:  # fmt: skip
        """Return (metrics, params, tags) of a trial for ``MlflowClient.log_batch``, keys MLflow accepts."""
        return self._trials.data(trial, state, values, reason=reason)

    def trial_runs(self, number: int | None = None) -> dict[int, list[Run]]:
        """Return the runs of this study's trials (only trial ``number``'s if given), by trial number."""
        return self._trials.find(number)

    @queued
    def close_stale_runs(self, study: optuna.Study) -> None:
        """Log the finished trials whose run is missing or was left open (see :meth:`log_finished`)."""
        self.call(self._trials.log_finished, study)

    def log_finished(self, study: optuna.Study, *, defer_live: bool = True) -> list[int]:
        """Complete the open runs of finished trials, create the missing ones; return the created trial numbers.

        See ``TrialRuns.log_finished``.
        """
        return self._trials.log_finished(study, defer_live=defer_live)

    @queued
    def log_population(self, study: optuna.Study) -> None:
        """Log one run per population member under the parent run: its segments as steps (see ``log_population``)."""
        self.call(log_population, self.client, experiment_id=self.experiment_id, parent_run_id=self.parent_run_id,
                  study=study)  # fmt: skip

    @queued
    def log_test_scores(
        self, number: int, scores: Mapping[str, Sequence[float]], aggregate: Mapping[str, float]
    ) -> None:
        """Log a re-evaluated trial's test scores (one step per fresh seed) to its run."""
        self.call(self._trials.log_test_scores, number, scores, aggregate)
