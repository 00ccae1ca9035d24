"""Seed racing (--seed-racing): the racing pruner, its options, and a bad trial raced out by the stock command."""

from __future__ import annotations

import argparse
import math
import pickle
import statistics
from collections.abc import Sequence
from pathlib import Path

import optuna
import pytest
from helpers import STOCK, load, optimize_args, run

from zoo_ext import options
from zoo_ext.pruners import RacingPruner, create_pruner, pruner_rule
from zoo_ext.study._resume import fingerprint
from zoo_ext.trial import racing_seeds, trial_seeds


def _study(direction: str = "maximize", **kwargs: float) -> optuna.Study:
    return optuna.create_study(direction=direction, pruner=RacingPruner(**kwargs))  # type: ignore[arg-type]


def _complete(study: optuna.Study, scores: Sequence[float]) -> None:
    """Add a finished trial whose seed ``k`` scored ``scores[k]`` (its value: their mean)."""
    trial = study.ask()
    for k, score in enumerate(scores):
        trial.report(score, k)
    study.tell(trial, sum(scores) / len(scores))


def _race(study: optuna.Study, scores: Sequence[float]) -> int | None:
    """Report ``scores`` seed by seed like a racing trial; return the seed index it is pruned at, or None."""
    trial = study.ask()
    for k, score in enumerate(scores):
        trial.report(score, k)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return k
    study.tell(trial, sum(scores) / len(scores))
    return None


def test_a_dominated_trial_is_raced_out_at_its_first_seed() -> None:
    study = _study()
    _complete(study, [480.0, 500.0, 450.0])
    assert _race(study, [130.0, 9.0, 500.0]) == 0  # its only seed (130) is below the best trial's worst (450)
    assert _race(study, [470.0, 510.0, 440.0]) is None  # as good as the best: never pruned
    assert _race(study, [460.0, 130.0, 20.0]) is None  # one seed reaches the best trial's range: no proof yet


def test_minimizing_prunes_the_trial_above_the_best_trials_worst_seed() -> None:
    study = _study("minimize")
    _complete(study, [1.0, 2.0, 3.0])
    assert _race(study, [5.0, 4.0, 0.0]) == 0
    assert _race(study, [2.5, 4.0, 0.0]) is None


def test_the_wilcoxon_test_takes_over_when_seeds_overlap() -> None:
    """Slightly worse on every seed, inside the best trial's range: pruned once 2^-n < 0.1, at the 4th seed."""
    study = _study()
    best = [500.0, 100.0, 200.0, 300.0, 400.0]
    _complete(study, best)
    assert _race(study, [b - 5 for b in best]) == 3


def test_nothing_is_pruned_before_min_seeds_or_without_a_best_trial() -> None:
    study = _study(min_seeds=3)
    assert _race(study, [1.0, 1.0, 1.0]) is None  # no completed trial yet
    _complete(study, [100.0, 100.0, 100.0, 100.0])
    assert _race(study, [1.0, 1.0, 1.0, 1.0]) == 2


def test_the_rule_that_pruned_a_trial_is_named() -> None:
    study = _study()
    best = [500.0, 100.0, 200.0, 300.0, 400.0]
    _complete(study, best)
    assert _race(study, [50.0]) == 0
    assert pruner_rule(study.pruner, study.trials[-1].number) == "racing: dominated by the best trial"
    assert _race(study, [b - 5 for b in best]) == 3
    assert pruner_rule(study.pruner, study.trials[-1].number) == "racing: wilcoxon"
    assert _race(study, best) is None
    assert pruner_rule(study.pruner, study.trials[-1].number) == "RacingPruner"  # not pruned by a racing rule


def test_a_racing_study_pickles_with_its_rules() -> None:
    """The summary pickles the study (its report): the pruner's lock stays behind, the rules go with it."""
    study = _study()
    _complete(study, [500.0, 500.0])
    assert _race(study, [50.0]) == 0
    copy = pickle.loads(pickle.dumps(study.pruner))
    assert pruner_rule(copy, study.trials[-1].number) == "racing: dominated by the best trial"
    assert copy.prune(study, study.trials[-1])  # and it still prunes (with a lock of its own)


#: The objectives of the multi-objective racing studies, in the order of their directions.
REWARD_TIME = (("mean_reward", "maximize"), ("train_time", "minimize"))


def _pareto_study(objectives: Sequence[tuple[str, str]] = REWARD_TIME, **kwargs: int) -> optuna.Study:
    directions = [optuna.study.StudyDirection[d.upper()] for _, d in objectives]
    return optuna.create_study(directions=directions, pruner=RacingPruner(**kwargs))


