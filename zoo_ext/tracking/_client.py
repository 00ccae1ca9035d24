"""The :class:`Tracker`: a study's parent run and its trials' child runs through one ``MlflowClient``.

Every run is addressed by id (never through the fluent API's per-thread active run), so threads
and worker processes log side by side. Error policy: a connection failure (the server or database
cannot be reached, a 5xx answer) logs one warning and switches tracking off for this process; a
call MLflow rejects (an invalid value, a run that already exists, ...) is a warning and tracking
goes on; any error while the tracker starts leaves the study untracked, with one warning. A SQLite
store is opened under a file lock (``<database>.lock``): MLflow breaks a new store that two
processes create at the same moment.

In background mode (``Tracker(background=True)``, what a zoo_ext RL study uses) MLflow is off the
study's critical path: importing mlflow, opening (maybe creating) the store, the parent run and
every trial's logging run in order on one daemon thread while trials train. :meth:`Tracker.flush`
(called by :meth:`Tracker.end_study`, and at exit) waits for what is queued; if the thread died,
the caller runs what is left itself. An update that never ran (the process was killed) leaves a
finished trial without a complete run, which ``mlflow-sync`` creates later.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import queue
import shlex
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from zoo_ext import record
from zoo_ext.storage import redact, was_not_run
from zoo_ext.tracking._mapping import (
    CARD_ARTIFACT,
    MAX_TAG,
    NAMES_ARTIFACT,
    NUMBER_TAG,
    PARENT_TAG,
    ROLE_TAG,
    STATE_TAG,
    STATUS,
    STUDY_TAG,
    UID_TAG,
    ZOO,
    StudyProgress,
    TrialMapping,
    card_metrics,
    mlflow_keys,
    objective_names,
    stale_reason,
    text,
    trial_metrics,
    trial_params,
    trial_run_name,
    trial_tags,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, Run, RunTag

_logger = logging.getLogger("zoo_ext.tracking")

#: Params or tags per ``log_batch`` call (MLflow's limit).
_BATCH = 100
#: HTTP statuses of the MLflow errors that reject one call (invalid value, already exists, not found, conflict).
_REJECTED = frozenset({400, 404, 409})
#: Seconds to wait for another process creating the same SQLite store (creation takes about 7 s).
_STORE_LOCK_TIMEOUT = 300
#: The packages whose versions tag a parent run.
PACKAGES = ("zoo_ext", "rl_zoo3", "stable_baselines3", "sb3_contrib", "optuna", "torch", "mlflow", "gymnasium")
#: Seconds :meth:`Tracker.flush` waits at most for the background thread (each MLflow call has its own timeouts).
FLUSH_TIMEOUT = 600.0
#: ``Tracker.tracking_uri`` until MLflow tells the default one (no URI given, mlflow not imported yet).
_UNRESOLVED_URI = "the default tracking URI"

_P = ParamSpec("_P")
_R = TypeVar("_R")


def is_outage(exc: BaseException) -> bool:
    """Return True for a failure to reach MLflow (connection, database, 5xx), False for a rejected call."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return exc.get_http_status_code() not in _REJECTED
    return isinstance(exc, OSError)


def first_line(exc: BaseException) -> str:
    """Return the first line of ``exc``'s message (its type when empty), passwords redacted."""
    return redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Hold ``<database>.lock`` while a ``sqlite:///`` store is opened (and maybe created); other URIs: no lock."""
    database = None
    if uri.startswith("sqlite:///"):
        from sqlalchemy.engine import make_url

        database = make_url(uri).database
    if not database or database == ":memory:":
        yield
        return
    from filelock import FileLock

    with FileLock(f"{database}.lock", timeout=_STORE_LOCK_TIMEOUT):
        yield


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


def yaml_dump(data: Any) -> str:
    """Return ``data`` as YAML, as rl_zoo3 hyperparams files are written."""
    import yaml

    return yaml.safe_dump(data, sort_keys=True)


