"""``zoo_ext.mlflow.track`` on plain Optuna studies (no RL): real studies, a real MLflow SQLite store, mlflow-sync."""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from helpers import ROOT, free_port, mlflow_store, run
from mlflow import MlflowClient
from mlflow.entities import Run
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from zoo_ext.mlflow import track
from zoo_ext.storage import quiet_optuna

STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
ZOO_EXT = [sys.executable, "-m", "zoo_ext"]


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow SQLite store for the module (creating one takes seconds); each test has its own experiments."""
    return mlflow_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(autouse=True)
def _quiet_optuna() -> Any:
    with quiet_optuna(optuna.logging.ERROR):
        yield


def _journal(path: Path) -> optuna.storages.JournalStorage:
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def _runs(uri: str, experiment: str) -> tuple[list[Run], dict[int, Run]]:
    """Return (parent runs, trial number → child run) of ``experiment``."""
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("zoo_ext.role") == "study"]
    children = [r for r in runs if r.data.tags.get("zoo_ext.role") == "trial"]
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    assert len(by_number) == len(children), "two runs for one trial"
    return parents, by_number


def _check_runs(uri: str, experiment: str, study: optuna.Study, metric: str = "intermediate_value") -> Run:
    """Assert one parent run and one child run per trial, matching the storage; return the parent."""
    parents, children = _runs(uri, experiment)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_name == study.study_name and parent.data.params["study_name"] == study.study_name
    assert sorted(children) == [t.number for t in study.trials]
    client = MlflowClient(uri)
    for trial in study.trials:
        child = children[trial.number]
        tags, metrics = child.data.tags, child.data.metrics
        assert child.info.run_name == f"trial-{trial.number}"
        assert child.info.status == STATUS[trial.state.name]
        assert tags["optuna.trial_state"] == trial.state.name
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params == {name: str(value) for name, value in trial.params.items()}
        history = client.get_metric_history(child.info.run_id, metric)
        assert sorted((m.step, m.value) for m in history) == sorted(trial.intermediate_values.items())
        assert trial.intermediate_values, "every trial of these tests reports"
        if trial.state.name == "COMPLETE":
            assert metrics["value"] == pytest.approx(trial.value)
        else:
            assert "value" not in metrics
        if trial.state.name == "FAIL":
            reason = f"ValueError: trial {trial.number} diverged"
            assert tags["user_attr.fail_reason"] == reason and tags["mlflow.note.content"] == f"FAILED: {reason}"
        assert metrics["width"] == trial.user_attrs["width"] and tags["user_attr.label"] == f"trial {trial.number}"
    return parent


def objective(trial: optuna.Trial) -> float:
    """Trials 3, 8, 13, ... fail at step 0; 1, 6, 11, ... are pruned at step 20 if the pruner did not prune them."""
    x = trial.suggest_float("x", -5.0, 5.0)
    trial.suggest_categorical("kind", ["a", "b"])
    trial.set_user_attr("label", f"trial {trial.number}")
    trial.set_user_attr("width", 8 * (trial.number % 3 + 1))
    for step in range(0, 40, 10):
        trial.report((x - 1) ** 2 + 10 / (step + 1), step)
        if trial.number % 5 == 3:
            raise ValueError(f"trial {trial.number} diverged")
        if (trial.number % 5 == 1 and step == 20) or trial.should_prune():
            raise optuna.TrialPruned()
    return (x - 1) ** 2


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def _story(trials: list[optuna.trial.FrozenTrial]) -> dict[str, list[tuple[int, float]]]:
    """Return the parent run's histories expected when ``trials`` (one objective, minimised) end in this order."""
    story: dict[str, list[tuple[int, float]]] = {"best_value": [], "n_complete": [], "n_pruned": [], "n_failed": []}
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
    best = math.inf
    for trial in trials:
        counts[trial.state.name] += 1
        if trial.state.name == "COMPLETE":
            best = min(best, trial.value)
        story["n_complete"].append((trial.number, counts["COMPLETE"]))
        story["n_pruned"].append((trial.number, counts["PRUNED"]))
        story["n_failed"].append((trial.number, counts["FAIL"]))
        if best < math.inf:
            story["best_value"].append((trial.number, best))
    return {key: sorted(points) for key, points in story.items()}


