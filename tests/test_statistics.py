"""The result card's statistics: median, IQM, its bootstrap confidence interval, probability of improvement."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import bootstrap, mannwhitneyu, trim_mean

from zoo_ext import statistics

SAMPLE = [12.0, -3.5, 40.0, 7.25, 7.25, 100.0, 0.5]


def test_median_and_iqm() -> None:
    assert statistics.median([3.0, 1.0, 2.0, 10.0]) == 2.5
    # IQM of 8 values: the mean of the middle 4.
    assert statistics.iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)
    assert statistics.iqm(SAMPLE) == pytest.approx(trim_mean(SAMPLE, 0.25))


def test_iqm_ci_equals_scipy_bootstrap_on_a_fixed_sample() -> None:
    expected = bootstrap(
        (np.array(SAMPLE),),
        lambda x, axis: trim_mean(x, 0.25, axis=axis),
        n_resamples=9999,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(7),
    ).confidence_interval
    low, high = statistics.iqm_ci(SAMPLE, seed=7)
    assert (low, high) == (pytest.approx(expected.low), pytest.approx(expected.high))
    assert low < statistics.iqm(SAMPLE) < high
    assert statistics.iqm_ci(SAMPLE, seed=7) == (low, high)  # reproducible for a seed
    assert statistics.iqm_ci(SAMPLE, seed=8) != (low, high)


def test_iqm_ci_needs_two_values() -> None:
    assert statistics.iqm_ci([5.0], seed=0) is None
    assert statistics.iqm_ci([], seed=0) is None
    assert statistics.describe([5.0], seed=0) == {"median": 5.0, "iqm": 5.0, "ci95": None}
    assert statistics.iqm_ci([2.0, 2.0, 2.0], seed=0) == (2.0, 2.0)


def test_probability_of_improvement_counts_ties_as_half() -> None:
    tuned, baseline = [1.0, 2.0, 2.0], [2.0, 3.0]
    # Pairs won: none; ties: (2, 2) twice -> 2 * 1/2 out of 6 pairs.
    assert statistics.probability_of_improvement(tuned, baseline) == pytest.approx(1 / 6)
    assert statistics.probability_of_improvement(tuned, baseline, maximize=False) == pytest.approx(5 / 6)
    assert statistics.probability_of_improvement([5.0, 6.0], [1.0, 2.0, 3.0]) == 1.0
    assert statistics.probability_of_improvement([1.0], [1.0]) == 0.5
    x, y = SAMPLE, [0.0, 7.25, 50.0, 3.0]
    assert statistics.probability_of_improvement(x, y) == pytest.approx(mannwhitneyu(x, y).statistic / (7 * 4))
    both = statistics.probability_of_improvement(x, y) + statistics.probability_of_improvement(y, x)
    assert both == pytest.approx(1.0)


def test_probability_of_improvement_refuses_an_empty_sample() -> None:
    with pytest.raises(ValueError, match="at least one score"):
        statistics.probability_of_improvement([], [1.0])


def test_sign_is_the_one_direction_rule() -> None:
    from optuna.study import StudyDirection

    from zoo_ext.statistics import best_of, is_better, sign

    assert sign(StudyDirection.MAXIMIZE) == sign("maximize") == 1.0
    assert sign(StudyDirection.MINIMIZE) == sign("minimize") == -1.0
    assert is_better(2.0, 1.0, "maximize") and is_better(1.0, 2.0, StudyDirection.MINIMIZE)
    assert not is_better(1.0, 1.0, "maximize")  # a tie does not improve
    assert best_of([3.0, -1.0, 2.0], "maximize") == 3.0 and best_of([3.0, -1.0, 2.0], "minimize") == -1.0
    with pytest.raises(ValueError, match="not an objective direction"):
        sign(StudyDirection.NOT_SET)
