"""Pruners of multi-objective studies: OptunaHub's multi_metric_pruner as zoo_ext builds it, and the rule names."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
from helpers import STOCK, load, optimize_args, run
from optuna.pruners import MedianPruner, PercentilePruner
from optuna.trial import TrialState

from zoo_ext.hub import load_hub_package
from zoo_ext.pruners import create_pruner, is_multi_objective_pruner, pruner_rule
from zoo_ext.registry import FactoryError, UnknownNameError

#: The study's objectives as zoo_ext passes them to ``create_pruner``: (name, direction).
OBJECTIVES = [("mean_reward", "maximize"), ("train_time", "minimize")]

#: A stand-in for OptunaHub's ``pruners/multi_metric_pruner`` (not reachable offline): its public interface, and a
#: joint mode that simply asks the base pruner about the first metric. Its classes live in a submodule, as the real
#: package's do (``_pruner``, ``_trial``: other names, for both can be loaded in one process).
STAND_IN = '''
import optuna
from optuna.pruners import BasePruner
from optuna.trial import TrialState, create_trial

_USER_ATTR_KEY = "multi_pruner:values"


def _values(trial, name):
    return {int(step): values[name] for step, values in trial.user_attrs.get(_USER_ATTR_KEY, {}).items()}


class MultiMetricPruner(BasePruner):
    """Prunes a multi-objective trial as ``base_pruner`` prunes a single-objective study of the first metric."""

    def __init__(self, base_pruner, *, metric_directions, joint):
        self._base_pruner = base_pruner
        self._metric_directions = dict(metric_directions)
        self._joint = joint

    def prune(self, study, trial):
        name, direction = next(iter(self._metric_directions.items()))
        synthetic = optuna.create_study(direction=direction)
        for done in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            steps = _values(done, name)
            synthetic.add_trial(create_trial(state=TrialState.COMPLETE, value=0.0, intermediate_values=steps))
        running = create_trial(state=TrialState.RUNNING, intermediate_values=_values(trial, name))
        return self._base_pruner.prune(synthetic, running)


class MultiMetricPrunerTrial:
    """Reports a dict of metrics per step in a user attribute, and asks the study's pruner."""

    def __init__(self, trial):
        self._trial = trial

    def report(self, value, step):
        data = dict(self._trial.user_attrs.get(_USER_ATTR_KEY, {}))
        data[str(step)] = {**data.get(str(step), {}), **value}
        self._trial.set_user_attr(_USER_ATTR_KEY, data)

    def should_prune(self):
        study = self._trial.study
        return study.pruner.prune(study, self._trial._get_latest_trial())
