"""Optuna → MLflow as pure functions: run status of a trial state, MLflow keys, a trial's params, metrics and tags,
and the study's progress told on its parent run.

Nothing here talks to MLflow or touches a file: the tracker (:mod:`._tracker` and its collaborators) sends what these
functions return.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from zoo_ext.attrs import StudyAttr, TrialAttr
from zoo_ext.statistics import sign
from zoo_ext.storage import redact

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
UID_ATTR = StudyAttr.UID
#: Study user attribute holding the settings of :func:`zoo_ext.mlflow.track` (``mlflow-sync`` reads them).
TRACK_ATTR = StudyAttr.TRACK
STUDY_TAG = "optuna.study_name"
NUMBER_TAG = "optuna.trial_number"
STATE_TAG = "optuna.trial_state"
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"
#: Prefix of the parent run's tags holding the best trial's params (one objective).
BEST_PARAMS = "best_params."
#: The parent run's artifact mapping renamed params, metrics and tags to their MLflow keys.
NAMES_ARTIFACT = "mlflow_names.json"
#: Trial user attributes of a zoo_ext study logged another way (params, metrics, artifact) rather than as tags.
_NOT_TAGS = (TrialAttr.RECORD, TrialAttr.EVALUATIONS, TrialAttr.PER_SEED)
#: MLflow's limits (``mlflow.utils.validation``): key length, param and tag value length.
MAX_KEY = 250
MAX_PARAM = 6000
MAX_TAG = 8000
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]+")
#: The parent run's metric counting the trials that ended in each state.
COUNT_METRICS = {TrialState.COMPLETE: "n_complete", TrialState.PRUNED: "n_pruned", TrialState.FAIL: "n_failed"}


@dataclass(frozen=True)
class TrialMapping:
    """What of a trial its run gets, beyond its params, user attributes and state.

    ``zoo``: a zoo_ext RL trial: the recorded constructor kwargs as params, the evaluations as step
    metrics, the values named after the trial's user attribute ``objectives`` (else ``mean_reward``).
    Otherwise a plain Optuna trial: values named ``value_names``, and the values ``trial.report``
    received as the step metric ``intermediate_metric`` (None: not logged).
    """

    zoo: bool = True
    value_names: tuple[str, ...] = ()
    intermediate_metric: str | None = None

    def to_attr(self) -> dict[str, Any]:
        """Return the mapping as a JSON-able dict (a study user attribute)."""
        return {"value_names": list(self.value_names), "intermediate_metric": self.intermediate_metric}

    @classmethod
    def from_attr(cls, attr: Mapping[str, Any]) -> TrialMapping:
        """Return the plain-Optuna mapping :meth:`to_attr` stored."""
        names = tuple(str(name) for name in attr.get("value_names") or ())
        return cls(zoo=False, value_names=names, intermediate_metric=attr.get("intermediate_metric"))


#: The mapping of the trials of a zoo_ext RL study.
ZOO = TrialMapping()


def value_names(metric_name: str | Sequence[str], n_objectives: int) -> tuple[str, ...]:
    """Return the metric name of each objective: ``metric_name``, or ``metric_name_<i>`` for several objectives.

    A sequence must name every objective; raises ValueError otherwise.
    """
    if isinstance(metric_name, str):
        return (metric_name,) if n_objectives == 1 else tuple(f"{metric_name}_{i}" for i in range(n_objectives))
    names = tuple(metric_name)
    if len(names) != n_objectives or len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"metric_name must be {n_objectives} distinct string(s), one per objective; got {names!r}")
    return names


def default_experiment_name(algo: str, env_id: str) -> str:
    """Return the experiment a study logs to by default: ``<algo>-<env id>``."""
    return f"{algo}-{env_id}"


def trial_run_name(number: int) -> str:
    """Return the run name of trial ``number``."""
    return f"trial-{number}"


def study_uid(location: str | None, study_name: str) -> str:
    """Return the id tying a study to its parent run, from where the study is stored and its name.

    ``location`` is a storage URL (its user info is dropped: credentials may come another way) or a
    journal file path (made absolute), so processes opening the same study get the same id; None
    (an in-memory study) gives a random id.
    """
    if location is None:
        return uuid.uuid4().hex
    where = os.path.abspath(location) if location.endswith(".log") else re.sub(r"//[^/@]*@", "//", location)
    return hashlib.sha256(f"{where}|{study_name}".encode()).hexdigest()[:32]


def _is_valid_key(name: str) -> bool:
    from mlflow.utils.validation import path_not_unique, validate_param_and_metric_name

    return 0 < len(name) <= MAX_KEY and bool(validate_param_and_metric_name(name)) and not path_not_unique(name)


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
    if len(text) > MAX_KEY:
        text = f"{text[: MAX_KEY - 9]}-{_digest(name)}"
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
            key = f"{mlflow_key(name)[: MAX_KEY - 9]}-{_digest(f'{salt}:{name}')}"
        keys[name] = key
        used.add(key)
    return {name: keys[name] for name in ordered}


def non_empty(tags: Mapping[str, str]) -> dict[str, str]:
    """Return ``tags`` without those whose value is '': an empty tag says nothing, yet MLflow shows it as set."""
    return {key: value for key, value in tags.items() if value}


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """Add ``value``'s leaves to ``out`` under dotted keys (``policy_kwargs.net_arch``)."""
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif prefix:
        out[prefix] = value


