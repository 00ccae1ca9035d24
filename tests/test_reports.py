"""Reports rate parameter importances with PED-ANOVA: conditional parameters too, each objective's own direction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.importance import PedAnovaImportanceEvaluator

from zoo_ext.reports import importance_evaluator, write_report


def _conditional(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    if trial.suggest_categorical("kind", ["linear", "flat"]) == "linear":
        return x + trial.suggest_float("slope", 0.0, 1.0)  # conditional: only in "linear" trials
    return x


@pytest.fixture
def evaluations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, optuna.Study, list | None, dict[str, float]]]:
    """Record each PED-ANOVA evaluation: evaluator, study, target value of each trial (None: no target), importances.

    The real evaluator still runs.
    """
    calls: list[tuple[Any, optuna.Study, list | None, dict[str, float]]] = []
    evaluate = PedAnovaImportanceEvaluator.evaluate

    def spy(self: Any, study: optuna.Study, params: Any = None, *, target: Any = None) -> dict[str, float]:
        result = evaluate(self, study, params, target=target)
        targets = None if target is None else [target(t) for t in study.trials]  # Optuna's target is late-bound
        calls.append((self, study, targets, result))
        return result

    monkeypatch.setattr(PedAnovaImportanceEvaluator, "evaluate", spy)
    return calls


def test_conditional_space_gets_ped_anova_importances(tmp_path: Path, evaluations: list) -> None:
    assert isinstance(importance_evaluator(), PedAnovaImportanceEvaluator)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(_conditional, n_trials=16)
    assert {len(t.params) for t in study.trials} == {2, 3}  # "slope" is missing from some trials

    written = {p.name for p in write_report(study, tmp_path)}

    assert {"param_importances.html", "param_importances.png"} <= written
    assert len(evaluations) == 2  # one for the HTML plot, one for the PNG plot
    for evaluator, evaluated, targets, importances in evaluations:
        assert type(evaluator) is PedAnovaImportanceEvaluator
        assert evaluated is study
        assert targets is None  # one objective: PED-ANOVA follows the study's direction itself
        assert set(importances) == {"x", "kind", "slope"}
    assert "slope" in (tmp_path / "param_importances.html").read_text()


def test_multiobjective_importances_follow_each_objective_direction(tmp_path: Path, evaluations: list) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    study.set_user_attr("objectives", ["mean_reward", "n_params"])
    study.optimize(lambda t: (_conditional(t), t.suggest_int("width", 1, 64)), n_trials=12)

    written = {p.name for p in write_report(study, tmp_path)}

    assert {"param_importances.html", "param_importances.png"} <= written
    assert len(evaluations) == 4  # (HTML, PNG) x 2 objectives
    for i, (evaluator, _, targets, importances) in enumerate(evaluations):
        assert type(evaluator) is PedAnovaImportanceEvaluator
        assert set(importances) == {"x", "kind", "slope", "width"}
        # PED-ANOVA rates reaching low target values: the maximised mean_reward is negated, n_params is not.
        objective, sign = (0, -1.0) if i % 2 == 0 else (1, 1.0)
        assert targets == [sign * t.values[objective] for t in study.trials]
    html = (tmp_path / "param_importances.html").read_text()
    assert '"name":"mean_reward"' in html and '"name":"n_params"' in html
