"""MLflow: one parent run per study, one nested child run per trial, through ``MlflowClient``.

Every run is addressed by id (never through the fluent API's per-thread active run), so
``--n-jobs`` threads and several worker processes log side by side. A trial's run is created when
the trial starts and closed in ``finally`` with FINISHED (complete), KILLED (pruned or
interrupted) or FAILED (with the reason); its tag ``optuna.trial_state`` is the state Optuna
records (FAIL for an interrupted trial, as for one whose value Optuna refuses).

Names: Optuna accepts parameter names MLflow rejects (``net_arch[0]``, ``lr (log)``, empty, over
250 characters, resolving to ``.`` or ``..``). Such a param, metric or tag key is logged under the
key :func:`mlflow_key` gives, unique within its run, and the parent run's artifact
``mlflow_names.json`` maps each original name to its key (``{"params": {name: key}, "metrics":
..., "tags": ...}``, updated when a trial brings a new one). Param values are cut at 6,000
characters, tag values at 8,000.

Failures never stop the study. A connection failure (the server or database cannot be reached,
a 5xx answer) logs one warning and switches tracking off for this process; ``python -m zoo_ext
mlflow-sync`` creates the missing runs later from the Optuna storage. A call MLflow rejects (an
invalid value, a run that already exists, ...) is logged as a warning and tracking goes on. Any
error while the tracker starts (connection, experiment, parent run) leaves the study untracked,
with one warning. A SQLite store is opened under a file lock (``<database>.lock``): MLflow breaks
a new store that two processes create at the same moment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from zoo_ext import record
from zoo_ext.storage import redact

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, Run, RunTag

__all__ = [
    "NAMES_ARTIFACT",
    "STATUS",
    "TrackedObjective",
    "Tracker",
    "default_experiment_name",
    "hyperparams_file",
    "mlflow_key",
    "mlflow_keys",
    "study_params",
    "sync_study",
    "trial_run_name",
]

_logger = logging.getLogger(__name__)

#: MLflow run status of each final Optuna trial state.
STATUS = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAIL: "FAILED",
    TrialState.RUNNING: "KILLED",
    TrialState.WAITING: "KILLED",
}
ROLE_TAG = "zoo_ext.role"
#: Identifies a study across storages (study names repeat); stored in the study's user attrs.
UID_TAG = "zoo_ext.study_uid"
UID_ATTR = "zoo_ext_uid"
STUDY_TAG = "optuna.study_name"
NUMBER_TAG = "optuna.trial_number"
STATE_TAG = "optuna.trial_state"
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"
#: The parent run's artifact mapping renamed params, metrics and tags to their MLflow keys.
NAMES_ARTIFACT = "mlflow_names.json"
#: Trial user attributes logged another way (params, metrics, artifact) rather than as tags.
_NOT_TAGS = ("hyperparams", "evaluations", "per_seed")
#: MLflow's limits (``mlflow.utils.validation``): key length, param and tag value length, params or tags per batch.
_MAX_KEY = 250
_MAX_PARAM = 6000
_MAX_TAG = 8000
_BATCH = 100
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]+")
#: HTTP statuses of the MLflow errors that reject one call (invalid value, already exists, not found, conflict).
_REJECTED = frozenset({400, 404, 409})
#: Seconds to wait for another process creating the same SQLite store (creation takes about 7 s).
_STORE_LOCK_TIMEOUT = 300


def default_experiment_name(algo: str, env_id: str) -> str:
    """Return the experiment a study logs to by default: ``<algo>-<env id>``."""
    return f"{algo}-{env_id}"


def trial_run_name(number: int) -> str:
    """Return the run name of trial ``number``."""
    return f"trial-{number}"


def _is_valid_key(name: str) -> bool:
    from mlflow.utils.validation import path_not_unique, validate_param_and_metric_name

    return 0 < len(name) <= _MAX_KEY and bool(validate_param_and_metric_name(name)) and not path_not_unique(name)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def mlflow_key(name: str) -> str:
    """Return ``name`` as a param, metric or tag key MLflow accepts: ``name`` itself when valid.

    Otherwise each run of characters MLflow rejects becomes ``_`` (``net_arch[0]`` →
    ``net_arch_0_``, ``lr (log)`` → ``lr _log_``), empty and ``.`` path segments are dropped, a
    ``..`` segment becomes ``__``, an empty name ``_``, and a name over 250 characters keeps its
    first 241 followed by ``-`` and 8 hex digits of its hash (so distinct long names stay distinct).
    """
    if _is_valid_key(name):
        return name
    text = _BAD_KEY_CHARS.sub("_", name)
    text = "/".join("__" if part == ".." else part for part in text.split("/") if part not in ("", "."))
    if not text or text.startswith(".."):
        text = f"_{text}"
    if len(text) > _MAX_KEY:
        text = f"{text[: _MAX_KEY - 9]}-{_digest(name)}"
    # MLflow's character rule depends on the OS (no ':' on Windows): word characters always pass.
    return text if _is_valid_key(text) else re.sub(r"\W", "_", text)


def mlflow_keys(names: Iterable[str]) -> dict[str, str]:
    """Return each of ``names`` → its MLflow key (:func:`mlflow_key`), the keys unique among them.

    Valid names keep their key; a sanitised key that another name already has gets ``-`` and 8 hex
    digits of a hash of its name instead of its last characters.
    """
    ordered = list(dict.fromkeys(names))
    keys = {name: name for name in ordered if _is_valid_key(name)}
    used = set(keys)
    for name in ordered:
        if name in keys:
            continue
        key, salt = mlflow_key(name), 0
        while key in used:
            salt += 1
            key = f"{mlflow_key(name)[: _MAX_KEY - 9]}-{_digest(f'{salt}:{name}')}"
        keys[name] = key
        used.add(key)
    return {name: keys[name] for name in ordered}


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif prefix:
        out[prefix] = value


def _text(value: Any, limit: int = _MAX_PARAM) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text[:limit]


def trial_params(trial: FrozenTrial | optuna.Trial) -> dict[str, str]:
    """Return a trial's MLflow params (original names): its Optuna params, then its flattened constructor kwargs.

    A kwarg whose name is an Optuna param with another value is logged as ``kwargs.<name>``.
    """
    params = {name: _text(value) for name, value in trial.params.items()}
    kwargs: dict[str, Any] = {}
    _flatten("", trial.user_attrs.get(record.RECORD_ATTR, {}), kwargs)
    for key, value in kwargs.items():
        text = _text(value)
        params[key if params.get(key, text) == text else f"kwargs.{key}"] = text
    return params


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_outage(exc: BaseException) -> bool:
    """Return True for a failure to reach MLflow (connection, database, 5xx), False for a rejected call."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return exc.get_http_status_code() not in _REJECTED
    return isinstance(exc, OSError)


