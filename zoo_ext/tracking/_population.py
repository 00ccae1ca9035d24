"""A population study (``--scheduler pbt|pb2``) in MLflow: one run per member, nested under the study's parent run.

A member's segments are separate trials (and trial runs); its member run strings them together
on one axis, the member's env steps (:func:`zoo_ext.reports.member_segments`), so MLflow charts
each member's reward and perturbed values over its training and tags where it copied another
member's checkpoint. Runs are found by the study's id and the member, and a step already logged
is not logged again: :func:`log_population` can run after every segment or once at the end.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from zoo_ext.attrs import StudyAttr, TrialAttr
from zoo_ext.reports import member_segments
from zoo_ext.tracking._mapping import PARENT_TAG, ROLE_TAG, STUDY_TAG, UID_ATTR, UID_TAG, mlflow_key, non_empty
from zoo_ext.tracking._trial_runs import _ms

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

__all__ = ["MEMBER_TAG", "log_population"]

_logger = logging.getLogger("zoo_ext.tracking")

#: Tag of a member run: the member it follows (with the study's ``zoo_ext.study_uid``, how the run is found).
MEMBER_TAG = "zoo_ext.pbt_member"
#: The segment's value; its history tells which steps a member run already holds.
_REWARD_METRIC = "mean_reward"
#: MLflow's limits per ``log_batch`` call: metrics, tags.
_BATCH_METRICS = 1000
_BATCH_TAGS = 100


def _generations(study: optuna.Study) -> int | None:
    """Return the segments per member the study was planned with (None if it does not record its plan)."""
    generations = study.user_attrs.get(StudyAttr.PBT_PLAN, {}).get("generations")
    return generations if isinstance(generations, int) else None


def _member_run(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    study: optuna.Study,
    member: int,
    start_time: int | None,
) -> tuple[str, str]:
    """Return (run id, status) of ``member``'s run, created (RUNNING, nested under the parent run) if it has none."""
    uid = study.user_attrs[UID_ATTR]
    query = f"tags.`{UID_TAG}` = '{uid}' and tags.`{MEMBER_TAG}` = '{member}'"
    runs = sorted(client.search_runs([experiment_id], query), key=lambda run: (run.info.start_time, run.info.run_id))
    if runs:
        return runs[0].info.run_id, runs[0].info.status
    tags = {
        PARENT_TAG: parent_run_id,
        ROLE_TAG: "pbt_member",
        STUDY_TAG: study.study_name,
        UID_TAG: uid,
        MEMBER_TAG: str(member),
        # As on the member's trial runs (their user attributes are tags), so one filter finds both.
        TrialAttr.PBT_MEMBER.value: str(member),
    }
    run = client.create_run(experiment_id, start_time=start_time, tags=non_empty(tags), run_name=f"member-{member}")
    return run.info.run_id, run.info.status


def _log(client: MlflowClient, run_id: str, metrics: Sequence[Metric], tags: Sequence[RunTag]) -> None:
    """Log ``metrics`` and ``tags`` in ``log_batch`` calls within MLflow's limits."""
    for i in range(max(math.ceil(len(metrics) / _BATCH_METRICS), math.ceil(len(tags) / _BATCH_TAGS))):
        chunk_metrics = metrics[i * _BATCH_METRICS : (i + 1) * _BATCH_METRICS]
        chunk_tags = tags[i * _BATCH_TAGS : (i + 1) * _BATCH_TAGS]
        client.log_batch(run_id, metrics=chunk_metrics, tags=chunk_tags)


def log_population(
    client: MlflowClient,
    *,
    experiment_id: str,
    parent_run_id: str,
    study: optuna.Study,
    plot: Path | None = None,
) -> dict[int, str]:
    """Log each member of population ``study`` to its own run under ``parent_run_id``; return member -> run id.

    A member's run (``member-<m>``, found by the tags ``zoo_ext.study_uid`` and ``zoo_ext.pbt_member``,
    else created) gets per complete segment, at step = the member's env steps so far:
    ``mean_reward``, ``model_env_steps``, ``exploited`` (0/1) and ``hp.<key>`` per perturbed key;
    and per exploit the tag ``pbt.exploit.generation_<g>``. Steps already in its ``mean_reward``
    history are skipped, so calling again logs only new segments. The run is FINISHED once the
    member completed its last generation (the plan the study records: ``-n`` and
    ``--perturb-interval``), else left RUNNING. ``plot`` (:func:`zoo_ext.reports.population_plot`)
    goes to the parent run's ``population/`` artifacts. MLflow errors propagate: no fallback here.
    Raises ValueError for a study without a zoo_ext id (``zoo_ext_uid``).
    """
    from mlflow.entities import Metric, RunTag

    if UID_ATTR not in study.user_attrs:
        raise ValueError(f"study {study.study_name!r} has no {UID_ATTR.value!r}: its runs cannot be found")
    trials = study.get_trials(deepcopy=False)
    generations = _generations(study)
    run_ids: dict[int, str] = {}
    for member, segs in member_segments(study).items():
        run_id, status = _member_run(
            client, experiment_id, parent_run_id, study, member, _ms(segs[0][1].datetime_start)
        )
        run_ids[member] = run_id
        logged = {metric.step for metric in client.get_metric_history(run_id, _REWARD_METRIC)}
        metrics: list[Metric] = []
        tags: list[RunTag] = []
        new = 0
        for step, trial in segs:
            attrs = trial.user_attrs
            generation = attrs[TrialAttr.PBT_GENERATION]
            if attrs.get(TrialAttr.PBT_EXPLOITED):
                parent = attrs[TrialAttr.PBT_PARENT_TRIAL]
                donor = trials[parent].user_attrs[TrialAttr.PBT_MEMBER]
                tags.append(RunTag(f"pbt.exploit.generation_{generation}",
                                   f"copied trial {parent} (member {donor}) at generation {generation}"))  # fmt: skip
            if step in logged or trial.value is None:
                continue
            values = {
                _REWARD_METRIC: float(trial.value),
                "model_env_steps": float(attrs[TrialAttr.PBT_MODEL_STEPS]),
                "exploited": float(bool(attrs.get(TrialAttr.PBT_EXPLOITED))),
                **{mlflow_key(f"hp.{key}"): float(value) for key, value in attrs.get(TrialAttr.PBT_LIVE, {}).items()},
            }
            timestamp = _ms(trial.datetime_complete) or 0
            metrics += [Metric(key, value, timestamp, step) for key, value in values.items()]
            new += 1
        _log(client, run_id, metrics, tags)
        last = segs[-1][1]
        done = generations is not None and last.user_attrs[TrialAttr.PBT_GENERATION] + 1 >= generations
        if done and status != "FINISHED":
            client.set_terminated(run_id, "FINISHED", _ms(last.datetime_complete))
        _logger.debug("member %d: %d new segment(s) logged to run %s", member, new, run_id)
    if plot is not None:
        client.log_artifact(parent_run_id, str(plot), artifact_path="population")
    return run_ids