def text(value: Any, limit: int = MAX_PARAM) -> str:
    """Return ``value`` as an MLflow param or tag value: lists and dicts as JSON, cut at ``limit`` characters."""
    if isinstance(value, str):
        out = value
    elif isinstance(value, (list, dict)):
        out = json.dumps(value, default=str)
    else:
        out = str(value)
    return out[:limit]


def trial_params(trial: FrozenTrial | optuna.Trial, mapping: TrialMapping = ZOO) -> dict[str, str]:
    """Return a trial's MLflow params (original names): its Optuna params, then (zoo_ext) its flat constructor kwargs.

    A kwarg whose name is an Optuna param with another value is logged as ``kwargs.<name>``.
    """
    params = {name: text(value) for name, value in trial.params.items()}
    if not mapping.zoo:
        return params
    kwargs: dict[str, Any] = {}
    flatten("", trial.user_attrs.get(TrialAttr.RECORD, {}), kwargs)
    for key, value in kwargs.items():
        item = text(value)
        params[key if params.get(key, item) == item else f"kwargs.{key}"] = item
    return params


def is_number(value: Any) -> bool:
    """Return True for an int or float (not a bool): user attributes logged as metrics too."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def intermediate_values(trial: FrozenTrial | optuna.Trial) -> Mapping[int, float]:
    """Return the values ``trial.report`` received, by step.

    A running ``optuna.Trial`` keeps them in its cached frozen trial (Optuna 4 and 5), read here without a storage call.
    """
    if isinstance(trial, FrozenTrial):
        return trial.intermediate_values
    return trial._cached_frozen_trial.intermediate_values


def trial_metrics(
    trial: FrozenTrial | optuna.Trial, values: Sequence[float] | None, mapping: TrialMapping = ZOO
) -> list[tuple[str, float, int]]:
    """Return a trial's metric points (original name, value, step): curve, values, numeric user attributes."""
    points: list[tuple[str, float, int]] = []
    attrs = trial.user_attrs
    if mapping.zoo:
        for point in attrs.get(TrialAttr.EVALUATIONS, []):
            for key in ("mean_reward", "std_reward"):
                points.append((f"eval/{key}", float(point[key]), int(point["timesteps"])))
        for env, scores in attrs.get(TrialAttr.PER_ENV, {}).items():  # --tune-envs: step = seed index
            for key, name in (("raw", "mean_reward"), ("normalized", "normalized")):
                points += [(f"env/{env}/{name}", float(v), k) for k, v in enumerate(scores.get(key, []))]
    elif mapping.intermediate_metric:
        name = mapping.intermediate_metric
        points += [(name, float(v), int(step)) for step, v in sorted(intermediate_values(trial).items())]
    if values is not None:
        names = mapping.value_names or (attrs.get(TrialAttr.OBJECTIVES) if mapping.zoo else None) or ["mean_reward"]
        points += [(str(name), float(v), 0) for name, v in zip(names, values, strict=False)]
    train_time = attrs.get(TrialAttr.TRAIN_TIME) if mapping.zoo else None
    if train_time:
        points.append(("train_time", float(train_time), 0))
        timesteps = max((p["timesteps"] for p in attrs.get(TrialAttr.EVALUATIONS, [])), default=0)
        if timesteps:
            points.append(("steps_per_second", timesteps / float(train_time), 0))
    points += [(key, float(v), 0) for key, v in attrs.items() if is_number(v) and not _logged_otherwise(key, mapping)]
    return points