def _first_line(exc: BaseException) -> str:
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


class Tracker:
    """Logs one study to MLflow. Create it before ``study.optimize``: it never raises.

    ``enabled`` is False when MLflow could not be set up (one warning was logged) or became unreachable.
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
    ) -> None:
        self.tracking_uri = tracking_uri or "the default tracking URI"
        self.experiment_name = experiment
        self.study_name = study_name
        self.study_uid = study_uid
        self.log_models = log_models
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
        """Say once that this process tracks no more, why, and how to log the study later."""
        if not self._warned:
            self._warned = True
            _logger.warning(
                "MLflow at %s %s (%s): the study goes on without tracking; run "
                "`python -m zoo_ext mlflow-sync --storage ... --study-name %s` later to log it",
                redact(self.tracking_uri),
                "is unavailable" if _is_outage(exc) else "cannot be used",
                _first_line(exc),
                self.study_name,
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
            if _is_outage(exc):
                self.enabled = False
                self._warn(exc)
            elif not quiet:
                message = _first_line(exc)
                with self._lock:
                    new = message not in self._rejections
                    self._rejections.add(message)
                if new:
                    _logger.warning("MLflow: %s failed (%s); tracking goes on", getattr(fn, "__name__", fn), message)
            return False, None

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run an MLflow call as :meth:`_attempt` does; return its result or None."""
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
            run_name=self.study_name,
            tags={ROLE_TAG: "study", STUDY_TAG: self.study_name, UID_TAG: self.study_uid, **tags},
        )
        runs = self._study_runs()
        self.parent_run_id = runs[0].info.run_id if runs else run.info.run_id
        if self.parent_run_id != run.info.run_id:  # another worker won the race
            self.client.delete_run(run.info.run_id)
            return False
        return True

    def end_study(self, status: str = "FINISHED") -> None:
        """Mark the parent run ended (it is reopened when the study resumes)."""
        if self.parent_run_id:
            self._call(self.client.set_terminated, self.parent_run_id, status)

    def close_stale_runs(self, study: optuna.Study) -> None:
        """Close RUNNING trial runs of trials that are no longer running (a crashed worker's)."""
        self._call(self._close_stale_runs, study)

    def _close_stale_runs(self, study: optuna.Study) -> None:
        trials = {str(t.number): t for t in study.get_trials(deepcopy=False)}
        query = (
            f"tags.`{UID_TAG}` = '{self.study_uid}' and tags.`{ROLE_TAG}` = 'trial' and attributes.status = 'RUNNING'"
        )
        for run in self.client.search_runs([self.experiment_id], query):
            trial = trials.get(run.data.tags.get(NUMBER_TAG, ""))
            if trial is not None and trial.state.is_finished():
                state = trial.state
                tags = {STATE_TAG: state.name}
                if state == TrialState.FAIL:
                    reason = trial.user_attrs.get("fail_reason", "its worker stopped sending heartbeats (it died)")
                    tags[NOTE_TAG] = _text(f"FAILED: {reason}", _MAX_TAG)
                for key, value in tags.items():
                    self.client.set_tag(run.info.run_id, key, value)
                self.client.set_terminated(run.info.run_id, STATUS[state])

    def start_trial(self, number: int, *, start_time: int | None = None, tags: Mapping[str, str] | None = None) -> str:
        """Create trial ``number``'s child run (status RUNNING); return its id ('' when off or refused)."""
        if not self.enabled:
            return ""
        run = self._call(
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
        data = self._call(self.trial_data, trial, state, values, reason=reason)
        if data is not None:
            self._log(run_id, *data)
        for path in (artifacts or {}).values():
            self._call(self.client.log_artifact, run_id, str(path))
        self._call(self.client.set_terminated, run_id, status or STATUS[state], end_time)
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
                self._call(self.client.log_batch, run_id, metrics=[metric])
            for param in chunk[1]:
                self._call(self.client.log_batch, run_id, params=[param])
            for tag in chunk[2]:
                self._call(self.client.log_batch, run_id, tags=[tag])

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
        return [Param(keys[name], _text(value)) for name, value in params.items()]

    def _save_renamed(self) -> None:
        """Merge the renamed names into the parent run's :data:`NAMES_ARTIFACT` (when new ones came)."""
        if self._renamed_saved or not self.parent_run_id or not self.enabled:
            return
        with self._names_lock:
            with self._lock:
                names = {kind: dict(mapping) for kind, mapping in self._renamed.items()}
                self._renamed_saved = True
            self._call(self._upload_renamed, names)

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
        points: list[tuple[str, float, int]] = []
        for point in trial.user_attrs.get("evaluations", []):
            for key in ("mean_reward", "std_reward"):
                points.append((f"eval/{key}", float(point[key]), int(point["timesteps"])))
        if values is not None:
            names = trial.user_attrs.get("objectives") or ["mean_reward"]
            points += [(str(name), float(v), 0) for name, v in zip(names, values, strict=False)]
        train_time = trial.user_attrs.get("train_time")
        if train_time:
            points.append(("train_time", float(train_time), 0))
            timesteps = max((p["timesteps"] for p in trial.user_attrs.get("evaluations", [])), default=0)
            if timesteps:
                points.append(("steps_per_second", timesteps / float(train_time), 0))
        tags = {STATE_TAG: state.name}
        for key, value in trial.user_attrs.items():
            if key in _NOT_TAGS:
                continue
            if _is_number(value):
                points.append((key, float(value), 0))
            tags[f"user_attr.{key}"] = _text(value, _MAX_TAG)
        reason = trial.user_attrs.get("fail_reason", reason)
        if reason is not None:
            tags["user_attr.fail_reason"] = _text(reason, _MAX_TAG)
            tags[NOTE_TAG] = _text(f"FAILED: {reason}", _MAX_TAG)
        metric_keys = self._keys("metrics", (name for name, _, _ in points))
        tag_keys = self._keys("tags", tags)
        metrics = [Metric(metric_keys[name], value, now, step) for name, value, step in points]
        return metrics, self._params(trial_params(trial)), [RunTag(tag_keys[k], v) for k, v in tags.items()]

    def log_study_artifacts(self, folder: Path) -> None:
        """Upload every file of ``folder`` to the parent run."""
        if self.parent_run_id:
            self._call(self.client.log_artifacts, self.parent_run_id, str(folder))

    def log_test_scores(
        self, number: int, scores: Mapping[str, Sequence[float]], aggregate: Mapping[str, float]
    ) -> None:
        """Log a re-evaluated trial's test scores (one step per fresh seed) to its run."""
        self._call(self._log_test_scores, number, scores, aggregate)

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

    def logged_trial_numbers(self) -> set[int]:
        """Return the trial numbers that already have a run in this study's experiment."""
        query = f"tags.`{UID_TAG}` = '{self.study_uid}' and tags.`{ROLE_TAG}` = 'trial'"
        numbers: set[int] = set()
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], query, max_results=1000, page_token=token)
            numbers.update(int(run.data.tags[NUMBER_TAG]) for run in page if NUMBER_TAG in run.data.tags)
            token = page.token
            if not token:
                return numbers


