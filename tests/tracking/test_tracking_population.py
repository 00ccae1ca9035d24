"""A population study's member runs in MLflow: one per member under the parent run, logged once however often called.

Real MLflow SQLite store (one per module: creating one takes seconds), real in-memory Optuna
study built by hand (``population_study``: 3 members x 3 generations, member 2 exploits at generation 1).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import optuna
import pytest
from helpers import mlflow_store
from mlflow import MlflowClient
from mlflow.entities import Run
from test_population_report import EXPLOIT, learning_rate, population_study, reward

from zoo_ext import tracking
from zoo_ext.attrs import StudyAttr

#: Metrics per segment: mean_reward, model_env_steps, exploited, hp.learning_rate, hp.ent_coef.
METRICS = ("mean_reward", "model_env_steps", "exploited", "hp.learning_rate", "hp.ent_coef")


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow SQLite store for the module, created before its first test (creating one takes seconds)."""
    return mlflow_store(tmp_path_factory.mktemp("store"))


def _parent(client: MlflowClient, study: optuna.Study) -> tuple[str, str]:
    """Return (experiment id, parent run id): a fresh experiment holding the study's parent run."""
    experiment_id = client.create_experiment(f"population-{uuid.uuid4().hex[:8]}")
    tags = {tracking.ROLE_TAG: "study", tracking.UID_TAG: study.user_attrs[StudyAttr.UID]}
    return experiment_id, client.create_run(experiment_id, tags=tags, run_name="study").info.run_id


def _members(client: MlflowClient, experiment_id: str, parent_run_id: str) -> dict[int, Run]:
    runs = client.search_runs([experiment_id], f"tags.`{tracking.PARENT_TAG}` = '{parent_run_id}'")
    return {int(run.data.tags[tracking.MEMBER_TAG]): run for run in runs}


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_one_run_per_member_with_its_segments_logged_once(uri: str, tmp_path: Path) -> None:
    client = MlflowClient(uri)
    study = population_study()
    experiment_id, parent_run_id = _parent(client, study)
    plot = tmp_path / "population.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n")

    run_ids = tracking.log_population(client, experiment_id=experiment_id, parent_run_id=parent_run_id,
                                      study=study, plot=plot)  # fmt: skip

    runs = _members(client, experiment_id, parent_run_id)
    assert sorted(runs) == [0, 1, 2]
    assert run_ids == {member: run.info.run_id for member, run in runs.items()}
    for member, run in runs.items():
        assert run.info.run_name == f"member-{member}"
        assert run.data.tags[tracking.UID_TAG] == study.user_attrs[StudyAttr.UID]
        assert run.data.tags["pbt_member"] == str(member)
        assert run.info.status == "FINISHED"  # its generation 2 is the plan's last
        assert _history(client, run.info.run_id, "mean_reward") == [
            (128 * (g + 1), reward(member, g)) for g in range(3)
        ]
        exploits = {k: v for k, v in run.data.tags.items() if k.startswith("pbt.exploit.")}
        assert exploits == ({
            "pbt.exploit.generation_1": f"copied trial {EXPLOIT['parent']} (member {EXPLOIT['donor']}) at generation 1"
        } if member == EXPLOIT["member"] else {})  # fmt: skip
    exploiting = run_ids[EXPLOIT["member"]]
    assert _history(client, exploiting, "model_env_steps") == [(128, 128.0), (256, 384.0), (384, 512.0)]
    assert _history(client, exploiting, "exploited") == [(128, 0.0), (256, 1.0), (384, 0.0)]
    assert _history(client, exploiting, "hp.learning_rate") == [(128 * (g + 1), learning_rate(2, g)) for g in range(3)]
    assert [a.path for a in client.list_artifacts(parent_run_id, "population")] == ["population/population.png"]
    points = {(m, key): len(client.get_metric_history(r, key)) for m, r in run_ids.items() for key in METRICS}
    assert set(points.values()) == {3}

    again = tracking.log_population(client, experiment_id=experiment_id, parent_run_id=parent_run_id,
                                    study=study, plot=plot)  # fmt: skip

    assert again == run_ids
    assert len(_members(client, experiment_id, parent_run_id)) == 3
    assert {(m, key): len(client.get_metric_history(r, key)) for m, r in again.items() for key in METRICS} == points


def test_a_later_call_adds_the_new_segments_and_finishes_the_members(uri: str) -> None:
    client = MlflowClient(uri)
    whole = population_study()
    study = population_study(generations=2)
    study.set_user_attr(StudyAttr.UID, whole.user_attrs[StudyAttr.UID])
    experiment_id, parent_run_id = _parent(client, study)

    first = tracking.log_population(client, experiment_id=experiment_id, parent_run_id=parent_run_id, study=study)

    runs = _members(client, experiment_id, parent_run_id)
    assert {run.info.status for run in runs.values()} == {"RUNNING"}  # generation 2 is still to come
    assert [step for step, _ in _history(client, first[0], "mean_reward")] == [128, 256]
    assert client.list_artifacts(parent_run_id) == []  # no plot given

    later = tracking.log_population(client, experiment_id=experiment_id, parent_run_id=parent_run_id, study=whole)

    assert later == first
    runs = _members(client, experiment_id, parent_run_id)
    assert {run.info.status for run in runs.values()} == {"FINISHED"}
    for member, run_id in later.items():
        assert _history(client, run_id, "mean_reward") == [(128 * (g + 1), reward(member, g)) for g in range(3)]


def test_a_study_without_zoo_ext_id_is_refused(uri: str) -> None:
    client = MlflowClient(uri)
    experiment_id, parent_run_id = _parent(client, population_study())
    study = optuna.create_study(direction="maximize")  # a copy of the segments, not of the study's attributes
    study.add_trials(population_study().trials)

    with pytest.raises(ValueError, match="zoo_ext_uid"):
        tracking.log_population(client, experiment_id=experiment_id, parent_run_id=parent_run_id, study=study)