'''

STAND_IN_INIT = """
from ._stand_in import MultiMetricPruner, MultiMetricPrunerTrial

__all__ = ["MultiMetricPruner", "MultiMetricPrunerTrial"]
"""

PACKAGE = Path("package", "pruners", "multi_metric_pruner")


@pytest.fixture
def registry(tmp_path: Path) -> str:
    """A local OptunaHub registry folder holding the stand-in ``pruners/multi_metric_pruner``."""
    folder = tmp_path / "registry" / PACKAGE
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(STAND_IN_INIT)
    (folder / "_stand_in.py").write_text(STAND_IN)
    (folder / "README.md").write_text("# multi_metric_pruner\n")
    (folder / "LICENSE").write_text("MIT\n")
    return str(tmp_path / "registry")


def _multi_metric(
    registry: str, kwargs: dict[str, object], spec: str = "hub:multi_metric_pruner"
) -> optuna.pruners.BasePruner:
    return create_pruner(
        spec, kwargs, n_startup_trials=3, n_evaluations=9, objectives=OBJECTIVES, hub_registry=registry
    )


@pytest.mark.parametrize(
    "spec", ["hub:multi_metric_pruner", "hub:pruners/multi_metric_pruner", "hub:multi_metric_pruner:MultiMetricPruner"]
)
def test_multi_metric_pruner_gets_the_objectives_and_a_median_base_pruner(registry: str, spec: str) -> None:
    pruner = _multi_metric(registry, {}, spec)
    assert type(pruner).__name__ == "MultiMetricPruner"
    assert pruner._metric_directions == {"mean_reward": "maximize", "train_time": "minimize"}  # type: ignore[attr-defined]
    assert pruner._joint is True  # type: ignore[attr-defined]
    base = pruner._base_pruner  # type: ignore[attr-defined]
    assert type(base) is MedianPruner
    assert (base._n_startup_trials, base._n_warmup_steps) == (3, 3)  # the study's budget, as --pruner median


@pytest.mark.parametrize("joint", [False, "false", "False"])
def test_multi_metric_base_pruner_by_name_and_per_metric_mode(registry: str, joint: object) -> None:
    pruner = _multi_metric(registry, {"base_pruner": "percentile", "joint": joint})
    base = pruner._base_pruner  # type: ignore[attr-defined]
    assert type(base) is PercentilePruner
    assert (base._percentile, base._n_startup_trials, base._n_warmup_steps) == (25.0, 3, 3)
    assert pruner._joint is False  # type: ignore[attr-defined]
    assert pruner_rule(pruner, 0) == "MultiMetricPruner (per metric)"


def test_multi_metric_directions_come_from_the_objectives_only(registry: str) -> None:
    with pytest.raises(FactoryError, match=r"zoo_ext sets metric_directions from --objectives \(\{'mean_reward'"):
        _multi_metric(registry, {"metric_directions": {"mean_reward": "maximize"}})


def test_unknown_base_pruner_lists_the_valid_names(registry: str) -> None:
    with pytest.raises(UnknownNameError) as info:
        _multi_metric(registry, {"base_pruner": "medain"})
    message = str(info.value)
    assert "unknown pruner 'medain' for --pruner-kwargs base_pruner of 'hub:multi_metric_pruner'." in message
    assert "Did you mean 'median'?" in message
    assert (
        "Valid choices: halving, hyperband, median, none, patient, percentile, racing, threshold, wilcoxon" in message
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patience": 2}, r"takes no keyword argument 'patience'\. It accepts: base_pruner, metric_directions, joint"),
        ({"joint": "maybe"}, r"--pruner-kwargs joint takes true or false, got 'maybe'"),
        ({"base_pruner": 3}, r"--pruner-kwargs base_pruner takes a pruner's name, got 3"),
    ],
)
def test_bad_multi_metric_kwargs_are_refused(registry: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(FactoryError, match=message):
        _multi_metric(registry, kwargs)


def test_multi_metric_pruner_needs_the_objectives(registry: str) -> None:
    with pytest.raises(FactoryError, match="'hub:multi_metric_pruner' needs the study's objectives"):
        create_pruner("hub:multi_metric_pruner", {}, n_startup_trials=3, n_evaluations=9, hub_registry=registry)


def _prunes_a_multi_objective_study(pruner: optuna.pruners.BasePruner, trial_class: type) -> optuna.Study:
    """Run 12 trials of a 2-objective study reporting both metrics at 4 steps through ``trial_class``; return it."""

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        reporter = trial_class(trial)
        x = trial.suggest_float("x", -5.0, 5.0)
        for step in range(4):
            reporter.report({"mean_reward": step - (x - 1.0) ** 2, "train_time": (x + 1.0) ** 2}, step)
            if reporter.should_prune():
                raise optuna.TrialPruned()
        return 3.0 - (x - 1.0) ** 2, (x + 1.0) ** 2

    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler, pruner=pruner)
    study.optimize(objective, n_trials=12)
    return study


def test_the_stand_in_prunes_a_multi_objective_study(registry: str) -> None:
    pruner = create_pruner("hub:multi_metric_pruner", {}, n_startup_trials=2, n_evaluations=4,
                           objectives=OBJECTIVES, hub_registry=registry)  # fmt: skip
    module = load_hub_package("pruners/multi_metric_pruner", hub_registry=registry)
    study = _prunes_a_multi_objective_study(pruner, module.MultiMetricPrunerTrial)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned and pruner_rule(study.pruner, pruned[0].number) == "MultiMetricPruner (joint)"
    assert is_multi_objective_pruner(pruner)


_REAL_REGISTRY = os.environ.get("ZOO_EXT_TEST_HUB_REGISTRY", "")


@pytest.mark.skipif(
    not (_REAL_REGISTRY and (Path(_REAL_REGISTRY) / PACKAGE / "__init__.py").exists()),
    reason="ZOO_EXT_TEST_HUB_REGISTRY names no registry folder holding package/pruners/multi_metric_pruner",
)
def test_the_real_multi_metric_pruner_prunes_a_multi_objective_study() -> None:
    pruner = create_pruner("hub:multi_metric_pruner", {"base_pruner": "median"}, n_startup_trials=2, n_evaluations=4,
                           objectives=OBJECTIVES, hub_registry=_REAL_REGISTRY)  # fmt: skip
    module = load_hub_package("pruners/multi_metric_pruner", hub_registry=_REAL_REGISTRY)
    assert isinstance(pruner, module.MultiMetricPruner)
    study = _prunes_a_multi_objective_study(pruner, module.MultiMetricPrunerTrial)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned, [t.state.name for t in study.trials]
    assert set(pruned[0].user_attrs["multi_pruner:values"]["0"]) == {"mean_reward", "train_time"}
    assert pruner_rule(study.pruner, pruned[0].number) == "MultiMetricPruner (joint)"


@pytest.mark.parametrize(
    ("name", "multi_objective"),
    [("racing", True), ("none", True), ("median", False), ("wilcoxon", False), ("hyperband", False)],
)
def test_which_pruners_can_prune_several_objectives(name: str, multi_objective: bool) -> None:
    pruner = create_pruner(name, {}, n_startup_trials=2, n_evaluations=3)
    assert is_multi_objective_pruner(pruner) is multi_objective


def test_any_other_pruner_is_its_rule() -> None:
    study = optuna.create_study(direction="maximize", pruner=MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    for value in (10.0, 1.0):
        trial = study.ask()
        trial.report(value, 0)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value)
    assert study.trials[-1].state == TrialState.PRUNED
    assert pruner_rule(study.pruner, study.trials[-1].number) == "MedianPruner"


#: A stand-in whose decision the test knows: it prunes trial 1 at its first report, whatever the values.
ODD_STAND_IN = (
    STAND_IN
    + """

_Joint = MultiMetricPruner


class MultiMetricPruner(_Joint):
    def prune(self, study, trial):
        return trial.number == 1 and bool(trial.user_attrs.get(_USER_ATTR_KEY))
"""
)


@pytest.mark.slow
def test_a_multi_objective_study_reports_every_objective_per_evaluation_to_the_hub_pruner(
    workdir: Path, registry: str
) -> None:
    (Path(registry) / PACKAGE / "_stand_in.py").write_text(ODD_STAND_IN)
    args = [*optimize_args("a2c", "CartPole-v1", n=1024, trials=3), "--n-seeds", "2", "--no-mlflow"]
    args += ["--objectives", "mean_reward", "n_params", "--pruner", "hub:multi_metric_pruner"]
    proc = run([*STOCK, *args, "--hub-registry", registry, "-params", "n_envs:2"], workdir)
    assert "Pruner: MultiMetricPruner" in proc.stdout and "disabled" not in proc.stderr
    trials = load(workdir).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "COMPLETE"]
    first = trials[0]
    reported = first.user_attrs["multi_pruner:values"]
    # 2 seeds x 2 evaluations at steps offset + index, as one objective would report them; trial.report never
    assert sorted(reported, key=int) == ["1", "2", "3", "4"] and first.intermediate_values == {}
    curves = first.user_attrs["evaluations_per_seed"]
    assert [reported[s]["mean_reward"] for s in ("1", "2")] == [p["mean_reward"] for p in curves[0]]
    assert {v["n_params"] for v in reported.values()} == {first.user_attrs["n_params"]}
    assert trials[1].user_attrs["prune_rule"] == "MultiMetricPruner (joint)"
    assert list(trials[1].user_attrs["multi_pruner:values"]) == ["1"]
    assert "Pruned by: MultiMetricPruner (joint) 1" in proc.stdout