def _logged_otherwise(key: str, mapping: TrialMapping) -> bool:
    return mapping.zoo and key in _NOT_TAGS


def trial_tags(
    trial: FrozenTrial | optuna.Trial, state: TrialState, reason: str | None = None, mapping: TrialMapping = ZOO
) -> dict[str, str]:
    """Return a trial's tags (original names): its final state, user attributes, and why it failed; none empty."""
    tags = {STATE_TAG: state.name}
    for key, value in trial.user_attrs.items():
        if not _logged_otherwise(key, mapping):
            tags[f"user_attr.{key}"] = text(value, MAX_TAG)
    reason = trial.user_attrs.get(TrialAttr.FAIL_REASON) or reason
    if reason:
        tags[f"user_attr.{TrialAttr.FAIL_REASON}"] = text(reason, MAX_TAG)
        tags[NOTE_TAG] = text(f"FAILED: {reason}", MAX_TAG)
    return non_empty(tags)


def stale_reason(trial: FrozenTrial) -> str | None:
    """Return why a finished trial whose run was left open failed (its ``fail_reason``, else a dead worker), or None."""
    if trial.state != TrialState.FAIL:
        return None
    return str(trial.user_attrs.get(TrialAttr.FAIL_REASON, "its worker stopped sending heartbeats (it died)"))


def study_params(study: optuna.Study) -> dict[str, Any]:
    """Return the parent run's params of a zoo_ext study: study, options, budget and the env's config."""
    attrs = study.user_attrs
    params: dict[str, Any] = {
        "study_name": study.study_name,
        "directions": ",".join(d.name.lower() for d in study.directions),
        "algo": attrs.get(StudyAttr.ALGO),
        "env_id": attrs.get(StudyAttr.ENV_ID),
        "command": redact(str(attrs.get(StudyAttr.COMMAND, ""))),
    }
    sections = (("zoo_ext", StudyAttr.OPTIONS), ("budget", StudyAttr.BUDGET), ("config", StudyAttr.ZOO_CONFIG))
    for prefix, attr in sections:
        flat: dict[str, Any] = {}
        flatten("", attrs.get(attr, {}), flat)
        params.update({f"{prefix}.{key}": value for key, value in flat.items()})
    return params


def optuna_study_params(study: optuna.Study, mapping: TrialMapping) -> dict[str, Any]:
    """Return the parent run's params of a plain Optuna study: name, directions and metric names."""
    return {
        "study_name": study.study_name,
        "directions": ",".join(d.name.lower() for d in study.directions),
        "metric_names": ",".join(mapping.value_names),
    }


def told(study: optuna.Study, value: Any) -> tuple[list[float] | None, str | None]:
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


def objective_names(study: optuna.Study, mapping: TrialMapping) -> tuple[str, ...]:
    """Return the name of each objective of ``study``: the mapping's, else (zoo_ext) its attribute ``objectives``."""
    names = mapping.value_names or (tuple(study.user_attrs.get(StudyAttr.OBJECTIVES) or ()) if mapping.zoo else ())
    if len(names) == len(study.directions):
        return tuple(str(name) for name in names)
    return value_names("mean_reward" if mapping.zoo else "value", len(study.directions))


