"""The population plot of a PBT/PB2 study (``population.png``), on a study built by hand: no training.

:func:`population_study` is also the study of ``tracking/test_tracking_population.py``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import matplotlib.image
import matplotlib.pyplot as plt
import optuna
import pytest

from zoo_ext.attrs import StudyAttr, TrialAttr
from zoo_ext.reports import member_segments, population_plot, write_report
from zoo_ext.storage import quiet_optuna

#: Env steps each segment trains (a rollout's multiple: more than ``--perturb-interval`` = 100).
SEGMENT_STEPS = 128
#: Member 2's generation 1 copies member 0's generation-1 checkpoint (trial 3): an older model than its own.
EXPLOIT = {"member": 2, "generation": 1, "parent": 3, "donor": 0}


def reward(member: int, generation: int) -> float:
    """Return the value of ``member``'s segment ``generation`` in :func:`population_study`."""
    return 100.0 * (generation + 1) + 10.0 * (2 - member)


def learning_rate(member: int, generation: int) -> float:
    """Return the learning rate ``member``'s segment ``generation`` trained with (1e-4 .. 3e-3: over a decade)."""
    explored = member == EXPLOIT["member"] and generation >= EXPLOIT["generation"]
    return 3e-3 if explored else 1e-4 * (member + 1)


def population_study(generations: int = 3) -> optuna.Study:
    """Return an in-memory population study: 3 members x ``generations`` complete segments, one exploit.

    Its plan (``-n`` 300, ``--perturb-interval`` 100) has 3 generations. Trial ``3 * g + m`` is
    member ``m``'s segment ``g``; each trains :data:`SEGMENT_STEPS` env steps, so a member's steps
    after segment ``g`` are ``128 * (g + 1)``, while the exploiting member's model is one segment
    older than that from generation 1 on (it copied a model of 256 steps at its own 128).
    """
    with quiet_optuna():
        study = optuna.create_study(direction="maximize")
    study.set_user_attr(StudyAttr.UID, uuid.uuid4().hex)
    study.set_user_attr(StudyAttr.OPTIONS, {"scheduler": "pbt", "population": 3, "perturb_interval": 100})
    study.set_user_attr(StudyAttr.BUDGET, {"n_timesteps": 300})
    study.set_user_attr(StudyAttr.PBT_PLAN, {"population": 3, "interval": 100, "generations": 3})
    model_steps: dict[int, int] = {}
    for generation in range(generations):
        for member in range(3):
            attrs: dict[str, Any] = {
                TrialAttr.PBT_MEMBER: member,
                TrialAttr.PBT_GENERATION: generation,
                TrialAttr.PBT_EXPLOITED: False,
            }
            parent = 3 * (generation - 1) + member
            if (member, generation) == (EXPLOIT["member"], EXPLOIT["generation"]):
                attrs[TrialAttr.PBT_EXPLOITED] = True
                parent = EXPLOIT["parent"]
            if generation > 0:
                attrs[TrialAttr.PBT_PARENT_TRIAL] = parent
            number = 3 * generation + member
            model_steps[number] = (model_steps[parent] if generation > 0 else 0) + SEGMENT_STEPS
            values = {"learning_rate": learning_rate(member, generation), "ent_coef": 0.01 * generation}
            attrs |= {
                TrialAttr.ENV_STEPS: SEGMENT_STEPS,
                TrialAttr.PBT_MODEL_STEPS: model_steps[number],
                TrialAttr.RECORD: {"n_steps": 64, **values},
                TrialAttr.PBT_LIVE: values,
            }
            study.add_trial(optuna.create_trial(value=reward(member, generation), user_attrs=attrs))
    return study


def test_member_segments_count_each_members_own_env_steps() -> None:
    members = member_segments(population_study())

    assert list(members) == [0, 1, 2]
    exploiting = members[EXPLOIT["member"]]
    assert [steps for steps, _ in exploiting] == [128, 256, 384]
    assert [t.number for _, t in exploiting] == [2, 5, 8]
    assert [t.user_attrs[TrialAttr.PBT_MODEL_STEPS] for _, t in exploiting] == [128, 384, 512]  # not the x axis


def test_population_plot_draws_reward_and_each_perturbed_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures: list[Any] = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (figures.append(fig), close(fig)))

    path = population_plot(population_study(), tmp_path / "population.png")

    assert path == tmp_path / "population.png"
    assert path.stat().st_size > 0
    height, width, _ = matplotlib.image.imread(path).shape
    assert height > width  # one panel under the other: reward, ent_coef, learning_rate
    (figure,) = figures
    reward_ax, ent_coef_ax, lr_ax = figure.axes
    assert [line.get_label() for line in reward_ax.get_lines()] == ["member 0", "member 1", "member 2"]
    member_2 = reward_ax.get_lines()[2]
    assert list(member_2.get_xdata()) == [128, 256, 384]
    assert list(member_2.get_ydata()) == [reward(2, g) for g in range(3)]
    stars = [c.get_offsets().tolist() for c in reward_ax.collections if len(c.get_offsets())]
    assert stars == [[[256.0, reward(2, 1)]]]  # the one exploit
    assert (ent_coef_ax.get_ylabel(), ent_coef_ax.get_yscale()) == ("ent_coef", "linear")
    assert (lr_ax.get_ylabel(), lr_ax.get_yscale()) == ("learning_rate", "log")  # 1e-4 .. 3e-3


def test_plain_study_has_no_population_plot(tmp_path: Path) -> None:
    with quiet_optuna():
        study = optuna.create_study()
        study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=3)

    assert population_plot(study, tmp_path / "population.png") is None
    assert not (tmp_path / "population.png").exists()


def test_report_of_population_study_lists_population_png(tmp_path: Path) -> None:
    written = write_report(population_study(), tmp_path)

    assert tmp_path / "population.png" in written
    assert (tmp_path / "population.png").stat().st_size > 0
