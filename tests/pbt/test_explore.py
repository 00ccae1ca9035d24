"""PBT's explore step: perturbed values stay valid and always move; recorded distributions hold the values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zoo_ext.pbt._explore import RANGES, distribution, explore_pb2, explore_pbt

VALUES = {"learning_rate": 3e-4, "ent_coef": 0.0, "gae_lambda": 0.95, "gamma": 0.99, "n_epochs": 10, "clip_range": 0.2}


@pytest.mark.parametrize("resample", [0.0, 0.5, 1.0])
def test_explored_values_stay_valid_and_integers_stay_integers(resample: float) -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        explored = explore_pbt(VALUES, resample_probability=resample, rng=rng)
        assert set(explored) == set(VALUES)
        assert 0.9 <= explored["gamma"] < 1 and 0.8 <= explored["gae_lambda"] <= 1
        assert 1e-5 <= explored["learning_rate"] <= 1e-2
        assert explored["n_epochs"] == int(explored["n_epochs"]) and 1 <= explored["n_epochs"] <= 30
        assert 0.05 <= explored["clip_range"] <= 0.5


def test_perturbation_multiplies_by_0_8_or_1_2_and_a_discount_moves_as_one_minus() -> None:
    rng = np.random.default_rng(1)
    seen_lr, seen_gamma = set(), set()
    for _ in range(50):
        explored = explore_pbt({"learning_rate": 1e-3, "gamma": 0.99}, resample_probability=0.0, rng=rng)
        seen_lr.add(round(explored["learning_rate"] / 1e-3, 6))
        seen_gamma.add(round((1 - explored["gamma"]) / 0.01, 6))
    assert seen_lr == {0.8, 1.2} and seen_gamma == {0.8, 1.2}


def test_an_integer_the_factor_leaves_unchanged_still_moves() -> None:
    rng = np.random.default_rng(2)
    for _ in range(30):
        assert explore_pbt({"n_epochs": 1}, resample_probability=0.0, rng=rng)["n_epochs"] == 2


def test_a_value_outside_its_range_widens_it_instead_of_being_clipped_at_once() -> None:
    explored = explore_pbt({"learning_rate": 0.05}, resample_probability=0.0, rng=np.random.default_rng(3))
    assert explored["learning_rate"] in (pytest.approx(0.04), pytest.approx(0.05))


def test_same_seed_same_exploration() -> None:
    a = explore_pbt(VALUES, resample_probability=0.25, rng=np.random.default_rng(7))
    b = explore_pbt(VALUES, resample_probability=0.25, rng=np.random.default_rng(7))
    assert a == b


@pytest.mark.parametrize("key", sorted(RANGES))
def test_the_recorded_distribution_holds_the_value(key: str) -> None:
    integer = RANGES[key].integer
    for value in (VALUES.get(key, 4 if integer else 0.01), 0.0 if key == "ent_coef" else 1):
        dist = distribution(key, float(value))
        assert dist._contains(dist.to_internal_repr(value))


def test_pb2_picks_within_the_ranges_in_the_constructor_scale() -> None:
    rng = np.random.default_rng(0)
    history = [
        (float(t), {"learning_rate": lr, "gamma": g}, -abs(math.log10(lr) + 3))
        for t, (lr, g) in enumerate(zip(np.geomspace(1e-5, 1e-2, 12), np.linspace(0.95, 0.999, 12), strict=True))
    ]
    picked = explore_pb2({"learning_rate": 3e-4, "gamma": 0.99}, history, time=12.0, rng=rng)
    assert 1e-5 <= picked["learning_rate"] <= 1e-2 and 0.9 <= picked["gamma"] < 1
    assert 1e-4 <= picked["learning_rate"] <= 1e-2  # the bandit favours the best region (1e-3)
