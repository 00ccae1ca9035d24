"""The population on the storage: who continues, who copies whom, what is queued, what a worker refuses to run."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from zoo_ext.attrs import TrialAttr
from zoo_ext.options import ZooOptions
from zoo_ext.pbt import Plan, Population, lineage, only_segments, segments
from zoo_ext.pbt._population import segment_values
from zoo_ext.trial import TrialFailed

PLAN = Plan.of(ZooOptions(scheduler="pbt", population=4, perturb_interval=1000), 3000, ("learning_rate", "n_epochs"))


def _segment(study: optuna.Study, member: int, generation: int, value: float, **extra: Any) -> optuna.trial.FrozenTrial:
    attrs = {
        TrialAttr.PBT_MEMBER: member,
        TrialAttr.PBT_GENERATION: generation,
        TrialAttr.PBT_EXPLOITED: False,
        TrialAttr.PBT_CHECKPOINT: {"model": f"id-{member}-{generation}"},
        TrialAttr.RECORD: {"learning_rate": 1e-3 * (member + 1), "n_epochs": 5 + member, "batch_size": 64},
        TrialAttr.PBT_MODEL_STEPS: 1000 * (generation + 1),
        TrialAttr.ENV_STEPS: 1000,
        **extra,
    }
    study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=value, user_attrs=attrs))
    return study.trials[-1]


def _waiting(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(TrialState.WAITING,))


def test_the_plan_counts_segments_and_the_last_one_takes_the_rest() -> None:
    plan = Plan.of(ZooOptions(scheduler="pbt", population=3, perturb_interval=400), 1000, ("learning_rate",))
    assert plan.generations == 3 and plan.total_trials == 9
    assert [plan.segment_steps(g) for g in range(3)] == [400, 400, 200]
    assert Plan.of(ZooOptions(scheduler="pbt"), 50_000, ()).interval == 5_000  # default: a tenth of -n


def test_fill_queues_one_first_segment_per_member_then_nothing_while_they_wait() -> None:
    study = optuna.create_study(direction="maximize")
    population = Population(PLAN, maximize=True, seed=0)
    assert population.fill(study) == 4
    waiting = _waiting(study)
    assert sorted(t.user_attrs[TrialAttr.PBT_MEMBER] for t in waiting) == [0, 1, 2, 3]
    assert all(t.user_attrs[TrialAttr.PBT_GENERATION] == 0 and not t.params for t in waiting)
    assert population.fill(study) == 0


def test_a_bottom_member_copies_a_top_member_with_a_checkpoint_and_explores() -> None:
    study = optuna.create_study(direction="maximize")
    for member, value in enumerate([10.0, 50.0, 30.0]):
        _segment(study, member, 0, value)
    study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=99.0, user_attrs={
        TrialAttr.PBT_MEMBER: 3, TrialAttr.PBT_GENERATION: 0, TrialAttr.RECORD: {}}))  # fmt: skip  # no checkpoint
    population = Population(PLAN, maximize=True, seed=0)
    population.advance(study, study.trials[0], 10.0)  # member 0 is the worst of 4
    (queued,) = _waiting(study)
    assert queued.user_attrs[TrialAttr.PBT_EXPLOITED] is True
    donor = study.trials[queued.user_attrs[TrialAttr.PBT_PARENT_TRIAL]]
    assert donor.user_attrs[TrialAttr.PBT_MEMBER] == 1  # the best with a checkpoint, not member 3
    values = segment_values(queued.params)
    assert set(values) == {"learning_rate", "n_epochs"} and values != {"learning_rate": 2e-3, "n_epochs": 6}
    assert queued.user_attrs[TrialAttr.PBT_MEMBER] == 0 and queued.user_attrs[TrialAttr.PBT_GENERATION] == 1


def test_a_member_outside_the_bottom_continues_from_its_own_checkpoint_with_its_values() -> None:
    study = optuna.create_study(direction="maximize")
    for member, value in enumerate([10.0, 50.0, 30.0, 20.0]):
        _segment(study, member, 0, value)
    Population(PLAN, maximize=True, seed=0).advance(study, study.trials[2], 30.0)
    (queued,) = _waiting(study)
    assert queued.user_attrs[TrialAttr.PBT_PARENT_TRIAL] == 2 and queued.user_attrs[TrialAttr.PBT_EXPLOITED] is False
    assert segment_values(queued.params) == {"learning_rate": 3e-3, "n_epochs": 7}


def test_minimising_ranks_the_other_way() -> None:
    study = optuna.create_study(direction="minimize")
    for member, value in enumerate([10.0, 50.0, 30.0, 20.0]):
        _segment(study, member, 0, value)
    Population(PLAN, maximize=False, seed=0).advance(study, study.trials[1], 50.0)
    (queued,) = _waiting(study)
    assert study.trials[queued.user_attrs[TrialAttr.PBT_PARENT_TRIAL]].user_attrs[TrialAttr.PBT_MEMBER] == 0


def test_the_last_generation_queues_nothing_and_lineage_follows_parents() -> None:
    study = optuna.create_study(direction="maximize")
    _segment(study, 0, 0, 1.0)
    _segment(study, 1, 0, 2.0)
    _segment(study, 0, 1, 3.0, **{TrialAttr.PBT_PARENT_TRIAL: 1, TrialAttr.PBT_EXPLOITED: True})
    _segment(study, 0, 2, 4.0, **{TrialAttr.PBT_PARENT_TRIAL: 2})
    Population(PLAN, maximize=True, seed=0).advance(study, study.trials[3], 4.0)
    assert not _waiting(study)
    assert [t.number for t in lineage(study, 3)] == [1, 2, 3]
    assert len(segments(study)) == 4


def test_a_worker_runs_only_queued_segments_once() -> None:
    study = optuna.create_study(direction="maximize")
    _segment(study, 0, 0, 1.0)
    ran: list[int] = []
    guarded = only_segments(lambda trial: ran.append(trial.number) or 1.0)
    study.optimize(guarded, n_trials=1, catch=(TrialFailed,))  # nothing queued: a fresh trial is refused
    assert (
        study.trials[-1].state == TrialState.FAIL
        and "no population segment" in study.trials[-1].user_attrs["fail_reason"]
    )
    study.enqueue_trial({}, user_attrs={TrialAttr.PBT_MEMBER: 0, TrialAttr.PBT_GENERATION: 0})  # queued twice
    study.optimize(guarded, n_trials=1, catch=(TrialFailed,))
    assert (
        study.trials[-1].user_attrs["fail_kind"] == "not_run"
        and "already ran in trial 0" in study.trials[-1].user_attrs["fail_reason"]
    )
    study.enqueue_trial({}, user_attrs={TrialAttr.PBT_MEMBER: 1, TrialAttr.PBT_GENERATION: 0})
    study.optimize(guarded, n_trials=1, catch=(TrialFailed,))
    assert ran == [study.trials[-1].number] and study.trials[-1].state == TrialState.COMPLETE


@pytest.mark.parametrize(("flags", "message"), [
    ({"n_seeds": 2}, "trains one model per member"),
    ({"seed_racing": True, "n_seeds": 2}, "no seeds to race"),
    ({"objectives": ["mean_reward", "train_time"]}, "ranks members by their evaluation return"),
    ({"pruner": "hyperband"}, "replaces pruning"),
    ({"n_workers": 5, "population": 4}, "at most one segment per member"),
    ({"pbt_quantile": 0.7}, "between 0 and 0.5"),
])  # fmt: skip
def test_combinations_a_population_cannot_run_are_refused(flags: dict[str, Any], message: str) -> None:
    import argparse

    from zoo_ext.options import OptionError, resolve

    with pytest.raises(OptionError, match=message):
        resolve(argparse.Namespace(), {"scheduler": "pbt", **flags}, algo="ppo")