def sync_study(study: optuna.Study, tracker: Tracker) -> list[int]:
    """Create the runs missing for ``study``'s finished trials; return their numbers.

    Each run gets what a live run gets (params, metrics, tags, ``hyperparams.yml``); the parent run
    gets the study's report (``trials.csv`` and the plots).
    """
    from zoo_ext import reports

    logged = tracker._call(tracker.logged_trial_numbers)
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
            path = hyperparams_file(folder, trial, env_id, config)
            end = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else None
            tracker.end_trial(run_id, trial, trial.state, trial.values, {"hyperparams": path} if path else None,
                              end_time=end)  # fmt: skip
            created.append(trial.number)
        if tracker.enabled:
            report = Path(tmp, "report")
            reports.write_report(study, report)
            tracker.log_study_artifacts(report)
    return created


def versions() -> dict[str, str]:
    """Return the versions of zoo_ext and the libraries a study depends on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("zoo_ext", "rl_zoo3", "stable_baselines3", "sb3_contrib", "optuna", "torch", "mlflow", "gymnasium"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment_tags() -> dict[str, str]:
    """Return tags describing the process that ran the study."""
    return {f"version.{name}": value for name, value in versions().items()} | {"host.pid": str(os.getpid())}


def study_params(study: optuna.Study) -> dict[str, Any]:
    """Return the parent run's params: study, options, budget and the env's config."""
    attrs = study.user_attrs
    params: dict[str, Any] = {
        "study_name": study.study_name,
        "directions": ",".join(d.name.lower() for d in study.directions),
        "algo": attrs.get("algo"),
        "env_id": attrs.get("env_id"),
        "command": redact(str(attrs.get("command", ""))),
    }
    for prefix, attr in (("zoo_ext", "zoo_ext_options"), ("budget", "budget"), ("config", "zoo_config")):
        flat: dict[str, Any] = {}
        _flatten("", attrs.get(attr, {}), flat)
        params.update({f"{prefix}.{key}": value for key, value in flat.items()})
    return params


def _told(study: optuna.Study, value: Any) -> tuple[list[float] | None, str | None]:
    """Return the values Optuna records for an objective's return ``value``, or None and why Optuna fails the trial."""
    raw = list(value) if isinstance(value, Sequence) else [value]
    try:
        values = [float(v) for v in raw]
    except (TypeError, ValueError):
        return None, f"the objective returned {value!r}, which is not a number"
    if any(math.isnan(v) for v in values):
        return None, f"the objective returned {value!r}: NaN is not a value"
    if len(values) != len(study.directions):
        return None, f"the objective returned {len(values)} values for {len(study.directions)} objectives"
    return values, None


