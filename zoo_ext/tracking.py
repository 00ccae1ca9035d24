"""MLflow: one parent run per study, one nested child run per trial, through ``MlflowClient``.

Every run is addressed by id (never through the fluent API's per-thread active run), so
``--n-jobs`` threads and several worker processes log side by side. A trial's run is created when
the trial starts and closed in ``finally`` with FINISHED (complete), KILLED (pruned or
interrupted) or FAILED (with the reason). If the tracking server cannot be reached, one warning is
logged and the study goes on; ``python -m zoo_ext mlflow-sync`` creates the missing runs later
from the Optuna storage.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from zoo_ext import record
from zoo_ext.storage import redact

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = [
    "STATUS",
    "TrackedObjective",
    "Tracker",
    "default_experiment_name",
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
#: Trial user attributes logged another way (params, metrics, artifact) rather than as tags.
_NOT_TAGS = ("hyperparams", "evaluations", "per_seed")
_MAX_PARAM = 6000


def default_experiment_name(algo: str, env_id: str) -> str:
    """Return the experiment a study logs to by default: ``<algo>-<env id>``."""
    return f"{algo}-{env_id}"


def trial_run_name(number: int) -> str:
    """Return the run name of trial ``number``."""
    return f"trial-{number}"


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:_MAX_PARAM]


def trial_params(trial: FrozenTrial | optuna.Trial) -> dict[str, str]:
    """Return a trial's MLflow params: its Optuna params, then its flattened constructor kwargs.

    A kwarg whose name is an Optuna param with another value is logged as ``kwargs.<name>``.
    """
    params = {name: _param(value) for name, value in trial.params.items()}
    kwargs: dict[str, Any] = {}
    _flatten("", trial.user_attrs.get(record.RECORD_ATTR, {}), kwargs)
    for key, value in kwargs.items():
        text = _param(value)
        params[key if params.get(key, text) == text else f"kwargs.{key}"] = text
    return params


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Tracker:
    """Logs one study to MLflow. Create it before ``study.optimize`` (fails fast on a bad URI)."""

    def __init__(
        self,
        *,
        tracking_uri: str | None,
        experiment: str,
        study_name: str,
        study_uid: str,
        log_models: bool = False,
    ) -> None:
        import mlflow
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri or mlflow.get_tracking_uri()
        self.experiment_name = experiment
        self.study_name = study_name
        self.study_uid = study_uid
        self.log_models = log_models
        self._lock = threading.Lock()
        self._warned = False
        self.enabled = self._reachable()
        self.client: MlflowClient = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment_id = ""
        self.parent_run_id = ""
        if self.enabled:
            self._call(self._set_up)

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
        if not self._warned:
            self._warned = True
            _logger.warning(
                "MLflow at %s is unavailable (%s): the study goes on without tracking; run "
                "`python -m zoo_ext mlflow-sync --storage ... --study-name %s` later to log it",
                redact(self.tracking_uri),
                redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__),
                self.study_name,
            )

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run an MLflow call; on failure warn once and switch tracking off for this process."""
        if not self.enabled:
            return None
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - any tracking failure must not stop the study
            self.enabled = False
            self._warn(exc)
            return None

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
        """Find or create the study's parent run; every worker converges on the oldest one."""
        self._call(self._start_study, params, tags)

    def _start_study(self, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        from mlflow.entities import Param, RunTag

        runs = self._study_runs()
        if runs:
            self.parent_run_id = runs[0].info.run_id
            if runs[0].info.status != "RUNNING":
                self.client.update_run(self.parent_run_id, status="RUNNING")
            return
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.study_name,
            tags={ROLE_TAG: "study", STUDY_TAG: self.study_name, UID_TAG: self.study_uid, **tags},
        )
        runs = self._study_runs()
        self.parent_run_id = runs[0].info.run_id if runs else run.info.run_id
        if self.parent_run_id != run.info.run_id:  # another worker won the race
            self.client.delete_run(run.info.run_id)
            return
        self.client.log_batch(
            run.info.run_id,
            params=[Param(key, _param(value)) for key, value in params.items()],
            tags=[RunTag("mlflow.source.name", "zoo_ext")],
        )

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
                    tags["mlflow.note.content"] = f"FAILED: {reason}"
                for key, value in tags.items():
                    self.client.set_tag(run.info.run_id, key, value)
                self.client.set_terminated(run.info.run_id, STATUS[state])

    def start_trial(self, number: int) -> str:
        """Create trial ``number``'s child run (status RUNNING); return its id ('' when off)."""
        run = self._call(
            self.client.create_run,
            self.experiment_id,
            None,
            {**self._trial_tags(number), STATE_TAG: "RUNNING"},
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

    def end_trial(self, run_id: str, trial: FrozenTrial | optuna.Trial, state: TrialState, values: list[float] | None,
                  artifacts: Mapping[str, Path] | None = None) -> None:  # fmt: skip
        """Log the trial's params, curve, values and tags in one batch, then close the run."""
        if run_id:
            self._call(self._end_trial, run_id, trial, state, values, artifacts or {})

    def _end_trial(
        self,
        run_id: str,
        trial: FrozenTrial | optuna.Trial,
        state: TrialState,
        values: list[float] | None,
        artifacts: Mapping[str, Path],
    ) -> None:
        self.client.log_batch(run_id, *self.trial_data(trial, state, values))
        for path in artifacts.values():
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, STATUS[state])

    def trial_data(self, trial: FrozenTrial | optuna.Trial, state: TrialState, values: list[float] | None) -> tuple:
        """Return (metrics, params, tags) of a trial for ``MlflowClient.log_batch``."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        metrics = []
        for point in trial.user_attrs.get("evaluations", []):
            for key in ("mean_reward", "std_reward"):
                metrics.append(Metric(f"eval/{key}", point[key], now, int(point["timesteps"])))
        if values is not None:
            names = trial.user_attrs.get("objectives") or ["mean_reward"]
            metrics += [Metric(name, float(v), now, 0) for name, v in zip(names, values, strict=False)]
        train_time = trial.user_attrs.get("train_time")
        if train_time:
            metrics.append(Metric("train_time", float(train_time), now, 0))
            timesteps = max((p["timesteps"] for p in trial.user_attrs.get("evaluations", [])), default=0)
            if timesteps:
                metrics.append(Metric("steps_per_second", timesteps / float(train_time), now, 0))
        tags = [RunTag(STATE_TAG, state.name)]
        for key, value in trial.user_attrs.items():
            if key in _NOT_TAGS:
                continue
            if _is_number(value):
                metrics.append(Metric(key, float(value), now, 0))
            tags.append(RunTag(f"user_attr.{key}", _param(value)))
        if "fail_reason" in trial.user_attrs:
            tags.append(RunTag("mlflow.note.content", f"FAILED: {trial.user_attrs['fail_reason']}"[:5000]))
        params = [Param(key, value) for key, value in trial_params(trial).items()]
        return metrics, params, tags

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
        metrics = [
            Metric(f"test/{name}", float(v), now, i) for name, values in scores.items() for i, v in enumerate(values)
        ]
        metrics += [Metric(f"test_score/{name}", float(v), now, 0) for name, v in aggregate.items()]
        self.client.log_batch(runs[0].info.run_id, metrics=metrics)

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
    """Create the runs missing for ``study``'s finished trials; return their numbers."""
    created = []
    logged = tracker.logged_trial_numbers()
    for trial in study.get_trials(deepcopy=False):
        if trial.number in logged or not trial.state.is_finished():
            continue
        start = int(trial.datetime_start.timestamp() * 1000) if trial.datetime_start else None
        run = tracker.client.create_run(
            tracker.experiment_id,
            start_time=start,
            tags={**tracker._trial_tags(trial.number), "zoo_ext.synced": "true"},
            run_name=trial_run_name(trial.number),
        )
        tracker.client.log_batch(run.info.run_id, *tracker.trial_data(trial, trial.state, trial.values))
        end = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else None
        tracker.client.set_terminated(run.info.run_id, STATUS[trial.state], end_time=end)
        created.append(trial.number)
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


