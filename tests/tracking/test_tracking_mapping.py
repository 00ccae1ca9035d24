"""The pure Optuna → MLflow mapping (no store): keys, statuses, a trial's metrics, params, tags; the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import optuna
import pytest
from mlflow.utils.validation import _validate_metric_name, _validate_param_name, _validate_tag_name
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from zoo_ext import tracking
from zoo_ext.tracking import _mapping

LONG = "p" * 300
BAD_NAMES = ["net_arch[0]", "lr (log)", LONG, "", ".", "..", "../up", "a//b", "/lead", "trail/"]
PACKAGE = Path(tracking.__file__).parent
PLAIN = tracking.TrialMapping(zoo=False, value_names=("loss",), intermediate_metric="intermediate_value")


def test_mlflow_keys_are_accepted_by_mlflow_and_unique() -> None:
    names = [*BAD_NAMES, "net_arch_0_", LONG + "q", "ok/name:1 x-y.z"]
    keys = tracking.mlflow_keys(names)
    assert len(set(keys.values())) == len(names)
    for key in keys.values():
        for validate in (_validate_param_name, _validate_metric_name, _validate_tag_name):
            validate(key)
        assert 0 < len(key) <= 250
    assert keys["net_arch_0_"] == "net_arch_0_" and keys["ok/name:1 x-y.z"] == "ok/name:1 x-y.z"  # valid: unchanged
    assert keys["lr (log)"] == "lr _log_" and keys[""] == "_" and keys["a//b"] == "a/b"
    assert keys["net_arch[0]"].startswith("net_arch_0_-")  # "net_arch_0_" is taken by the valid name
    assert keys[LONG].startswith("p" * 241 + "-") and keys[LONG] != keys[LONG + "q"]
    assert tracking.mlflow_key(LONG) == keys[LONG]  # deterministic: the same key in every run


def test_final_states_map_to_run_statuses() -> None:
    assert tracking.STATUS[TrialState.COMPLETE] == "FINISHED"
    assert tracking.STATUS[TrialState.PRUNED] == "KILLED"
    assert tracking.STATUS[TrialState.FAIL] == "FAILED"


def test_value_names_default_to_value_and_value_i() -> None:
    assert tracking.value_names("value", 1) == ("value",)
    assert tracking.value_names("value", 3) == ("value_0", "value_1", "value_2")
    assert tracking.value_names(["loss", "size"], 2) == ("loss", "size")
    for wrong in (["loss"], ["a", "a"], ["a", 1]):
        with pytest.raises(ValueError, match="one per objective"):
            tracking.value_names(wrong, 2)  # type: ignore[arg-type]


def _plain_trial(state: TrialState = TrialState.COMPLETE, **user_attrs: object) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=state,
        value=0.5 if state == TrialState.COMPLETE else None,
        params={"x": 0.25, "n": 3},
        distributions={"x": FloatDistribution(0, 1), "n": IntDistribution(1, 5)},
        intermediate_values={2: 0.9, 0: 1.5, 1: 1.1},
        user_attrs=dict(user_attrs),
    )


def test_a_plain_trial_gives_intermediate_values_values_and_user_attrs() -> None:
    trial = _plain_trial(hyperparams={"lr": 0.1}, evaluations=[1, 2], size=7, label="big")
    points = _mapping.trial_metrics(trial, trial.values, PLAIN)
    assert points == [
        ("intermediate_value", 1.5, 0),
        ("intermediate_value", 1.1, 1),
        ("intermediate_value", 0.9, 2),
        ("loss", 0.5, 0),
        ("size", 7.0, 0),
    ]
    # Plain Optuna: "hyperparams" and "evaluations" are ordinary user attributes, no RL record or curve.
    assert _mapping.trial_params(trial, PLAIN) == {"x": "0.25", "n": "3"}
    tags = _mapping.trial_tags(trial, trial.state, None, PLAIN)
    assert tags == {
        "optuna.trial_state": "COMPLETE",
        "user_attr.hyperparams": '{"lr": 0.1}',
        "user_attr.evaluations": "[1, 2]",
        "user_attr.size": "7",
        "user_attr.label": "big",
    }


def test_a_trial_has_no_empty_tag() -> None:
    trial = _plain_trial(TrialState.FAIL, label="", fail_reason="", size=7)
    tags = _mapping.trial_tags(trial, trial.state, None, PLAIN)
    assert tags == {"optuna.trial_state": "FAIL", "user_attr.size": "7"}  # an empty reason says nothing either
    tags = _mapping.trial_tags(trial, trial.state, "ValueError: bad x", PLAIN)  # the given one replaces it
    assert tags["user_attr.fail_reason"] == "ValueError: bad x" and "user_attr.label" not in tags


def test_a_failed_trial_carries_its_reason() -> None:
    trial = _plain_trial(TrialState.FAIL)
    assert _mapping.trial_metrics(trial, None, tracking.TrialMapping(zoo=False, value_names=("v",))) == []
    tags = _mapping.trial_tags(trial, trial.state, "ValueError: bad x", PLAIN)
    assert tags["user_attr.fail_reason"] == "ValueError: bad x"
    assert tags["mlflow.note.content"] == "FAILED: ValueError: bad x" and tags["optuna.trial_state"] == "FAIL"
    recorded = _plain_trial(TrialState.FAIL, fail_reason="recorded")  # the trial's own reason wins
    assert _mapping.trial_tags(recorded, recorded.state, "other", PLAIN)["user_attr.fail_reason"] == "recorded"


def test_a_zoo_trial_gives_its_curve_record_and_objectives() -> None:
    trial = _plain_trial(
        hyperparams={"learning_rate": 0.01, "policy_kwargs": {"net_arch": [64]}, "x": 0.5},
        evaluations=[{"timesteps": 100, "mean_reward": -5.0, "std_reward": 1.0}],
        objectives=["mean_reward"],
        train_time=2.0,
    )
    points = _mapping.trial_metrics(trial, trial.values, tracking.ZOO)
    assert ("eval/mean_reward", -5.0, 100) in points and ("eval/std_reward", 1.0, 100) in points
    assert ("mean_reward", 0.5, 0) in points and ("steps_per_second", 50.0, 0) in points
    assert not [p for p in points if p[0] == "intermediate_value"]
    params = _mapping.trial_params(trial, tracking.ZOO)
    assert params["learning_rate"] == "0.01" and params["policy_kwargs.net_arch"] == "[64]"
    assert params["kwargs.x"] == "0.5" and params["x"] == "0.25"  # the kwarg differs from the Optuna param
    assert "user_attr.hyperparams" not in _mapping.trial_tags(trial, trial.state, None, tracking.ZOO)


def test_the_mapping_round_trips_through_a_study_attribute() -> None:
    assert tracking.TrialMapping.from_attr(PLAIN.to_attr()) == PLAIN


def test_study_progress_counts_trials_and_keeps_the_best_one() -> None:
    progress = _mapping.StudyProgress([StudyDirection.MAXIMIZE], ["mean_reward"])
    progress.add(0, TrialState.PRUNED, None, {"x": 0.5, "kind": "a"})
    assert progress.metrics() == {"n_complete": 0, "n_pruned": 1, "n_failed": 0}  # no value yet: no best
    assert progress.tags() == {} and not progress.partial
    progress.add(1, TrialState.COMPLETE, [1.0], {"x": 0.1, "kind": "a"})
    assert progress.tags() == {"best_trial": "1", "best_params.x": "0.1", "best_params.kind": "a"}
    assert not progress.partial
    progress.add(2, TrialState.FAIL, None, {"x": 0.9})
    progress.add(3, TrialState.COMPLETE, [3.0], {"x": 0.3})  # a conditional space: no "kind" in this trial
    progress.add(4, TrialState.COMPLETE, [3.0], {"x": 0.4, "kind": "b"})  # a tie keeps the first best trial
    progress.add(5, TrialState.COMPLETE, [-2.0], {"x": 0.7, "kind": "b"})
    assert progress.metrics() == {"n_complete": 4, "n_pruned": 1, "n_failed": 1, "best_value": 3.0}
    # The best trial took no "kind" branch: no empty best_params.kind, and the parent run's old one is stale.
    assert progress.tags() == {"best_trial": "3", "best_params.x": "0.3"} and progress.partial
    progress.add(6, TrialState.COMPLETE, [4.0], {"x": 0.2, "kind": ""})  # an empty choice gives no tag either
    assert progress.tags() == {"best_trial": "6", "best_params.x": "0.2"} and progress.partial
    minimize = _mapping.StudyProgress([StudyDirection.MINIMIZE], ["loss"])
    for number, value in enumerate([4.0, 2.0, 3.0]):
        minimize.add(number, TrialState.COMPLETE, [value], {"x": value})
    assert minimize.metrics()["best_value"] == 2.0 and minimize.tags()["best_trial"] == "1"


def test_study_progress_of_several_objectives_keeps_the_pareto_front() -> None:
    progress = _mapping.StudyProgress([StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE], ["loss", "size"])
    progress.add(0, TrialState.FAIL, None, {})
    assert progress.metrics() == {"n_complete": 0, "n_pruned": 0, "n_failed": 1, "pareto_front_size": 0}
    for number, values in enumerate([(1.0, 1.0), (2.0, 2.0), (0.5, 0.5), (2.0, 1.0), (1.0, 1.0)], start=1):
        progress.add(number, TrialState.COMPLETE, values, {})  # trial 4 is dominated by 1; 5 ties 1: both optimal
    assert progress.metrics() == {"n_complete": 5, "n_pruned": 0, "n_failed": 1, "pareto_front_size": 4,
                                  "best_loss": 0.5, "best_size": 2.0}  # fmt: skip
    assert progress.tags() == {"pareto_trials": "1,2,3,5"} and not progress.partial  # no best_params
    progress.add(6, TrialState.COMPLETE, (0.4, 3.0), {})  # dominates every other trial
    assert progress.metrics()["pareto_front_size"] == 1 and progress.tags() == {"pareto_trials": "6"}


def test_objective_names_come_from_the_mapping_or_the_zoo_study() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    assert _mapping.objective_names(study, tracking.ZOO) == ("mean_reward_0", "mean_reward_1")
    study.set_user_attr("objectives", ["mean_reward", "n_params"])
    assert _mapping.objective_names(study, tracking.ZOO) == ("mean_reward", "n_params")
    plain = tracking.TrialMapping(zoo=False, value_names=("loss", "size"))
    assert _mapping.objective_names(study, plain) == ("loss", "size")


def _imports(path: Path) -> set[str]:
    """Return every module ``path`` imports, at any depth of the code (``from x import y`` gives x and x.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_package_is_layered_mapping_at_the_bottom() -> None:
    allowed = {
        "_mapping": set(),
        "_connection": set(),
        "_queue": {"_connection"},
        "_names": {"_mapping", "_connection"},
        "_study_run": {"_mapping", "_connection", "_names"},
        "_trial_runs": {"_mapping", "_connection", "_names", "_study_run"},
        "_population": {"_mapping", "_trial_runs"},
        "_tracker": {"_mapping", "_connection", "_queue", "_names", "_study_run", "_trial_runs", "_population"},
        "_objective": {"_mapping", "_connection", "_trial_runs", "_tracker"},
        "_sync": {"_mapping", "_study_run", "_tracker", "_objective"},
        "_mirror": {"_mapping", "_tracker", "_trial_runs"},
    }
    assert sorted(p.stem for p in PACKAGE.glob("*.py")) == ["__init__", *sorted(allowed)]
    forbidden = ("rl_zoo3", "stable_baselines3", "torch", "gymnasium", "zoo_ext.study", "zoo_ext.trial",
                 "zoo_ext.integration", "zoo_ext.adapter", "zoo_ext.mlflow")  # fmt: skip
    for name, below in allowed.items():
        imports = _imports(PACKAGE / f"{name}.py")
        siblings = {m.split(".")[2] for m in imports if m.startswith("zoo_ext.tracking.")}
        assert siblings <= below, f"{name} imports {siblings - below}"
        assert not [m for m in imports if m.startswith(forbidden)], name
    mapping_imports = _imports(PACKAGE / "_mapping.py")
    assert not [m for m in mapping_imports if m.startswith("mlflow") and not m.startswith("mlflow.utils.validation")]
    assert not {"tempfile", "urllib.request", "threading", "filelock"} & mapping_imports  # no client, no I/O
