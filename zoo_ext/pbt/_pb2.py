"""The explore step of PB2, Population-Based Bandits (Parker-Holder et al., NeurIPS 2020).

"Provably efficient online hyperparameter optimization with population-based bandits" replaces
PBT's random perturbation by a bandit: a Gaussian process, whose kernel lets the objective drift
over time, is fitted to the improvement each training segment made with its hyperparameters, and
the new hyperparameters maximise the upper confidence bound (GP-UCB) at the current time.

This module holds :class:`Bound` (a key's search range), :class:`Observation` (one finished
segment) and :func:`pb2_explore`, in pure numpy. Inputs are scaled to the unit cube (log keys in
log space) and time to [0, 1] over the history; the kernel is a squared exponential over the
hyperparameters times the time-varying kernel ``(1 - eps) ** (|t - t'| / 2)``; lengthscales,
``eps`` and the noise variance maximise the marginal likelihood over small grids.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Bound", "Observation", "pb2_explore"]

#: Lengthscales tried for the squared exponential (inputs in [0, 1]).
_LENGTHSCALES = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
#: Forgetting rates ``eps`` of the time-varying kernel (Ray Tune's PB2 bounds it by 0.5).
_EPSILONS = (0.01, 0.05, 0.1, 0.2, 0.5)
#: Noise variances tried, in units of the standardised targets.
_NOISES = (1e-3, 1e-2, 1e-1, 0.3, 1.0)
#: Sweeps of per-key lengthscale refinement after the shared-lengthscale grid (more than one key).
_SWEEPS = 2
#: At most this many of the latest observations are fitted (each likelihood costs O(n^3)).
_MAX_OBSERVATIONS = 250
#: Confidence ``delta`` of the GP-UCB ``beta_t`` (Srinivas et al., 2010).
_DELTA = 0.1
#: Scale of ``beta_t``: the theoretical value over-explores; Srinivas et al. scale it by 1/5 in practice.
_BETA_SCALE = 0.2


@dataclass(frozen=True)
class Bound:
    """A hyperparameter's search range: ``[low, high]``, searched in log space if ``log``, rounded if ``integer``."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass(frozen=True)
class Observation:
    """One training segment: when it ended, the hyperparameters it trained with, and the reward it gained."""

    time: float
    values: Mapping[str, float]
    improvement: float


@dataclass(frozen=True)
class _Fit:
    """A fitted GP: its hyperparameters, the inverse Cholesky factor of the kernel matrix ``K`` and ``K^-1 y``."""

    lengthscales: np.ndarray
    eps: float
    chol_inv: np.ndarray
    alpha: np.ndarray


def _check_bounds(bounds: Mapping[str, Bound]) -> None:
    for key, bound in bounds.items():
        if not (math.isfinite(bound.low) and math.isfinite(bound.high)) or bound.low > bound.high:
            raise ValueError(f"bound of {key!r}: need finite low <= high, got [{bound.low}, {bound.high}]")
        if bound.log and bound.low <= 0:
            raise ValueError(f"bound of {key!r}: a log bound needs low > 0, got {bound.low}")


def _span(bound: Bound) -> tuple[float, float]:
    """Return the bound's ends in search space (log space for a log key)."""
    if bound.log:
        return math.log(bound.low), math.log(bound.high)
    return float(bound.low), float(bound.high)


def _to_unit(value: float, bound: Bound) -> float:
    """Return ``value`` scaled to [0, 1] (clipped), NaN if it cannot be (non-finite, or not positive for a log key)."""
    if not math.isfinite(value) or (bound.log and value <= 0):
        return math.nan
    low, high = _span(bound)
    if high == low:
        return 0.0
    scaled = (math.log(value) if bound.log else value) - low
    return min(max(scaled / (high - low), 0.0), 1.0)