class TrackedObjective:
    """Wraps an objective so each trial gets its MLflow run, whatever way the trial ends."""

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
        state, values = TrialState.FAIL, None
        try:
            value = self.objective(trial)
            state, values = TrialState.COMPLETE, list(value) if isinstance(value, tuple) else [value]
            return value  # type: ignore[no-any-return]
        except optuna.TrialPruned:
            state = TrialState.PRUNED
            raise
        except KeyboardInterrupt:
            state = TrialState.RUNNING  # closed as KILLED
            raise
        finally:
            self._close(run_id, trial, state, values)

    def _close(self, run_id: str, trial: optuna.Trial, state: TrialState, values: list[float] | None) -> None:
        model_dir = getattr(self.objective, "model_dir", None)
        model = Path(model_dir) / f"trial_{trial.number}.zip" if model_dir else None
        with tempfile.TemporaryDirectory(prefix="zoo_ext_") as tmp:
            folder = Path(tmp)
            artifacts: dict[str, Path] = {}
            hyperparams = trial.user_attrs.get(record.RECORD_ATTR)
            if hyperparams is not None:
                entry = record.zoo_entry(self.config, hyperparams)
                artifacts["hyperparams"] = folder / "hyperparams.yml"
                artifacts["hyperparams"].write_text(yaml_dump({self.env_id: entry}))
            if model is not None and model.exists() and values is not None:
                if self.tracker.log_models or self._is_new_best(trial, values):
                    artifacts["model"] = model
            self.tracker.end_trial(run_id, trial, state, values, artifacts)
        if model is not None:
            model.unlink(missing_ok=True)


def yaml_dump(data: Any) -> str:
    """Return ``data`` as YAML, as rl_zoo3 hyperparams files are written."""
    import yaml

    return yaml.safe_dump(data, sort_keys=True)