def hyperparams_file(
    folder: Path, trial: FrozenTrial | optuna.Trial, env_id: str, config: Mapping[str, Any]
) -> Path | None:
    """Write the trial's rl_zoo3 hyperparams entry to ``folder/hyperparams.yml``; return it (None: no record)."""
    hyperparams = trial.user_attrs.get(record.RECORD_ATTR)
    if hyperparams is None:
        return None
    path = folder / "hyperparams.yml"
    path.write_text(yaml_dump({env_id: record.zoo_entry(config, hyperparams)}))
    return path


def environment_tags(packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Return tags describing the process that ran the study: package versions and its pid."""
    return {f"version.{name}": value for name, value in versions(packages).items()} | {"host.pid": str(os.getpid())}


class _Worker:
    """One daemon thread running queued jobs in order; a job's exception is a warning and the next job runs."""

    def __init__(self, name: str) -> None:
        self.queue: queue.Queue[Callable[[], object]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, job: Callable[[], object]) -> None:
        """Queue ``job`` after the jobs already queued."""
        self.queue.put(job)

    def _run(self) -> None:
        while True:
            self._run_one(self.queue.get())

    def _run_one(self, job: Callable[[], object]) -> None:
        try:
            job()
        except Exception as exc:  # noqa: BLE001 - one failed update must not stop the others
            _logger.warning("MLflow: a tracking update failed (%s); tracking goes on", first_line(exc))
        finally:
            self.queue.task_done()

    def flush(self, timeout: float) -> int:
        """Wait until every queued job ran (running them here if the thread died); return how many are left."""
        deadline = time.monotonic() + timeout
        with self.queue.all_tasks_done:
            while self.queue.unfinished_tasks and self.thread.is_alive() and time.monotonic() < deadline:
                self.queue.all_tasks_done.wait(0.1)
        if not self.thread.is_alive():
            while time.monotonic() < deadline:
                try:
                    job = self.queue.get_nowait()
                except queue.Empty:
                    break
                self._run_one(job)
        return self.queue.unfinished_tasks


def _queued(method: Callable[_P, None]) -> Callable[_P, None]:
    """Make a :class:`Tracker` method run on the tracker's background thread when it has one (queued, in order)."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> None:
        tracker = args[0]
        assert isinstance(tracker, Tracker)
        tracker.submit(method, *args, **kwargs)

    return wrapper


class Tracker:
    """Logs one study to MLflow. Create it before ``study.optimize``: it never raises.

    ``enabled`` is False when MLflow could not be set up (one warning was logged) or became
    unreachable (with ``background``: also until the thread has set it up); ``failure`` then says
    why. ``mapping`` says what of a trial its run gets (:class:`TrialMapping`); the parent run is
    named ``run_name`` (default: the study's name). With ``background``, MLflow is set up and every
    logging method runs on one background thread, in the order called (see the module's docstring).
    ``storage`` is the study's ``--storage`` value (None: in memory), named in the ``mlflow-sync``
    command the warnings give; with ``quiet`` there is no such warning: the caller reports ``failure``.
    """

    client: MlflowClient

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
        self.tracking_uri = tracking_uri or _UNRESOLVED_URI
        self.experiment_name = experiment
        self.study_name = study_name
        self.study_uid = study_uid
        self.log_models = log_models
        self.mapping = mapping
        self.run_name = run_name or study_name
        self.storage = storage
        self.quiet = quiet
        #: Why tracking is off ("MLflow at URI is unavailable (reason)"); "" while it is on or not set up yet.
        self.failure = ""
        self.enabled = False
        self.experiment_id = ""
        self.parent_run_id = ""
        self._lock = threading.Lock()
        self._names_lock = threading.Lock()
        self._warned = False
        self._rejections: set[str] = set()
        #: kind (params, metrics, tags) → original name → MLflow key, for the names MLflow would reject.
        self._renamed: dict[str, dict[str, str]] = {}
        self._renamed_saved = True
        #: The study whose trials this process logged, to log its final progress when it ends.
        self._study: optuna.Study | None = None
        #: Trials of this process whose run its tracking thread has yet to close: :meth:`log_finished` leaves them be.
        self.pending: set[int] = set()
        self._worker: _Worker | None = None
        if background:
            self._worker = _Worker(f"zoo_ext-mlflow-{study_name}")
            self.submit(self._connect, tracking_uri)
            atexit.register(self.flush)
        else:
            self._connect(tracking_uri)

    def _connect(self, tracking_uri: str | None) -> None:
        """Import mlflow, open (maybe create) the store and the experiment; on any error warn once, stay off."""
        try:
            import mlflow
            from mlflow import MlflowClient

            self.tracking_uri = tracking_uri or mlflow.get_tracking_uri()
            if self._reachable():
                with _store_lock(self.tracking_uri):
                    self.client = MlflowClient(tracking_uri=self.tracking_uri)
                    self._set_up()
                self.enabled = True
        except Exception as exc:  # noqa: BLE001 - MLflow failing at start-up must not stop the study
            self._warn(exc)

    @property
    def background(self) -> bool:
        """True if MLflow calls run on this tracker's background thread."""
        return self._worker is not None

    def submit(self, fn: Callable[_P, object], *args: _P.args, **kwargs: _P.kwargs) -> None:
        """Run ``fn(*args, **kwargs)``: now, or queued on the background thread (from any other thread)."""
        if self._worker is None or threading.current_thread() is self._worker.thread:
            fn(*args, **kwargs)
        else:
            self._worker.submit(functools.partial(fn, *args, **kwargs))

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Wait until every queued MLflow update ran; return False (after one warning) if some could not run.

        Without a background thread there is nothing to wait for. Called by :meth:`end_study` and at exit.
        """
        if self._worker is None or threading.current_thread() is self._worker.thread:
            return True
        left = self._worker.flush(timeout)
        if left:
            _logger.warning(
                "MLflow: %d update(s) of study %r not sent; %s", left, self.study_name,
                self._sync_hint("to log its finished trials"),
            )  # fmt: skip
        return not left

    def sync_command(self) -> str | None:
        """Return the ``mlflow-sync`` command that logs this study later, shell-quoted, passwords redacted.

        It names the study's storage, the tracking URI once known and the experiment; None for a study in memory.
        """
        if self.storage is None:
            return None
        argv = ["python", "-m", "zoo_ext", "mlflow-sync", "--storage", redact(self.storage),
                "--study-name", self.study_name]  # fmt: skip
        if self.tracking_uri != _UNRESOLVED_URI:
            argv += ["--mlflow-tracking-uri", redact(self.tracking_uri)]
        return shlex.join([*argv, "--mlflow-experiment", self.experiment_name])

    def _sync_hint(self, purpose: str) -> str:
        """Return how to log the study later: run the ``mlflow-sync`` command for ``purpose``, or why nothing can."""
        command = self.sync_command()
        if command is None:
            return "the study is in memory (no --storage): nothing can log it later"
        return f"run `{command}` {purpose}"

    def _reachable(self) -> bool:
        if not self.tracking_uri.startswith(("http://", "https://")):
            return True
        try:
            with urllib.request.urlopen(f"{self.tracking_uri.rstrip('/')}/health", timeout=5):
                return True
        except OSError as exc:
            self._warn(exc)
            return False

    def _warn(self, exc: BaseException) -> None:
        """Say once that this process tracks no more, why, and how to log the study later (``quiet``: only why)."""
        if not self._warned:
            self._warned = True
            state = "is unavailable" if is_outage(exc) else "cannot be used"
            self.failure = f"MLflow at {redact(self.tracking_uri)} {state} ({first_line(exc)})"
            if not self.quiet:
                _logger.warning(
                    "%s: the study goes on without tracking; %s", self.failure, self._sync_hint("later to log it")
                )

    def _attempt(self, fn: Callable[..., Any], *args: Any, quiet: bool = False, **kwargs: Any) -> tuple[bool, Any]:
        """Run an MLflow call; return (True, its result), or (False, None) if tracking is off or the call failed.

        A connection failure switches tracking off for this process (one warning); a call MLflow
        rejects is logged as a warning (unless ``quiet``) and tracking stays on.
        """
        if not self.enabled:
            return False, None
        try:
            return True, fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a tracking failure must not stop the study
            if is_outage(exc):
                self.enabled = False
                self._warn(exc)
            elif not quiet:
                message = first_line(exc)
                with self._lock:
                    new = message not in self._rejections
                    self._rejections.add(message)
                if new:
                    _logger.warning("MLflow: %s failed (%s); tracking goes on", getattr(fn, "__name__", fn), message)
            return False, None

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run an MLflow call under the error policy (see :meth:`_attempt`); return its result or None."""
        return self._attempt(fn, *args, **kwargs)[1]

    def _set_up(self) -> None:
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            try:
                self.experiment_id = self.client.create_experiment(self.experiment_name)
            except Exception:
                experiment = self.client.get_experiment_by_name(self.experiment_name)
                if experiment is None:
                    raise
                self.experiment_id = experiment.experiment_id
        else:
            self.experiment_id = experiment.experiment_id

    def _study_runs(self) -> list[Run]:
        query = f"tags.`{ROLE_TAG}` = 'study' and tags.`{UID_TAG}` = '{self.study_uid}'"
        runs = self.client.search_runs([self.experiment_id], query)
        return sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))

    @_queued
    def start_study(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        """Find or create the study's parent run; every worker converges on the oldest one.

        Any error here leaves tracking off for this process, with one warning.
        """
        if not self.enabled:
            return
        try:
            created = self._start_study(tags)
        except Exception as exc:  # noqa: BLE001 - MLflow failing at start-up must not stop the study
            self.enabled = False
            self._warn(exc)
            return
        if created:
            from mlflow.entities import RunTag

            self._log(self.parent_run_id, params=self._params(params), tags=[RunTag("mlflow.source.name", "zoo_ext")])
            self._save_renamed()

    def _start_study(self, tags: Mapping[str, str]) -> bool:
        """Set ``parent_run_id``; return True if this process created the parent run."""
        runs = self._study_runs()
        if runs:
            self.parent_run_id = runs[0].info.run_id
            if runs[0].info.status != "RUNNING":
                self.client.update_run(self.parent_run_id, status="RUNNING")
            return False
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.run_name,
            tags={ROLE_TAG: "study", STUDY_TAG: self.study_name, UID_TAG: self.study_uid, **tags},
        )
        runs = self._study_runs()
        self.parent_run_id = runs[0].info.run_id if runs else run.info.run_id
        if self.parent_run_id != run.info.run_id:  # another worker won the race
            self.client.delete_run(run.info.run_id)
            return False
        return True

    def end_study(self, status: str = "FINISHED", study: optuna.Study | None = None) -> None:
        """Log the final progress of ``study`` (default: the one whose trials were logged), then end the parent run.

        The final counts, best value(s) and best trial are logged only where the parent run says
        otherwise (a trial of another worker ended while this one logged). The run is reopened
        when the study resumes. In background mode, returns once every queued update ran (:meth:`flush`).
        """
        self.submit(self._end_study, status, study)
        self.flush()

    def _end_study(self, status: str, study: optuna.Study | None) -> None:
        if not self.parent_run_id:
            return
        study = study or self._study
        if study is not None:
            self._log_final_progress(study)
            # Why a stop rule ended the study (--budget-steps, --target-value, --patience); empty when none did.
            reason = study.user_attrs.get("stop_reason") or ""
            self.call(self.client.set_tag, self.parent_run_id, "zoo_ext.stop_reason", text(reason, MAX_TAG))
        self.call(self.client.set_terminated, self.parent_run_id, status)

    def _progress(self, trials: Iterable[FrozenTrial], study: optuna.Study) -> StudyProgress:
        progress = StudyProgress(study.directions, objective_names(study, self.mapping))
        for trial in trials:
            progress.add_trial(trial)
        return progress

    def _progress_metrics(self, progress: StudyProgress, step: int, timestamp: int | None = None) -> list[Metric]:
        """Return ``progress``'s metrics as points at ``step`` (time: ``timestamp`` or now), keys MLflow accepts."""
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000) if timestamp is None else timestamp
        metrics = progress.metrics()
        keys = self._keys("metrics", metrics)
        return [Metric(keys[name], value, timestamp, step) for name, value in metrics.items()]

    def _progress_tags(self, progress: StudyProgress) -> list[RunTag]:
        """Return ``progress``'s tags for the parent run, keys MLflow accepts."""
        from mlflow.entities import RunTag

        tags = progress.tags()
        keys = self._keys("tags", tags)
        return [RunTag(keys[name], value) for name, value in tags.items()]

    @_queued
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
        ``best_params.<name>``, or ``pareto_trials``. Never raises.
        """
        if not self.enabled or not self.parent_run_id:
            return
        self._study = study
        try:
            trials = study.get_trials(deepcopy=False) if finished is None else finished
            others = (t for t in trials if t.number != number and t.state.is_finished())
            progress = self._progress(others, study)
            progress.add(number, state, values, params)
            metrics, tags = self._progress_metrics(progress, number), self._progress_tags(progress)
        except Exception as exc:  # noqa: BLE001 - the study's progress must not change the trial's outcome
            _logger.warning("trial %d: study progress not logged (%s)", number, first_line(exc))
            return
        self._log(self.parent_run_id, metrics, tags=tags)
        self._save_renamed()

    def log_history(self, study: optuna.Study, numbers: Collection[int]) -> None:
        """Log the study's progress as :meth:`log_progress` would have when each trial in ``numbers`` ended.

        The finished trials are replayed in the order they finished (``mlflow-sync``); the tags are
        the finished study's.
        """
        if not self.enabled or not self.parent_run_id:
            return
        self._study = study
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
                metrics += self._progress_metrics(progress, trial.number, int(when.timestamp() * 1000))
        if metrics:
            self._log(self.parent_run_id, metrics, tags=self._progress_tags(progress))
            self._save_renamed()

    def _log_final_progress(self, study: optuna.Study) -> None:
        """Log the progress of the finished trials where the parent run holds other values, at the last trial's step."""
        try:
            finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
            if not finished:
                return
            progress = self._progress(finished, study)
            step = max(t.number for t in finished)
            metrics, tags = self._progress_metrics(progress, step), self._progress_tags(progress)
        except Exception as exc:  # noqa: BLE001 - the parent run must still end
            _logger.warning("study %r: final progress not logged (%s)", self.study_name, first_line(exc))
            return
        run = self.call(self.client.get_run, self.parent_run_id)
        if run is None:
            return
        metrics = [m for m in metrics if run.data.metrics.get(m.key) != m.value]
        tags = [t for t in tags if run.data.tags.get(t.key) != t.value]
        if metrics or tags:
            self._log(self.parent_run_id, metrics, tags=tags)
            self._save_renamed()

    @_queued
    def close_stale_runs(self, study: optuna.Study) -> None:
        """Log the finished trials whose run is missing or was left open (see :meth:`log_finished`)."""
        self.call(self.log_finished, study)

    def log_finished(self, study: optuna.Study) -> list[int]:
        """Complete the RUNNING runs of finished trials, create the runs finished trials lack; return the created.

        A run is left open, or never created, when its process died (a crashed worker) or was killed
        before its tracking thread sent it. Each gets what a live run gets from the trial as stored
        (params, metrics, tags, ``hyperparams.yml`` for a zoo_ext trial), then its final status (an
        open run of a failed trial without ``fail_reason``: its worker died); a created run is tagged
        ``zoo_ext.synced``.
        """
        runs = self.trial_runs()
        env_id, config = str(study.user_attrs.get("env_id")), study.user_attrs.get("zoo_config") or {}
        created = []
        with tempfile.TemporaryDirectory(prefix="zoo_ext_") as tmp:
            for trial in study.get_trials(deepcopy=False):
                if not trial.state.is_finished() or trial.number in self.pending or was_not_run(trial):
                    continue
                # As a live run: a value for a complete trial only (not a pruned one's last intermediate value).
                values = trial.values if trial.state == TrialState.COMPLETE else None
                for run in runs.get(trial.number, []):
                    if run.info.status == "RUNNING":
                        self.end_trial(run.info.run_id, trial, trial.state, values, reason=stale_reason(trial))
                if trial.number in runs:
                    continue
                start = int(trial.datetime_start.timestamp() * 1000) if trial.datetime_start else None
                run_id = self.start_trial(trial.number, start_time=start, tags={"zoo_ext.synced": "true"})
                if not run_id:
                    continue
                folder = Path(tmp, str(trial.number))
                folder.mkdir()
                path = hyperparams_file(folder, trial, env_id, config) if self.mapping.zoo else None
                end = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else None
                self.end_trial(run_id, trial, trial.state, values, {"hyperparams": path} if path else None,
                               end_time=end)  # fmt: skip
                created.append(trial.number)
        return created

    def start_trial(self, number: int, *, start_time: int | None = None, tags: Mapping[str, str] | None = None) -> str:
        """Create trial ``number``'s child run (status RUNNING); return its id ('' when off or refused)."""
        if not self.enabled:
            return ""
        run = self.call(
            self.client.create_run,
            self.experiment_id,
            start_time,
            {**self._trial_tags(number), STATE_TAG: "RUNNING", **(tags or {})},
            trial_run_name(number),
        )
        return run.info.run_id if run is not None else ""

    def _trial_tags(self, number: int) -> dict[str, str]:
        return {
            PARENT_TAG: self.parent_run_id,
            STUDY_TAG: self.study_name,
            UID_TAG: self.study_uid,
            NUMBER_TAG: str(number),
            ROLE_TAG: "trial",
        }

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
        """Log the trial's params, curve, values and tags, upload ``artifacts``, then close the run.

        ``state`` is the trial's final Optuna state (tag ``optuna.trial_state``); ``status`` the
        run's status when it is not the state's (KILLED for an interrupted trial Optuna records as
        FAIL); ``reason`` why the trial failed when its user attribute ``fail_reason`` does not say.
        Each step is tried on its own, so a rejected param still leaves the run closed.
        """
        if not run_id:
            return
        data = self.call(self.trial_data, trial, state, values, reason=reason)
        if data is not None:
            self._log(run_id, *data)
        for path in (artifacts or {}).values():
            self.call(self.client.log_artifact, run_id, str(path))
        self.call(self.client.set_terminated, run_id, status or STATUS[state], end_time)
        self._save_renamed()

    def _log(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
    ) -> None:
        """Log in batches within MLflow's limits; a rejected batch is logged again item by item (the rest gets in)."""
        for start in range(0, max(len(metrics), len(params), len(tags)), _BATCH):
            chunk = (metrics[start : start + _BATCH], params[start : start + _BATCH], tags[start : start + _BATCH])
            done, _ = self._attempt(self.client.log_batch, run_id, *chunk, quiet=True)
            if done or not self.enabled:
                continue
            for metric in chunk[0]:
                self.call(self.client.log_batch, run_id, metrics=[metric])
            for param in chunk[1]:
                self.call(self.client.log_batch, run_id, params=[param])
            for tag in chunk[2]:
                self.call(self.client.log_batch, run_id, tags=[tag])

    def _keys(self, kind: str, names: Iterable[str]) -> dict[str, str]:
        """Return :func:`mlflow_keys` of ``names``; remember the renamed ones for :data:`NAMES_ARTIFACT`."""
        keys = mlflow_keys(names)
        renamed = {name: key for name, key in keys.items() if name != key}
        if renamed:
            with self._lock:
                known = self._renamed.setdefault(kind, {})
                if any(name not in known for name in renamed):
                    self._renamed_saved = False
                for name, key in renamed.items():
                    known.setdefault(name, key)
        return keys

    def _params(self, params: Mapping[str, Any]) -> list[Param]:
        from mlflow.entities import Param

        keys = self._keys("params", params)
        return [Param(keys[name], text(value)) for name, value in params.items()]

    def _save_renamed(self) -> None:
        """Merge the renamed names into the parent run's :data:`NAMES_ARTIFACT` (when new ones came)."""
        if self._renamed_saved or not self.parent_run_id or not self.enabled:
            return
        with self._names_lock:
            with self._lock:
                names = {kind: dict(mapping) for kind, mapping in self._renamed.items()}
                self._renamed_saved = True
            self.call(self._upload_renamed, names)

    def _upload_renamed(self, names: dict[str, dict[str, str]]) -> None:
        with tempfile.TemporaryDirectory(prefix="zoo_ext_") as tmp:
            if any(item.path == NAMES_ARTIFACT for item in self.client.list_artifacts(self.parent_run_id)):
                saved = self.client.download_artifacts(self.parent_run_id, NAMES_ARTIFACT, tmp)
                for kind, mapping in json.loads(Path(saved).read_text()).items():
                    names[kind] = {**mapping, **names.get(kind, {})}
            path = Path(tmp) / NAMES_ARTIFACT
            path.write_text(json.dumps(names, indent=2, sort_keys=True))
            self.client.log_artifact(self.parent_run_id, str(path))

    def trial_data(
        self,
        trial: FrozenTrial | optuna.Trial,
        state: TrialState,
        values: Sequence[float] | None,
        *,
        reason: str | None = None,
    ) -> tuple[list[Metric], list[Param], list[RunTag]]:
        """Return (metrics, params, tags) of a trial for ``MlflowClient.log_batch``, keys MLflow accepts."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        points = trial_metrics(trial, values, self.mapping)
        tags = trial_tags(trial, state, reason, self.mapping)
        metric_keys = self._keys("metrics", (name for name, _, _ in points))
        tag_keys = self._keys("tags", tags)
        metrics = [Metric(metric_keys[name], value, now, step) for name, value, step in points]
        params = self._params(trial_params(trial, self.mapping))
        return metrics, params, [RunTag(tag_keys[k], v) for k, v in tags.items()]

    @_queued
    def log_study_artifacts(self, folder: Path) -> None:
        """Upload every file of ``folder`` to the parent run."""
        if self.parent_run_id:
            self.call(self.client.log_artifacts, self.parent_run_id, str(folder))

    @_queued
    def log_test_scores(
        self, number: int, scores: Mapping[str, Sequence[float]], aggregate: Mapping[str, float]
    ) -> None:
        """Log a re-evaluated trial's test scores (one step per fresh seed) to its run."""
        self.call(self._log_test_scores, number, scores, aggregate)

    def _log_test_scores(
        self, number: int, scores: Mapping[str, Sequence[float]], aggregate: Mapping[str, float]
    ) -> None:
        from mlflow.entities import Metric

        query = f"tags.`{UID_TAG}` = '{self.study_uid}' and tags.`{NUMBER_TAG}` = '{number}'"
        runs = self.client.search_runs([self.experiment_id], query)
        if not runs:
            return
        now = int(time.time() * 1000)
        points = [(f"test/{name}", float(v), i) for name, values in scores.items() for i, v in enumerate(values)]
        points += [(f"test_score/{name}", float(v), 0) for name, v in aggregate.items()]
        keys = self._keys("metrics", (name for name, _, _ in points))
        self._log(runs[0].info.run_id, [Metric(keys[name], value, now, step) for name, value, step in points])
        self._save_renamed()

    @_queued
    def log_result_card(self, card: Mapping[str, Mapping[str, Any]], html: str) -> None:
        """Log a result card to the parent run: its :func:`card_metrics` and ``html`` as :data:`CARD_ARTIFACT`."""
        if self.parent_run_id:
            self.call(self._log_result_card, card, html)

    def _log_result_card(self, card: Mapping[str, Mapping[str, Any]], html: str) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = card_metrics(card)
        keys = self._keys("metrics", metrics)
        self._log(self.parent_run_id, [Metric(keys[name], value, now, 0) for name, value in metrics.items()])
        self._save_renamed()
        with tempfile.TemporaryDirectory(prefix="zoo_ext_") as tmp:
            path = Path(tmp) / CARD_ARTIFACT
            path.write_text(html, encoding="utf-8")
            self.client.log_artifact(self.parent_run_id, str(path))

    def trial_runs(self, number: int | None = None) -> dict[int, list[Run]]:
        """Return the runs of this study's trials (only trial ``number``'s if given), by trial number."""
        query = f"tags.`{UID_TAG}` = '{self.study_uid}' and tags.`{ROLE_TAG}` = 'trial'"
        if number is not None:
            query += f" and tags.`{NUMBER_TAG}` = '{number}'"
        runs: dict[int, list[Run]] = {}
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], query, max_results=1000, page_token=token)
            for run in page:
                if NUMBER_TAG in run.data.tags:
                    runs.setdefault(int(run.data.tags[NUMBER_TAG]), []).append(run)
            token = page.token
            if not token:
                return runs