def _from_unit(unit: float, bound: Bound) -> float:
    """Return the value of the key at ``unit`` in [0, 1]: exponentiated if log, rounded if integer, within bounds."""
    low, high = _span(bound)
    value = low + min(max(unit, 0.0), 1.0) * (high - low)
    if bound.log:
        value = math.exp(value)
    if bound.integer:
        value = float(round(value))
        low_int, high_int = math.ceil(bound.low), math.floor(bound.high)
        if low_int <= high_int:
            return float(min(max(value, low_int), high_int))
    return float(min(max(value, bound.low), bound.high))


def _dataset(history: Sequence[Observation], bounds: Mapping[str, Bound]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the usable observations as unit-cube inputs ``(n, d)``, raw times ``(n,)`` and targets ``(n,)``.

    Skipped: an observation missing a key of ``bounds``, or with a non-finite time, improvement or value
    (or a log key's value not positive). Only the latest ``_MAX_OBSERVATIONS`` are kept.
    """
    rows: list[list[float]] = []
    times: list[float] = []
    targets: list[float] = []
    for obs in history:
        if not (math.isfinite(obs.time) and math.isfinite(obs.improvement)):
            continue
        if any(key not in obs.values for key in bounds):
            continue
        try:
            row = [_to_unit(float(obs.values[key]), bound) for key, bound in bounds.items()]
        except (TypeError, ValueError):
            continue
        if any(math.isnan(u) for u in row):
            continue
        rows.append(row)
        times.append(float(obs.time))
        targets.append(float(obs.improvement))
    x = np.asarray(rows, dtype=float).reshape(len(rows), len(bounds))
    t = np.asarray(times, dtype=float)
    y = np.asarray(targets, dtype=float)
    if len(t) > _MAX_OBSERVATIONS:
        keep = np.sort(np.argsort(t, kind="stable")[-_MAX_OBSERVATIONS:])
        x, t, y = x[keep], t[keep], y[keep]
    return x, t, y


def _cholesky(k: np.ndarray) -> np.ndarray:
    """Return the lower Cholesky factor of ``k``, adding jitter to the diagonal (1e-8, 1e-7, ...) until it succeeds."""
    for power in range(-9, 3):
        jitter = 10.0**power if power >= -8 else 0.0
        try:
            return np.linalg.cholesky(k + jitter * np.eye(len(k)) if jitter else k)
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("kernel matrix not positive definite even with jitter 1e2 on the diagonal")


def _nll(k: np.ndarray, y: np.ndarray, noise: float) -> float:
    """Return the negative log marginal likelihood of ``y`` under the kernel matrix ``k`` (noise included).

    One Cholesky of ``[[k, y], [y', s]]`` gives both terms: its top-left block is ``L = chol(k)`` and its
    bottom row ``L^-1 y`` (numpy has no triangular solve). ``s`` exceeds ``y' k^-1 y <= |y|^2 / noise``.
    """
    n = len(y)
    augmented = np.empty((n + 1, n + 1))
    augmented[:n, :n] = k
    augmented[n, :n] = augmented[:n, n] = y
    augmented[n, n] = 2.0 * float(y @ y) / noise + 1.0
    chol = _cholesky(augmented)
    w = chol[n, :n]
    return 0.5 * float(w @ w) + float(np.sum(np.log(np.diag(chol)[:n]))) + 0.5 * n * math.log(2.0 * math.pi)


def _fit(x: np.ndarray, t: np.ndarray, y: np.ndarray) -> _Fit:
    """Fit the GP by marginal likelihood: a grid over a shared lengthscale, eps and noise, then per-key sweeps."""
    d, n = x.shape[1], len(y)
    sqdist = (x.T[:, :, None] - x.T[:, None, :]) ** 2  # (d, n, n)
    total = sqdist.sum(axis=0)
    half_gaps = np.abs(t[:, None] - t[None, :]) / 2.0
    decays = {eps: (1.0 - eps) ** half_gaps for eps in _EPSILONS}
    identity = np.eye(n)
    best: tuple[float, float, float, float] | None = None  # nll, lengthscale, eps, noise
    for ell in _LENGTHSCALES:
        se = np.exp(-0.5 * total / ell**2)
        for eps, decay in decays.items():
            base = se * decay
            for noise in _NOISES:
                value = _nll(base + noise * identity, y, noise)
                if best is None or value < best[0]:
                    best = (value, ell, eps, noise)
    assert best is not None
    best_nll, ell, eps, noise = best
    lengthscales = np.full(d, ell)

    def kernel(scales: np.ndarray) -> np.ndarray:
        return np.exp(-0.5 * np.tensordot(scales**-2.0, sqdist, axes=1)) * decays[eps] + noise * identity

    for _ in range(_SWEEPS if d > 1 else 0):
        changed = False
        for i in range(d):
            for candidate in _LENGTHSCALES:
                if candidate == lengthscales[i]:
                    continue
                trial = lengthscales.copy()
                trial[i] = candidate
                value = _nll(kernel(trial), y, noise)
                if value < best_nll - 1e-9:
                    best_nll, lengthscales, changed = value, trial, True
        if not changed:
            break
    chol_inv = np.linalg.inv(_cholesky(kernel(lengthscales)))
    return _Fit(lengthscales=lengthscales, eps=eps, chol_inv=chol_inv, alpha=chol_inv.T @ (chol_inv @ y))


def _ucb(fit: _Fit, x: np.ndarray, t: np.ndarray, candidates: np.ndarray, query_time: float, beta: float) -> np.ndarray:
    """Return ``mean + sqrt(beta) * std`` of the latent function at ``candidates`` and ``query_time``."""
    exponent = np.zeros((len(candidates), len(x)))
    for i, scale in enumerate(fit.lengthscales):
        exponent += ((candidates[:, i, None] - x[None, :, i]) / scale) ** 2
    k_star = np.exp(-0.5 * exponent) * (1.0 - fit.eps) ** (np.abs(query_time - t) / 2.0)
    v = fit.chol_inv @ k_star.T
    std = np.sqrt(np.maximum(1.0 - np.sum(v**2, axis=0), 0.0))
    return np.asarray(k_star @ fit.alpha + math.sqrt(beta) * std)


def pb2_explore(
    history: Sequence[Observation],
    bounds: Mapping[str, Bound],
    *,
    time: float,
    rng: np.random.Generator,
    n_candidates: int = 2000,
) -> dict[str, float]:
    """Return new values for the keys of ``bounds``: the UCB maximiser of a time-varying GP fitted to ``history``.

    ``time`` is the clock (as in :attr:`Observation.time`) at which the new values will train; with
    fewer than two usable observations the values are uniform random within the bounds (log-uniform
    for log keys). Deterministic for a given state of ``rng``. Raise :class:`ValueError` for an
    invalid bound, a non-finite ``time`` or ``n_candidates`` below 1.
    """
    _check_bounds(bounds)
    if not math.isfinite(time):
        raise ValueError(f"time must be finite, got {time}")
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be at least 1, got {n_candidates}")
    keys = list(bounds)
    d = len(keys)
    if d == 0:
        return {}
    x, t_raw, y_raw = _dataset(history, bounds)
    n = len(y_raw)
    if n < 2:
        unit = rng.random(d)
        return {key: _from_unit(float(u), bounds[key]) for key, u in zip(keys, unit, strict=True)}

    t_min, t_max = float(t_raw.min()), float(t_raw.max())
    if t_max > t_min:
        t = (t_raw - t_min) / (t_max - t_min)
        query_time = (time - t_min) / (t_max - t_min)
    else:
        t = np.zeros(n)
        query_time = 0.0
    std = float(y_raw.std())
    y = (y_raw - y_raw.mean()) / (std if std > 0 else 1.0)

    fit = _fit(x, t, y)
    beta = max(_BETA_SCALE * 2.0 * math.log(d * n**2 * math.pi**2 / (6.0 * _DELTA)), 1e-2)

    candidates = np.vstack([rng.random((n_candidates, d)), x[int(np.argmax(y))]])
    scores = _ucb(fit, x, t, candidates, query_time, beta)
    best = candidates[int(np.argmax(scores))]
    return {key: _from_unit(float(u), bounds[key]) for key, u in zip(keys, best, strict=True)}
