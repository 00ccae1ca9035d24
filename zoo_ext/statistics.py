"""Robust statistics of a few training runs, as rliable reports them (Agarwal et al., NeurIPS 2021).

Pure functions of per-seed scores: which direction is better (:func:`sign`), the median, the
interquartile mean (IQM), a 95% bootstrap confidence interval of the IQM, and the probability of
improvement of one configuration over another. A study tunes one task (one env), so rliable's
stratified bootstrap, which resamples the runs within each task, has one stratum: it resamples
the seeds' scores with replacement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "N_RESAMPLES",
    "best_of",
    "describe",
    "iqm",
    "iqm_ci",
    "is_better",
    "median",
    "probability_of_improvement",
    "sign",
]

#: Bootstrap resamples of :func:`iqm_ci` (scipy's default).
N_RESAMPLES = 9999


def sign(direction: Any) -> float:
    """Return 1.0 for a maximized objective and -1.0 for a minimized one: ``sign * value`` is larger when better.

    ``direction``: an Optuna ``StudyDirection`` or its name (``"maximize"``, ``"minimize"``); the one
    place zoo_ext works out which way is better.
    """
    name = str(getattr(direction, "name", direction)).lower()
    if name not in ("maximize", "minimize"):
        raise ValueError(f"not an objective direction: {direction!r}")
    return 1.0 if name == "maximize" else -1.0


def is_better(value: float, than: float, direction: Any) -> bool:
    """Return True if ``value`` is strictly better than ``than`` under ``direction`` (see :func:`sign`)."""
    return sign(direction) * value > sign(direction) * than


def best_of(values: Sequence[float], direction: Any) -> float:
    """Return the best of ``values`` under ``direction`` (see :func:`sign`)."""
    return max(values, key=lambda v: sign(direction) * v)


def median(values: Sequence[float]) -> float:
    """Return the median of ``values``."""
    return float(np.median(np.asarray(values, dtype=float)))


def iqm(values: Sequence[float]) -> float:
    """Return the interquartile mean of ``values``: the mean of the middle 50% (``scipy.stats.trim_mean(x, 0.25)``)."""
    from scipy.stats import trim_mean

    return float(trim_mean(np.asarray(values, dtype=float), 0.25))


def _iqm_statistic(sample: np.ndarray, axis: int = -1) -> Any:
    from scipy.stats import trim_mean

    return trim_mean(sample, 0.25, axis=axis)


def iqm_ci(
    values: Sequence[float], *, seed: int, confidence: float = 0.95, n_resamples: int = N_RESAMPLES
) -> tuple[float, float] | None:
    """Return the percentile bootstrap confidence interval (low, high) of the IQM of ``values``; None below 2 values.

    ``scipy.stats.bootstrap`` resamples the values (one task: one stratum) ``n_resamples`` times
    with a generator seeded by ``seed``, so the interval is reproducible. Percentile intervals, as
    rliable computes them: BCa needs more than a handful of runs.
    """
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=float)
    if data.size < 2:
        return None
    result = bootstrap(
        (data,),
        _iqm_statistic,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def probability_of_improvement(tuned: Sequence[float], baseline: Sequence[float], *, maximize: bool = True) -> float:
    """Return P(tuned better than baseline): the share of (tuned, baseline) score pairs the tuned score wins, ties 1/2.

    rliable's definition: the Mann-Whitney U statistic of ``tuned`` against ``baseline`` divided
    by n·m ("better" is larger unless ``maximize`` is False). Raises ValueError on an empty sample.
    """
    from scipy.stats import mannwhitneyu

    x, y = np.asarray(tuned, dtype=float), np.asarray(baseline, dtype=float)
    if x.size == 0 or y.size == 0:
        raise ValueError("the probability of improvement needs at least one score on each side")
    if not maximize:
        x, y = -x, -y
    return float(mannwhitneyu(x, y).statistic / (x.size * y.size))


def describe(values: Sequence[float], *, seed: int) -> dict[str, Any]:
    """Return ``median``, ``iqm`` and ``ci95`` (the IQM's 95% interval as [low, high], or None) of ``values``."""
    interval = iqm_ci(values, seed=seed)
    return {"median": median(values), "iqm": iqm(values), "ci95": None if interval is None else list(interval)}