def _names(study: optuna.Study, objectives: Sequence[tuple[str, str]]) -> list[str]:
    assert [d for _, d in objectives] == [d.name.lower() for d in study.directions]
    return [name for name, _ in objectives]


def _front(
    study: optuna.Study, per_seed: dict[str, list[float]], objectives: Sequence[tuple[str, str]] = REWARD_TIME
) -> optuna.trial.FrozenTrial:
    """Add a completed trial whose seeds scored ``per_seed`` (objective name -> scores; its values: their means)."""
    names = _names(study, objectives)
    values = [statistics.fmean(per_seed[name]) for name in names]
    attrs = {"objectives": names, "per_seed": per_seed}
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=values, user_attrs=attrs))
    return study.trials[-1]


def _race_pareto(
    study: optuna.Study, per_seed: dict[str, list[float]], objectives: Sequence[tuple[str, str]] = REWARD_TIME
) -> int | None:
    """Run ``per_seed`` seed by seed as the objective does (``per_seed`` so far, then ``prune``); return the seed index
    it is pruned at, or None (it completes with the means)."""
    names = _names(study, objectives)
    trial = study.ask()
    trial.set_user_attr("objectives", names)
    for k in range(len(per_seed[names[0]])):
        trial.set_user_attr("per_seed", {name: per_seed[name][: k + 1] for name in names})
        if study.pruner.prune(study, study.trials[-1]):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return k
    study.tell(trial, [statistics.fmean(per_seed[name]) for name in names])
    return None


def test_a_trial_pareto_dominated_on_every_seed_is_raced_out() -> None:
    study = _pareto_study()
    _front(study, {"mean_reward": [480.0, 500.0, 450.0], "train_time": [10.0, 12.0, 11.0]})  # worst seed: 450, 12 s
    assert _race_pareto(study, {"mean_reward": [130.0, 9.0, 500.0], "train_time": [20.0, 5.0, 5.0]}) == 0
    assert pruner_rule(study.pruner, study.trials[-1].number) == "racing: pareto-dominated"
    # As slow as the worst seed and lower: dominated (no better on any objective, worse on one).
    assert _race_pareto(study, {"mean_reward": [440.0, 500.0], "train_time": [12.0, 1.0]}) == 0
    # 3 seeds dominated, then a 4th: pruned at the 1st seed already (every seed run so far is dominated).
    assert _race_pareto(study, {"mean_reward": [1.0] * 4, "train_time": [99.0] * 4}) == 0


@pytest.mark.parametrize(
    "per_seed",
    [
        {"mean_reward": [600.0, 100.0, 100.0], "train_time": [20.0, 20.0, 20.0]},  # seed 0 earns more
        {"mean_reward": [100.0, 100.0, 100.0], "train_time": [5.0, 20.0, 20.0]},  # seed 0 is faster
        {"mean_reward": [450.0, 100.0, 100.0], "train_time": [12.0, 20.0, 20.0]},  # seed 0 ties the worst seed
    ],
)
def test_one_seed_not_dominated_keeps_the_trial(per_seed: dict[str, list[float]]) -> None:
    study = _pareto_study()
    _front(study, {"mean_reward": [480.0, 500.0, 450.0], "train_time": [10.0, 12.0, 11.0]})
    assert _race_pareto(study, per_seed) is None  # seeds 1 and 2 alone would be dominated


def test_only_the_pareto_front_can_race_a_trial_out() -> None:
    study = _pareto_study()
    _front(study, {"mean_reward": [900.0, 100.0], "train_time": [1.0, 1.0]})  # mean 500 in 1 s, worst seed 100
    behind = _front(study, {"mean_reward": [300.0, 300.0], "train_time": [5.0, 5.0]})  # 300 in 5 s: dominated
    assert behind.number not in [t.number for t in study.best_trials]
    # Below the dominated trial's worst seed (300 in 5 s) on both objectives, above the front's worst (100 in 1 s).
    assert _race_pareto(study, {"mean_reward": [200.0, 200.0], "train_time": [6.0, 6.0]}) is None


def test_pareto_racing_waits_for_min_seeds_and_a_front() -> None:
    study = _pareto_study(min_seeds=2)
    assert _race_pareto(study, {"mean_reward": [1.0, 1.0, 1.0], "train_time": [99.0, 99.0, 99.0]}) is None
    _front(study, {"mean_reward": [500.0, 500.0, 500.0], "train_time": [10.0, 10.0, 10.0]})
    assert _race_pareto(study, {"mean_reward": [1.0, 1.0, 1.0], "train_time": [99.0, 99.0, 99.0]}) == 1