def _completion_order(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return sorted(study.trials, key=lambda t: (t.datetime_complete, t.number))


def test_the_parent_run_tells_the_study_story(uri: str) -> None:
    study = optuna.create_study(study_name="story", sampler=optuna.samplers.RandomSampler(1))
    with track(study, objective, tracking_uri=uri) as tracked:
        study.optimize(tracked, n_trials=12, catch=(ValueError,))
    assert {t.state.name for t in study.trials} == {"COMPLETE", "PRUNED", "FAIL"}
    for key, points in _story(study.trials).items():  # one point per trial: the end of the study adds none
        assert _history(uri, tracked.parent_run_id, key) == points, key
    values = [v for _, v in _history(uri, tracked.parent_run_id, "best_value")]
    assert values == sorted(values, reverse=True) and values[-1] == study.best_value  # a falling staircase
    tags = MlflowClient(uri).get_run(tracked.parent_run_id).data.tags
    best = study.best_trial
    assert tags["best_trial"] == str(best.number)
    assert tags["best_params.x"] == str(best.params["x"]) and tags["best_params.kind"] == best.params["kind"]
    assert "zoo_ext.stop_reason" not in tags and _empty(tags) == []  # no stop rule: no reason, and no empty tag


def _empty(tags: dict[str, str]) -> list[str]:
    """Return the keys of ``tags`` whose value is empty."""
    return [key for key, value in tags.items() if value == ""]


def branchy(trial: optuna.Trial) -> float:
    """A conditional space: ``layers`` exists only on the ``deep`` branch; an empty user attribute on every trial."""
    if trial.suggest_categorical("kind", ["deep", "flat"]) == "deep":
        trial.suggest_int("layers", 1, 4)
    trial.set_user_attr("note", "")
    return trial.suggest_float("x", 0.0, 10.0)


def test_a_new_best_trial_without_a_branch_drops_the_old_best_params_tag(uri: str) -> None:
    study = optuna.create_study(study_name="branches")
    study.enqueue_trial({"kind": "deep", "layers": 2, "x": 5.0})
    study.enqueue_trial({"kind": "flat", "x": 1.0})  # better, and no "layers"
    client = MlflowClient(uri)
    with track(study, branchy, tracking_uri=uri, tags={"team": ""}) as tracked:
        study.optimize(tracked, n_trials=1)
        tags = client.get_run(tracked.parent_run_id).data.tags
        assert tags["best_trial"] == "0" and tags["best_params.layers"] == "2"
        study.optimize(tracked, n_trials=1)
        tags = client.get_run(tracked.parent_run_id).data.tags  # as the trial left it, before the study's end
        assert tags["best_trial"] == "1" and "best_params.layers" not in tags
    tags = client.get_run(tracked.parent_run_id).data.tags
    best = {key: value for key, value in tags.items() if key.startswith("best_params.")}
    assert tags["best_trial"] == "1" and best == {"best_params.kind": "flat", "best_params.x": "1.0"}
    assert "team" not in tags and "zoo_ext.stop_reason" not in tags and _empty(tags) == []
    _, children = _runs(uri, "branches")
    for child in children.values():
        assert "user_attr.note" not in child.data.tags and _empty(child.data.tags) == []


def test_the_end_drops_best_params_tags_another_best_trial_left(uri: str) -> None:
    """A stale tag the trials' logging did not remove (another process wrote it) is deleted when the study ends."""
    study = optuna.create_study(study_name="stale-best")
    study.enqueue_trial({"kind": "flat", "x": 1.0})
    with track(study, branchy, tracking_uri=uri) as tracked:
        study.optimize(tracked, n_trials=1)
        MlflowClient(uri).set_tag(tracked.parent_run_id, "best_params.layers", "3")
    tags = MlflowClient(uri).get_run(tracked.parent_run_id).data.tags
    assert tags["best_params.kind"] == "flat" and "best_params.layers" not in tags and _empty(tags) == []


def test_the_stop_reason_is_tagged_only_while_a_stop_rule_ended_the_study(uri: str, tmp_path: Path) -> None:
    storage = _journal(tmp_path / "stop.log")
    study = optuna.create_study(study_name="stopped", storage=storage)
    reason = "patience: no improvement in 5 trials"
    with track(study, branchy, tracking_uri=uri) as first:
        study.optimize(first, n_trials=1)
        study.set_user_attr("stop_reason", reason)
    client = MlflowClient(uri)
    assert client.get_run(first.parent_run_id).data.tags["zoo_ext.stop_reason"] == reason
    study.set_user_attr("stop_reason", None)  # resumed, the study ran on: the old reason is stale
    with track(study, branchy, tracking_uri=uri) as second:
        study.optimize(second, n_trials=1)
    assert second.parent_run_id == first.parent_run_id
    tags = client.get_run(second.parent_run_id).data.tags
    assert "zoo_ext.stop_reason" not in tags and _empty(tags) == []


def test_the_last_process_to_log_leaves_the_study_as_it_is(uri: str) -> None:
    """Two processes' trackers on one parent run; the trial started second ends first."""
    study = optuna.create_study(study_name="race", direction="maximize")
    first, second = (track(study, objective, tracking_uri=uri, experiment="race") for _ in range(2))
    assert first.parent_run_id == second.parent_run_id
    trial_0, trial_1 = study.ask({"x": FloatDistribution(0, 1)}), study.ask({"x": FloatDistribution(0, 1)})
    second.tracker.log_progress(study, 1, TrialState.COMPLETE, [5.0], trial_1.params)
    study.tell(trial_1, 5.0)
    first.tracker.log_progress(study, 0, TrialState.COMPLETE, [7.0], trial_0.params)  # reads trial 1 from the storage
    study.tell(trial_0, 7.0)
    client = MlflowClient(uri)
    run = client.get_run(first.parent_run_id)
    assert run.data.tags["best_trial"] == "0"  # a tag: the last write wins
    # MLflow shows a metric's value at its highest step: trial 1's, logged before trial 0 ended.
    assert run.data.metrics["best_value"] == 5.0 and run.data.metrics["n_complete"] == 1
    first.close()  # the end of the study logs the finished study's values where they differ
    assert _history(uri, first.parent_run_id, "best_value") == [(0, 7.0), (1, 5.0), (1, 7.0)]
    assert _history(uri, first.parent_run_id, "n_complete") == [(0, 2.0), (1, 1.0), (1, 2.0)]
    assert _history(uri, first.parent_run_id, "n_pruned") == [(0, 0.0), (1, 0.0)]  # right already: not logged again
    assert client.get_run(first.parent_run_id).data.metrics["best_value"] == 7.0


@pytest.mark.slow
def test_import_pulls_in_no_rl_library(tmp_path: Path) -> None:
    code = """
import json, sys
import zoo_ext.mlflow
heavy = ("rl_zoo3", "stable_baselines3", "sb3_contrib", "torch", "gymnasium")
after_import = [m for m in heavy if m in sys.modules]
import optuna
study = optuna.create_study(study_name="no-rl")
with zoo_ext.mlflow.track(study, lambda t: t.suggest_float("x", 0, 1)) as tracked:
    study.optimize(tracked, n_trials=2)
print(json.dumps({"import": after_import, "study": [m for m in heavy if m in sys.modules], "on": tracked.enabled}))
"""
    proc = run([sys.executable, "-c", code], tmp_path)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"import": [], "study": [], "on": True}


