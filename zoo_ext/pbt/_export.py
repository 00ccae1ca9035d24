"""A population's result as an rl_zoo3 hyperparams entry: the best member's values over its model's env steps.

A value that changed along the member's lineage becomes a piecewise schedule replayed by
:class:`zoo_ext.schedules.ScheduleCallback` (listed under the entry's ``callback``); a value that
never changed stays a plain value. Stock ``python -m rl_zoo3.train --conf-file`` re-trains it with
zoo_ext installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from zoo_ext import record
from zoo_ext.attrs import StudyAttr, TrialAttr
from zoo_ext.pbt._population import lineage, segments

__all__ = ["CALLBACK", "best_segment", "is_population", "schedule", "schedule_entry"]

#: The dotted name an exported entry lists under ``callback``.
CALLBACK = "zoo_ext.schedules.ScheduleCallback"


def is_population(study: optuna.Study) -> bool:
    """Return True if ``study`` was run with ``--scheduler pbt|pb2``."""
    return study.user_attrs.get(StudyAttr.OPTIONS, {}).get("scheduler", "none") != "none"


def best_segment(study: optuna.Study) -> int:
    """Return the best member's last segment: the best score among the segments of the furthest generation."""
    done = segments(study, (TrialState.COMPLETE,))
    if not done:
        raise ValueError(f"study {study.study_name!r} has no completed segment")
    last = max(t.user_attrs[TrialAttr.PBT_GENERATION] for t in done)
    final = [t for t in done if t.user_attrs[TrialAttr.PBT_GENERATION] == last]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return (max if maximize else min)(final, key=lambda t: float(t.value or 0.0)).number


def schedule(study: optuna.Study, number: int, keys: list[str]) -> dict[str, list[list[float]]]:
    """Return ``key -> [[model env steps, value], ...]`` along trial ``number``'s lineage, for each key that changed."""
    chain = lineage(study, number)
    points: dict[str, list[list[float]]] = {}
    for trial in chain:
        values = trial.user_attrs.get(TrialAttr.RECORD, {})
        attrs = trial.user_attrs
        start = int(attrs.get(TrialAttr.PBT_MODEL_STEPS, 0)) - int(attrs.get(TrialAttr.ENV_STEPS, 0))
        for key in keys:
            value = values.get(key)
            if isinstance(value, (int, float)) and (key not in points or points[key][-1][1] != value):
                points.setdefault(key, []).append([max(start, 0), value])
    return {key: pts for key, pts in points.items() if len({value for _, value in pts}) > 1}


def schedule_entry(study: optuna.Study, number: int) -> dict[str, Any]:
    """Return the rl_zoo3 env entry that re-trains trial ``number``'s model: its lineage's values as schedules."""
    trial = study.get_trials(deepcopy=False)[number]
    if TrialAttr.PBT_MEMBER not in trial.user_attrs:
        raise record.RecordError(f"trial {number} is no population segment")
    attrs = study.user_attrs
    changing = schedule(study, number, list(trial.user_attrs.get(TrialAttr.PBT_LIVE, {})))
    values: Mapping[str, Any] = {**trial.user_attrs[TrialAttr.RECORD], **{k: pts[0][1] for k, pts in changing.items()}}
    entry = record.merge(attrs[StudyAttr.ZOO_CONFIG], record.to_zoo(values))
    entry["n_timesteps"] = int(trial.user_attrs.get(TrialAttr.PBT_MODEL_STEPS, entry.get("n_timesteps", 0)))
    if changing:
        existing = entry.get("callback")
        callbacks = [] if existing is None else list(existing) if isinstance(existing, list) else [existing]
        entry["callback"] = [*callbacks, {CALLBACK: {"schedule": changing}}]
    return entry