def test_pareto_racing_reads_the_objectives_in_the_directions_order() -> None:
    time_reward = (("train_time", "minimize"), ("mean_reward", "maximize"))
    study = _pareto_study(time_reward)
    _front(study, {"mean_reward": [480.0, 450.0], "train_time": [10.0, 12.0]}, time_reward)
    assert _race_pareto(study, {"mean_reward": [400.0, 400.0], "train_time": [20.0, 20.0]}, time_reward) == 0
    assert _race_pareto(study, {"mean_reward": [400.0, 400.0], "train_time": [5.0, 5.0]}, time_reward) is None


def test_pareto_racing_never_prunes_on_a_non_finite_score() -> None:
    study = _pareto_study()
    _front(study, {"mean_reward": [500.0, math.inf], "train_time": [10.0, 10.0]})  # its worst seed: 500 in 10 s
    running = study.ask()
    running.set_user_attr("objectives", ["mean_reward", "train_time"])
    assert not study.pruner.prune(study, study.trials[-1])  # no scores yet
    running.set_user_attr("per_seed", {"mean_reward": [100.0], "train_time": [20.0]})
    assert not study.pruner.prune(study, study.trials[-1])  # dominated by a front trial with an infinite seed
    _front(study, {"mean_reward": [500.0, 500.0], "train_time": [9.0, 9.0]})
    assert study.pruner.prune(study, study.trials[-2])  # a finite front trial dominates it
    running.set_user_attr("per_seed", {"mean_reward": [100.0, -math.inf], "train_time": [20.0, 20.0]})
    assert not study.pruner.prune(study, study.trials[-2])


def test_racing_is_a_registered_pruner_taking_its_own_kwargs() -> None:
    pruner = create_pruner("racing", {"min_seeds": 3}, n_startup_trials=5, n_evaluations=3)
    assert isinstance(pruner, RacingPruner) and pruner._min_seeds == 3
    with pytest.raises(Exception, match="min_seeds"):
        create_pruner("racing", {"n_warmup_steps": 1}, n_startup_trials=5, n_evaluations=3)


def _zoo_args(**given: object) -> argparse.Namespace:
    """Return a namespace as zoo_ext's parser makes it: every zoo_ext option present, None when not given."""
    return argparse.Namespace(**{**{option.dest: None for option in options.OPTIONS}, **given})


def test_racing_defaults_to_the_racing_pruner_unless_one_is_given() -> None:
    assert options.resolve(_zoo_args(n_seeds=3, seed_racing=True), {}, algo="a2c").pruner == "racing"
    given = options.resolve(_zoo_args(n_seeds=3, seed_racing=True, pruner="wilcoxon"), {}, algo="a2c")
    assert given.pruner == "wilcoxon"
    from_yaml = options.resolve(_zoo_args(), {"n_seeds": 4, "seed_racing": True, "pruner": "median"}, algo="a2c")
    assert from_yaml.seed_racing and from_yaml.pruner == "median"
    # The stock parser (activation by --gym-packages): --pruner at its stock default counts as not given.
    stock = options.resolve(argparse.Namespace(pruner="median"), {"n_seeds": 2, "seed_racing": True}, algo="a2c")
    assert stock.pruner == "racing"
    assert options.resolve(_zoo_args(n_seeds=3), {}, algo="a2c").pruner == "median"  # today's default


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"seed_racing": True}, "--seed-racing races a trial's seeds: it needs --n-seeds of at least 2, got 1"),
        ({"pruner": "racing", "n_seeds": 3}, "--pruner 'racing' compares the seeds of trials: it needs --seed-racing"),
    ],
)
def test_racing_without_what_it_needs_is_refused(given: dict[str, object], message: str) -> None:
    with pytest.raises(options.OptionError, match=message):
        options.resolve(_zoo_args(**given), {}, algo="a2c")


def test_racing_several_objectives_uses_the_racing_pruner() -> None:
    given = _zoo_args(n_seeds=3, seed_racing=True, objectives=["mean_reward", "train_time"])
    assert options.resolve(given, {}, algo="a2c").pruner == "racing"  # Pareto racing: see the tests above