class TrackedObjective:
    """Wraps an objective so each trial gets its MLflow run, whatever way the trial ends.

    Tracking never changes a trial's outcome: an error while logging it is a warning, and Optuna
    records the objective's result as if the trial were not tracked.
    """

    def __init__(self, objective: Any, tracker: Tracker, *, env_id: str, config: Mapping[str, Any]) -> None:
        self.objective = objective
        self.tracker = tracker
        self.env_id = env_id
        self.config = config

    def _is_new_best(self, trial: optuna.Trial, values: list[float]) -> bool:
        """Return True if no completed trial is as good (one objective) or dominates it (several)."""
        signs = [1.0 if d == optuna.study.StudyDirection.MAXIMIZE else -1.0 for d in trial.study.directions]
        mine = [s * v for s, v in zip(signs, values, strict=True)]
        for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            theirs = [s * v for s, v in zip(signs, other.values, strict=True)]
            if all(t >= m for t, m in zip(theirs, mine, strict=True)):
                return False
        return True

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        run_id = self.tracker.start_trial(trial.number)
        state, values, status, reason = TrialState.FAIL, None, None, None
        try:
            value = self.objective(trial)
            values, reason = _told(trial.study, value)
            state = TrialState.COMPLETE if values is not None else TrialState.FAIL
            return value  # type: ignore[no-any-return]
        except optuna.TrialPruned:
            state = TrialState.PRUNED
            raise
        except KeyboardInterrupt as exc:
            status, reason = "KILLED", f"interrupted by {getattr(exc, 'signal_name', 'SIGINT')}"  # Optuna: FAIL
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            try:
                self._close(run_id, trial, state, values, status=status, reason=reason)
            except Exception as exc:  # noqa: BLE001 - tracking must not change the trial's outcome
                _logger.warning("trial %d: MLflow logging failed (%s)", trial.number, _first_line(exc))

    def _close(
        self,
        run_id: str,
        trial: optuna.Trial,
        state: TrialState,
        values: list[float] | None,
        *,
        status: str | None,
        reason: str | None,
    ) -> None:
        model_dir = getattr(self.objective, "model_dir", None)
        model = Path(model_dir) / f"trial_{trial.number}.zip" if model_dir else None
        try:
            with tempfile.TemporaryDirectory(prefix="zoo_ext_") as tmp:
                artifacts: dict[str, Path] = {}
                if run_id:
                    try:
                        artifacts = self._artifacts(Path(tmp), trial, model, values)
                    except Exception as exc:  # noqa: BLE001 - the run still gets its data and status
                        _logger.warning("trial %d: no MLflow artifacts (%s)", trial.number, _first_line(exc))
                self.tracker.end_trial(run_id, trial, state, values, artifacts, status=status, reason=reason)
        finally:
            if model is not None:
                model.unlink(missing_ok=True)

    def _artifacts(
        self, folder: Path, trial: optuna.Trial, model: Path | None, values: list[float] | None
    ) -> dict[str, Path]:
        """Return the trial's artifacts: ``hyperparams.yml``, and its model if kept (log-models or best)."""
        artifacts: dict[str, Path] = {}
        path = hyperparams_file(folder, trial, self.env_id, self.config)
        if path is not None:
            artifacts["hyperparams"] = path
        if model is not None and model.exists() and values is not None:
            if self.tracker.log_models or self._is_new_best(trial, values):
                artifacts["model"] = model
        return artifacts


def yaml_dump(data: Any) -> str:
    """Return ``data`` as YAML, as rl_zoo3 hyperparams files are written."""
    import yaml

    return yaml.safe_dump(data, sort_keys=True)