class StudyProgress:
    """The study as its parent run tells it: trial counts, the best value(s) so far, the best trial or the Pareto front.

    :meth:`add` the finished trials in the order they finished; :meth:`metrics` and :meth:`tags`
    then describe the study at that moment.
    """

    def __init__(self, directions: Sequence[StudyDirection], names: Sequence[str]) -> None:
        self.signs = [sign(d) for d in directions]
        self.names = tuple(names)
        self.counts = dict.fromkeys(COUNT_METRICS.values(), 0)
        #: Each objective's best value so far, times its sign (larger is better).
        self.best: list[float] = []
        self.best_number: int | None = None
        self.best_params: dict[str, Any] = {}
        #: The Pareto-optimal trials so far: number → values times their signs.
        self.front: dict[int, list[float]] = {}
        #: Every parameter name of the finished trials, in order of appearance.
        self.param_names: dict[str, None] = {}

    def add(self, number: int, state: TrialState, values: Sequence[float] | None, params: Mapping[str, Any]) -> None:
        """Count trial ``number``, which ended in ``state`` with ``values`` (a COMPLETE trial's) and ``params``."""
        if state in COUNT_METRICS:
            self.counts[COUNT_METRICS[state]] += 1
        self.param_names.update(dict.fromkeys(params))
        if state != TrialState.COMPLETE or values is None or len(values) != len(self.signs):
            return
        signed = [sign * float(value) for sign, value in zip(self.signs, values, strict=True)]
        if self.best_number is None or signed[0] > self.best[0]:
            self.best_number, self.best_params = number, dict(params)
        self.best = [max(pair) for pair in zip(self.best, signed, strict=True)] if self.best else signed
        if any(_dominates(other, signed) for other in self.front.values()):
            return
        self.front = {n: other for n, other in self.front.items() if not _dominates(signed, other)}
        self.front[number] = signed

    def add_trial(self, trial: FrozenTrial) -> None:
        """Count a finished ``trial`` (see :meth:`add`)."""
        self.add(trial.number, trial.state, trial.values, trial.params)

    def metrics(self) -> dict[str, float]:
        """Return the parent run's metrics: the trial counts and the best value(s) so far.

        One objective: ``best_value``; several: ``pareto_front_size`` and ``best_<objective>`` per
        objective. A best value exists once a trial completed.
        """
        out: dict[str, float] = {name: float(count) for name, count in self.counts.items()}
        if len(self.signs) == 1:
            if self.best:
                out["best_value"] = self.signs[0] * self.best[0]
            return out
        out["pareto_front_size"] = float(len(self.front))
        for name, better, best in zip(self.names, self.signs, self.best, strict=False):
            out[f"best_{name}"] = better * best
        return out

    def tags(self) -> dict[str, str]:
        """Return the parent run's tags: the best trial, or the Pareto front; none until a trial completed.

        One objective: ``best_trial`` and ``best_params.<name>`` for each parameter of the best
        trial (none for a parameter it has not, in a conditional space, nor for an empty value);
        several: ``pareto_trials``, the Pareto-optimal trial numbers.
        """
        if len(self.signs) > 1:
            return {"pareto_trials": text(",".join(map(str, sorted(self.front))), MAX_TAG)} if self.front else {}
        if self.best_number is None:
            return {}
        return {"best_trial": str(self.best_number), **self._best_params_tags()}

    def _best_params_tags(self) -> dict[str, str]:
        return non_empty({f"{BEST_PARAMS}{name}": text(value, MAX_TAG) for name, value in self.best_params.items()})

    @property
    def partial(self) -> bool:
        """True if the best trial has no ``best_params`` tag for a parameter of the study (a conditional space).

        A parent run's tag for such a parameter describes an earlier best trial.
        """
        one = len(self.signs) == 1 and self.best_number is not None
        return one and len(self._best_params_tags()) < len(self.param_names)


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Return True if signed values ``a`` are at least as good as ``b`` everywhere and better somewhere."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


#: The parent run's artifact holding the result card of a re-evaluated study (a self-contained HTML page).
CARD_ARTIFACT = "result_card.html"
#: The statistics of a result card entry logged as metrics (``ci95`` as ``ci95_low`` and ``ci95_high``).
_CARD_STATS = ("median", "iqm", "ci95", "p_improvement")


def card_metrics(card: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Return a result card's metrics for the parent run: ``card/<entry>/<objective>/<statistic>``.

    ``card`` is the study's ``test_scores``: per trial number (entry ``trial_<number>``) and
    ``baseline``, per statistic, a value per objective. Missing statistics (no interval below two
    seeds, no probability of improvement for the baseline) are not logged.
    """
    out: dict[str, float] = {}
    for key, entry in card.items():
        label = f"trial_{key}" if key.isdigit() else key
        for stat in _CARD_STATS:
            for name, value in (entry.get(stat) or {}).items():
                if value is None:
                    continue
                if stat == "ci95":
                    out[f"card/{label}/{name}/ci95_low"], out[f"card/{label}/{name}/ci95_high"] = map(float, value)
                else:
                    out[f"card/{label}/{name}/{stat}"] = float(value)
    return out
