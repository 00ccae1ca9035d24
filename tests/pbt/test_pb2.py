"""PB2's explore step: the UCB maximiser of a time-varying GP finds the optimum, in log space, as it moves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zoo_ext.pbt._pb2 import Bound, Observation, pb2_explore

UNIT = {"x": Bound(0.0, 1.0)}


def _quadratic(seed: int, n: int = 30, peak: float = 0.7) -> list[Observation]:
    """``n`` segments spread over x in [0, 1] and time, improvement ``-(x - peak)^2``."""
    rng = np.random.default_rng(1000 + seed)
    xs = rng.random(n)
    times = np.sort(rng.random(n)) * 1e5
    return [
        Observation(time=float(t), values={"x": float(x)}, improvement=-((float(x) - peak) ** 2))
        for x, t in zip(xs, times, strict=True)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_finds_the_peak_of_a_quadratic(seed: int) -> None:
    history = _quadratic(seed)
    new = pb2_explore(history, UNIT, time=1e5, rng=np.random.default_rng(seed))
    assert set(new) == {"x"}
    assert abs(new["x"] - 0.7) < 0.15


@pytest.mark.parametrize("seed", range(3))
def test_log_key_is_searched_in_log_space(seed: int) -> None:
    rng = np.random.default_rng(2000 + seed)
    logs = rng.uniform(math.log(1e-5), math.log(1e-2), 30)
    history = [
        Observation(time=1000.0 * i, values={"lr": float(math.exp(v))}, improvement=-((v - math.log(1e-3)) ** 2))
        for i, v in enumerate(logs)
    ]
    new = pb2_explore(history, {"lr": Bound(1e-5, 1e-2, log=True)}, time=30_000.0, rng=np.random.default_rng(seed))
    assert 1e-5 <= new["lr"] <= 1e-2
    assert 1e-3 / 3 < new["lr"] < 1e-3 * 3


@pytest.mark.parametrize("n_observations", [0, 1, 20])
def test_integer_keys_come_back_integral_within_bounds(n_observations: int) -> None:
    bounds = {
        "n_steps": Bound(16, 2048, log=True, integer=True),
        "n_epochs": Bound(1, 10, integer=True),
        "odd_ends": Bound(0.5, 3.5, integer=True),
        "gamma": Bound(0.9, 0.999),
    }
    rng = np.random.default_rng(3)
    history = [
        Observation(
            time=float(i),
            values={
                "n_steps": float(2 ** rng.integers(4, 12)),
                "n_epochs": float(rng.integers(1, 11)),
                "odd_ends": float(rng.integers(1, 4)),
                "gamma": float(rng.uniform(0.9, 0.999)),
            },
            improvement=float(rng.standard_normal()),
        )
        for i in range(n_observations)
    ]
    for seed in range(5):
        new = pb2_explore(history, bounds, time=float(n_observations), rng=np.random.default_rng(seed))
        assert set(new) == set(bounds)
        for key in ("n_steps", "n_epochs", "odd_ends"):
            assert isinstance(new[key], float)
            assert new[key] == round(new[key]), (key, new[key])
        assert 16 <= new["n_steps"] <= 2048
        assert 1 <= new["n_epochs"] <= 10
        assert 1 <= new["odd_ends"] <= 3
        assert 0.9 <= new["gamma"] <= 0.999
        assert new["gamma"] != round(new["gamma"])


@pytest.mark.parametrize(
    "history",
    [[], [Observation(time=5.0, values={"x": 0.3, "lr": 1e-4}, improvement=1.0)]],
    ids=["empty", "one"],
)
def test_too_few_observations_give_random_values_deterministically(history: list[Observation]) -> None:
    bounds = {"x": Bound(0.2, 0.4), "lr": Bound(1e-5, 1e-2, log=True)}
    draws = [pb2_explore(history, bounds, time=10.0, rng=np.random.default_rng(seed)) for seed in range(20)]
    for new in draws:
        assert 0.2 <= new["x"] <= 0.4
        assert 1e-5 <= new["lr"] <= 1e-2
    assert draws[0] == pb2_explore(history, bounds, time=10.0, rng=np.random.default_rng(0))
    assert len({new["x"] for new in draws}) == 20
    # log-uniform: a quarter of the log range is below 5.6e-5 (far fewer if drawn uniformly)
    assert sum(new["lr"] < 10**-4.25 for new in draws) >= 2


def test_unusable_observations_are_skipped() -> None:
    history = _quadratic(0)
    junk = [
        Observation(time=50.0, values={"y": 0.1}, improvement=100.0),  # missing the key
        Observation(time=60.0, values={"x": 0.1}, improvement=math.nan),
        Observation(time=70.0, values={"x": 0.1}, improvement=math.inf),
        Observation(time=math.nan, values={"x": 0.1}, improvement=100.0),
        Observation(time=80.0, values={"x": math.nan}, improvement=100.0),
    ]
    clean = pb2_explore(history, UNIT, time=1e5, rng=np.random.default_rng(7))
    assert pb2_explore(history + junk, UNIT, time=1e5, rng=np.random.default_rng(7)) == clean
    # only junk and one usable observation: the random branch, as with no history at all
    alone = pb2_explore([*junk, history[0]], UNIT, time=1e5, rng=np.random.default_rng(7))
    assert alone == pb2_explore([], UNIT, time=1e5, rng=np.random.default_rng(7))


def test_deterministic_for_a_seed() -> None:
    history = _quadratic(1)
    first = pb2_explore(history, UNIT, time=1e5, rng=np.random.default_rng(11))
    assert first == pb2_explore(history, UNIT, time=1e5, rng=np.random.default_rng(11))


@pytest.mark.parametrize(
    "history",
    [
        [Observation(time=1.0, values={"x": 0.5}, improvement=2.0)] * 10,
        [Observation(time=1.0, values={"x": 0.5}, improvement=float(i)) for i in range(10)],
        [Observation(time=float(i), values={"x": 0.5}, improvement=float(i % 3)) for i in range(10)],
        [Observation(time=3.0, values={"x": i / 9}, improvement=0.0) for i in range(10)],
        [
            Observation(time=0.0, values={"x": 1.0}, improvement=1.0),
            Observation(time=0.0, values={"x": 0.0}, improvement=0.0),
        ],
        [Observation(time=float(i), values={"x": 0.5 + 1e-12 * i}, improvement=1e-300 * i) for i in range(10)],
    ],
    ids=[
        "identical",
        "same-point-different-targets",
        "same-point-over-time",
        "flat",
        "two-same-time",
        "near-identical",
    ],
)
def test_degenerate_observations_do_not_crash(history: list[Observation]) -> None:
    for time in (0.0, 1.0, 1e9):
        new = pb2_explore(history, UNIT, time=time, rng=np.random.default_rng(0), n_candidates=200)
        assert 0.0 <= new["x"] <= 1.0


@pytest.mark.parametrize("seed", range(5))
def test_follows_an_optimum_that_moves_over_time(seed: int) -> None:
    rng = np.random.default_rng(4000 + seed)
    history = []
    for i in range(40):
        x = float(rng.random())
        peak = 0.2 if i < 20 else 0.8
        history.append(Observation(time=1000.0 * i, values={"x": x}, improvement=-((x - peak) ** 2)))
    latest = pb2_explore(history, UNIT, time=39_000.0, rng=np.random.default_rng(seed))["x"]
    assert abs(latest - 0.8) < abs(latest - 0.2)


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError, match="log bound"):
        pb2_explore([], {"lr": Bound(0.0, 1.0, log=True)}, time=0.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="low <= high"):
        pb2_explore([], {"x": Bound(1.0, 0.0)}, time=0.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="time"):
        pb2_explore([], UNIT, time=math.nan, rng=np.random.default_rng(0))