def test_every_racing_trial_trains_the_same_seeds() -> None:
    assert racing_seeds(7, 3) == [7, 8, 9]
    assert trial_seeds(7, 1, 3) == [10, 11, 12]  # without racing each trial has its own


def test_a_racing_study_is_not_resumed_without_racing() -> None:
    racing = options.resolve(_zoo_args(n_seeds=3, seed_racing=True), {}, algo="a2c")
    assert fingerprint(racing, "a2c")["seed_racing"] is True
    assert "seed_racing" not in fingerprint(options.resolve(_zoo_args(n_seeds=3), {}, algo="a2c"), "a2c")


@pytest.mark.slow
def test_stock_command_refuses_racing_one_seed_before_training(workdir: Path) -> None:
    proc = run([*STOCK, *optimize_args("a2c", "CartPole-v1"), "--seed-racing"], workdir, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "zoo_ext: error: --seed-racing races a trial's seeds: it needs --n-seeds of at least 2, got 1" in proc.stderr
    assert not (workdir / "study.log").exists()


#: Trial 0 learns CartPole in 8k steps on every seed (500); trial 1's learning rate cannot learn.
RACE_SPACE = """
def space(trial, n_actions, n_envs, additional_args):
    trial.suggest_float("learning_rate", 1e-9, 1e-2, log=True)
    return {"learning_rate": 3e-3 if trial.number == 0 else 1e-9}
"""


@pytest.mark.slow
def test_a_learning_rate_that_cannot_learn_is_raced_out_before_its_last_seed(workdir: Path) -> None:
    (workdir / "race.py").write_text(RACE_SPACE)
    args = [*optimize_args("a2c", "CartPole-v1", n=8000, trials=2), "--n-evaluations", "1", "--eval-episodes", "5"]
    args += ["--search-space", "race:space", "--n-seeds", "3", "--seed-racing", "--no-mlflow"]
    proc = run([*STOCK, *args], workdir, env={"PYTHONPATH": str(workdir)})
    assert "Pruner: RacingPruner" in proc.stdout
    good, bad = load(workdir).trials
    assert good.state.name == "COMPLETE" and good.user_attrs["seeds_run"] == 3
    assert sorted(good.intermediate_values) == [0, 1, 2]  # one report per seed, step = seed index
    assert min(good.intermediate_values.values()) > max(bad.intermediate_values.values())
    assert bad.state.name == "PRUNED" and bad.user_attrs["seeds_run"] == 1
    assert sorted(bad.intermediate_values) == [0]
    assert len(bad.user_attrs["per_seed"]["mean_reward"]) == 1 == len(bad.user_attrs["evaluations_per_seed"])
    assert good.user_attrs["seeds"] == bad.user_attrs["seeds"] == [3, 4, 5]  # the same problems for both
    assert bad.user_attrs["env_steps"] < good.user_attrs["env_steps"]
    assert "raced out after 1 of 3 " in proc.stderr  # trial.py says "runs" (seeds x envs with --tune-envs)


@pytest.mark.slow
def test_several_objectives_race_by_pareto_dominance_without_trial_report(workdir: Path) -> None:
    (workdir / "race.py").write_text(RACE_SPACE)
    args = [*optimize_args("a2c", "CartPole-v1", n=8000, trials=2), "--n-evaluations", "1", "--eval-episodes", "5"]
    args += ["--search-space", "race:space", "--n-seeds", "3", "--seed-racing", "--no-mlflow"]
    args += ["--objectives", "mean_reward", "n_params"]
    proc = run([*STOCK, *args], workdir, env={"PYTHONPATH": str(workdir)})
    assert "Pruner: RacingPruner" in proc.stdout and "disabled" not in proc.stderr
    good, bad = load(workdir).trials
    assert good.state.name == "COMPLETE" and good.user_attrs["seeds_run"] == 3
    # the same net: n_params ties, and the bad seed's return is below the good trial's worst seed
    assert good.user_attrs["per_seed"]["n_params"][0] == bad.user_attrs["per_seed"]["n_params"][0]
    assert min(good.user_attrs["per_seed"]["mean_reward"]) > bad.user_attrs["per_seed"]["mean_reward"][0]
    assert bad.state.name == "PRUNED" and bad.user_attrs["seeds_run"] == 1
    assert bad.user_attrs["prune_rule"] == RacingPruner.PARETO_DOMINATED
    assert good.intermediate_values == {} == bad.intermediate_values  # Optuna refuses trial.report here
    assert f"Pruned by: {RacingPruner.PARETO_DOMINATED} 1" in proc.stdout