@pytest.mark.slow
def test_n_jobs_study_has_one_parent_and_a_run_per_trial_then_sync_logs_an_untracked_one(
    uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = _journal(tmp_path / "study.log")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=4)
    study = optuna.create_study(
        study_name="live", storage=storage, pruner=pruner, sampler=optuna.samplers.RandomSampler(0)
    )
    with track(study, objective, tracking_uri=uri) as tracked:
        study.optimize(tracked, n_trials=20, n_jobs=4, catch=(ValueError,))
    states = [t.state.name for t in study.trials]
    assert len(states) == 20 and states.count("FAIL") == 4 and states.count("PRUNED") >= 4
    assert "COMPLETE" in states
    parent = _check_runs(uri, "live", study)
    assert parent.info.run_id == tracked.parent_run_id and parent.info.status == "FINISHED"
    assert parent.data.params["sampler"] == "RandomSampler" and parent.data.params["pruner"] == "MedianPruner"
    assert parent.data.tags["version.optuna"] == optuna.__version__
    # Four threads logged the study's progress at each trial's end; the end of the study left it as it is.
    assert parent.data.metrics["best_value"] == study.best_value
    assert parent.data.tags["best_trial"] == str(study.best_trial.number)
    counts = {"n_complete": "COMPLETE", "n_pruned": "PRUNED", "n_failed": "FAIL"}
    assert {key: parent.data.metrics[key] for key in counts} == {k: states.count(v) for k, v in counts.items()}
    assert {step for step, _ in _history(uri, parent.info.run_id, "n_failed")} == set(range(20))

    # The same objective on a second study while MLflow is down: one warning, every trial runs untracked ...
    offline = optuna.create_study(study_name="offline", storage=storage, pruner=pruner)
    with caplog.at_level(logging.WARNING, logger="zoo_ext.tracking"):
        with track(offline, objective, tracking_uri=f"http://127.0.0.1:{free_port()}") as down:
            offline.optimize(down, n_trials=20, n_jobs=4, catch=(ValueError,))
    assert not down.enabled and len(offline.trials) == 20
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "zoo_ext.tracking"]
    assert "is unavailable" in warning and "mlflow-sync" in warning
    # ... then mlflow-sync logs it from the storage, once.
    sync = [*ZOO_EXT, "mlflow-sync", "--storage", "study.log", "--study-name", "offline", "--mlflow-tracking-uri", uri]
    assert "Created 20 run(s) in experiment 'offline'" in run(sync, tmp_path).stdout
    assert "Created 0 run(s)" in run(sync, tmp_path).stdout
    synced = _check_runs(uri, "offline", offline)
    assert synced.info.status == "FINISHED" and synced.data.params["directions"] == "minimize"
    # The synced parent tells the study's story as if it had been tracked live, once (the second sync adds nothing).
    # When trial 19 was not the last to finish, the end of the sync re-logs the final value at step 19
    # (MLflow shows a metric's value at its highest step): that is the only point allowed beyond the story.
    for key, points in _story(_completion_order(offline)).items():
        history = _history(uri, synced.info.run_id, key)
        extra = sorted(set(history) - set(points))
        assert set(points) <= set(history) and extra in ([], [(19, synced.data.metrics[key])]), key
    assert synced.data.tags["best_trial"] == str(offline.best_trial.number)


def _readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Plain Optuna studies: `zoo_ext.mlflow.track`") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the README's track section has no Python example"
    return match.group(1)


@pytest.mark.slow
def test_readme_example_runs_as_written(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "example.py").write_text(_readme_example())
    run([sys.executable, "example.py"], tmp_path, env={"MLFLOW_TRACKING_URI": store})
    study = optuna.load_study(study_name="quadratic", storage=f"sqlite:///{tmp_path / 'quadratic.db'}")
    assert len(study.trials) == 20 and {t.state.name for t in study.trials} <= set(STATUS)
    parents, children = _runs(store, "quadratic")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and sorted(children) == list(range(20))
    client = MlflowClient(store)
    for trial in study.trials:
        child = children[trial.number]
        assert child.info.status == STATUS[trial.state.name] and child.data.params == {"x": str(trial.params["x"])}
        history = client.get_metric_history(child.info.run_id, "intermediate_value")
        assert sorted((m.step, m.value) for m in history) == sorted(trial.intermediate_values.items())


def test_resume_reopens_the_one_parent_and_the_block_sets_its_status(uri: str, tmp_path: Path) -> None:
    storage = _journal(tmp_path / "resume.log")
    study = optuna.create_study(study_name="resumed", storage=storage)
    tags = {"team": "search", "tuned[0]": "yes"}
    with track(study, objective, tracking_uri=uri, experiment="resume", run_name="first session", tags=tags) as first:
        study.optimize(first, n_trials=2)
    client = MlflowClient(uri)
    parent = client.get_run(first.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["team"] == "search" and parent.data.tags["tuned_0_"] == "yes"
    assert study.user_attrs["zoo_ext_mlflow"]["experiment"] == "resume" and study.user_attrs["zoo_ext_uid"]

    again = optuna.load_study(study_name="resumed", storage=storage)  # as another process would
    second = track(again, objective, tracking_uri=uri, experiment="resume")
    assert second.parent_run_id == first.parent_run_id
    assert client.get_run(second.parent_run_id).info.status == "RUNNING"
    with pytest.raises(RuntimeError), second:
        again.optimize(second, n_trials=1)
        raise RuntimeError("the script broke after its trials")
    assert client.get_run(second.parent_run_id).info.status == "FAILED"
    parents, children = _runs(uri, "resume")
    assert [p.info.run_name for p in parents] == ["first session"] and sorted(children) == [0, 1, 2]
    second.close("KILLED")
    assert client.get_run(second.parent_run_id).info.status == "KILLED"
    with pytest.raises(ValueError, match="status must be one of FINISHED, FAILED, KILLED"):
        second.close("DONE")


def test_several_objectives_get_their_metric_names(uri: str) -> None:
    study = optuna.create_study(study_name="pareto", directions=["minimize", "maximize"])

    def two(trial: optuna.Trial) -> tuple[float, float]:
        x = trial.suggest_float("x", 0, 1)
        return x, 1 - x

    with track(study, two, tracking_uri=uri) as tracked:
        study.optimize(tracked, n_trials=2)
    _, children = _runs(uri, "pareto")
    for trial in study.trials:
        metrics = children[trial.number].data.metrics
        assert metrics == {"value_0": pytest.approx(trial.values[0]), "value_1": pytest.approx(trial.values[1])}
    parent = MlflowClient(uri).get_run(tracked.parent_run_id).data
    front = ",".join(str(n) for n in sorted(t.number for t in study.best_trials))
    assert parent.metrics["pareto_front_size"] == len(study.best_trials) and parent.tags["pareto_trials"] == front
    assert parent.metrics["best_value_0"] == min(t.values[0] for t in study.trials)
    assert parent.metrics["best_value_1"] == max(t.values[1] for t in study.trials)
    named = optuna.create_study(study_name="named", directions=["minimize", "maximize"])
    with track(named, two, tracking_uri=uri, metric_name=["loss", "size"]) as tracked:
        named.optimize(tracked, n_trials=1)
    assert set(_runs(uri, "named")[1][0].data.metrics) == {"loss", "size"}
    (parent_run,) = _runs(uri, "named")[0]
    assert {"best_loss", "best_size", "pareto_front_size"} <= set(parent_run.data.metrics)


def test_wrong_arguments_are_refused_before_any_run(uri: str) -> None:
    study = optuna.create_study(study_name="wrong", directions=["minimize", "minimize"])
    cases: list[tuple[Any, type[Exception], str]] = [
        (lambda: track("study", objective), TypeError, "study must be an optuna.Study; got str"),  # type: ignore[arg-type]
        (lambda: track(study, 3), TypeError, "objective must be callable; got int"),  # type: ignore[arg-type]
        (lambda: track(study, objective, metric_name=["loss"]), ValueError, "2 distinct string"),
        (lambda: track(study, objective, experiment=""), ValueError, "experiment must be a non-empty string"),
        (lambda: track(study, objective, metric_name="m", intermediate_metric="m_0"), ValueError, "also an objective"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            call()
    assert MlflowClient(uri).get_experiment_by_name("wrong") is None and not study.user_attrs


def test_sync_refuses_a_plain_study_never_tracked(tmp_path: Path) -> None:
    optuna.create_study(study_name="plain", storage=_journal(tmp_path / "plain.log")).optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=1
    )
    proc = run([*ZOO_EXT, "mlflow-sync", "--storage", "plain.log", "--study-name", "plain"], tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("zoo_ext: error: study 'plain' was not created by zoo_ext")
    assert "zoo_ext.mlflow.track" in proc.stderr


def test_track_names_the_studys_own_storage_in_its_sync_hint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """MLflow down: the warning's ``mlflow-sync`` command opens the tracked study's storage, whatever it is."""
    journal = str(tmp_path / "my runs.log")
    database = f"sqlite:///{tmp_path / 'my study.db'}"
    for storage, shown in ((_journal(Path(journal)), journal), (database, database), (None, None)):
        study = optuna.create_study(study_name="quad", storage=storage)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="zoo_ext.tracking"):
            track(study, lambda t: t.suggest_float("x", 0, 1), tracking_uri=f"http://127.0.0.1:{free_port()}")
        (warning,) = [r.getMessage() for r in caplog.records if r.name == "zoo_ext.tracking"]
        if shown is None:
            assert "in memory" in warning and "mlflow-sync" not in warning
            continue
        command = shlex.split(warning.split("`")[1])
        assert command[:6] == ["python", "-m", "zoo_ext", "mlflow-sync", "--storage", shown], command
        assert command[6:8] == ["--study-name", "quad"]
