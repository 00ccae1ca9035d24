"""The population on the Optuna storage: one trial per member segment, handed out as WAITING trials.

Any worker, on any machine, takes the next WAITING segment; a member never waits for the others
(asynchronous PBT). When a segment ends, its member's next segment is queued at once: the same
values from its own checkpoint, or, for a member in the bottom ``--pbt-quantile`` of the latest
scores, a copy of a top member's checkpoint with explored values (PBT: perturbed or resampled; PB2:
the GP bandit's pick). Only segments whose checkpoint was saved can be copied.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from zoo_ext.attrs import TrialAttr
from zoo_ext.pbt._explore import distribution, explore_pb2, explore_pbt

if TYPE_CHECKING:
    from zoo_ext.options import ZooOptions

__all__ = ["PARAM_PREFIX", "Plan", "Population", "latest_segments", "lineage", "segment_values", "segments"]

_logger = logging.getLogger("zoo_ext.pbt")

#: A segment's explored values are its Optuna params ``pbt.<key>``: apart from the search space's own names.
PARAM_PREFIX = "pbt."


def segment_values(params: Mapping[str, Any]) -> dict[str, float]:
    """Return the explored values of a segment trial's ``params`` (its ``pbt.<key>`` params), by key."""
    return {k.removeprefix(PARAM_PREFIX): float(v) for k, v in params.items() if k.startswith(PARAM_PREFIX)}


@dataclass(frozen=True)
class Plan:
    """A population's settings: members, segments, what is explored and how."""

    scheduler: str
    population: int
    n_timesteps: int
    interval: int
    keys: tuple[str, ...]
    quantile: float
    resample_probability: float

    @classmethod
    def of(cls, opts: ZooOptions, n_timesteps: int, keys: Sequence[str]) -> Plan:
        """Return the plan of ``opts`` for ``-n`` = ``n_timesteps`` env steps per member."""
        interval = opts.perturb_interval or max(n_timesteps // 10, 1)
        return cls(
            scheduler=opts.scheduler,
            population=opts.population,
            n_timesteps=n_timesteps,
            interval=min(interval, n_timesteps),
            keys=tuple(keys),
            quantile=opts.pbt_quantile,
            resample_probability=opts.pbt_resample_probability,
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the plan as the study records it (``pbt_plan``), for reports and tracking."""
        return {
            "scheduler": self.scheduler, "population": self.population, "n_timesteps": self.n_timesteps,
            "interval": self.interval, "generations": self.generations, "keys": list(self.keys),
            "quantile": self.quantile, "resample_probability": self.resample_probability,
        }  # fmt: skip

    @property
    def generations(self) -> int:
        """Return the segments per member: ``-n`` in pieces of ``--perturb-interval`` (the last may be shorter)."""
        return math.ceil(self.n_timesteps / self.interval)

    @property
    def total_trials(self) -> int:
        """Return the study's trial budget: one trial per segment of every member."""
        return self.population * self.generations

    def segment_steps(self, generation: int) -> int:
        """Return the env steps of segment ``generation``."""
        return min(self.interval, self.n_timesteps - generation * self.interval)


def segments(study: optuna.Study, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
    """Return the study's segment trials (those with a member), in trial order."""
    trials = study.get_trials(deepcopy=False, states=tuple(states) if states is not None else None)
    return [t for t in trials if TrialAttr.PBT_MEMBER in t.user_attrs]


def latest_segments(study: optuna.Study) -> dict[int, FrozenTrial]:
    """Return each member's latest complete segment that saved a checkpoint (highest generation, then number)."""
    latest: dict[int, FrozenTrial] = {}
    for trial in segments(study, (TrialState.COMPLETE,)):
        if TrialAttr.PBT_CHECKPOINT not in trial.user_attrs:
            continue
        member = trial.user_attrs[TrialAttr.PBT_MEMBER]
        current = latest.get(member)
        key = (trial.user_attrs[TrialAttr.PBT_GENERATION], trial.number)
        if current is None or key > (current.user_attrs[TrialAttr.PBT_GENERATION], current.number):
            latest[member] = trial
    return latest


def lineage(study: optuna.Study, number: int) -> list[FrozenTrial]:
    """Return the segments trial ``number``'s model went through, first generation first (its parents' chain)."""
    trials = study.get_trials(deepcopy=False)
    chain = [trials[number]]
    while TrialAttr.PBT_PARENT_TRIAL in chain[-1].user_attrs:
        chain.append(trials[chain[-1].user_attrs[TrialAttr.PBT_PARENT_TRIAL]])
    return chain[::-1]


class Population:
    """Queues a population's segments on ``study``'s storage and decides each member's next one."""

    def __init__(self, plan: Plan, *, maximize: bool, seed: int) -> None:
        self.plan = plan
        self.maximize = maximize
        self.seed = seed

    def _rank(self, values: Mapping[int, float]) -> list[int]:
        """Return members best first."""
        return sorted(values, key=lambda m: values[m], reverse=self.maximize)

    def fill(self, study: optuna.Study) -> int:
        """Queue the first segment of members that have none, and the next of members whose chain broke.

        A chain breaks when a segment failed with its retries spent. Run when the study is created
        or resumed, and when no segment waits or runs although the budget is not spent. Returns the
        number of segments queued.
        """
        trials = segments(study)
        live = (TrialState.WAITING, TrialState.RUNNING)
        busy = {t.user_attrs[TrialAttr.PBT_MEMBER] for t in trials if t.state in live}
        latest = latest_segments(study)
        queued = 0
        for member in range(self.plan.population):
            if member in busy:
                continue
            last = latest.get(member)
            if last is None:
                self._enqueue(study, member=member, generation=0)
            elif last.user_attrs[TrialAttr.PBT_GENERATION] + 1 < self.plan.generations:
                assert last.value is not None
                self.advance(study, last, last.value)
            else:
                continue
            queued += 1
        return queued

    def advance(self, study: optuna.Study, trial: FrozenTrial | optuna.Trial, value: float) -> None:
        """Queue the next segment of ``trial``'s member, which scored ``value``: continue, or exploit and explore."""
        attrs = trial.user_attrs
        member, generation = attrs[TrialAttr.PBT_MEMBER], attrs[TrialAttr.PBT_GENERATION]
        if generation + 1 >= self.plan.generations:
            return
        latest = latest_segments(study)
        scores = {m: float(t.value) for m, t in latest.items() if t.value is not None}
        scores[member] = value
        rng = np.random.default_rng([self.seed, trial.number])
        donor = self._donor(member, scores, rng)
        if donor is None or donor not in latest:
            self._enqueue(study, member=member, generation=generation + 1, parent=trial.number,
                          values=self._values(attrs))  # fmt: skip
            return
        parent = latest[donor]
        values = self._explore(study, self._values(parent.user_attrs), parent, rng)
        _logger.info(
            "member %d (score %.4g) copies member %d (trial %d, score %.4g); explored %s",
            member, value, donor, parent.number, scores[donor], values,
        )  # fmt: skip
        self._enqueue(study, member=member, generation=generation + 1, parent=parent.number, values=values,
                      exploited=True)  # fmt: skip

    def replace(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Queue a segment in place of ``trial``'s, which failed on its own: from the best member's checkpoint."""
        attrs = trial.user_attrs
        member, generation = attrs[TrialAttr.PBT_MEMBER], attrs[TrialAttr.PBT_GENERATION]
        latest = {m: t for m, t in latest_segments(study).items() if m != member and t.value is not None}
        if not latest:
            parent = attrs.get(TrialAttr.PBT_PARENT_TRIAL)
            values = self._values(attrs) if parent is not None else None
            self._enqueue(study, member=member, generation=generation, parent=parent, values=values)
            return
        best = self._rank({m: float(t.value) for m, t in latest.items() if t.value is not None})[0]
        donor = latest[best]
        rng = np.random.default_rng([self.seed, trial.number])
        values = self._explore(study, self._values(donor.user_attrs), donor, rng)
        self._enqueue(study, member=member, generation=generation, parent=donor.number, values=values, exploited=True)

    def _donor(self, member: int, scores: Mapping[int, float], rng: np.random.Generator) -> int | None:
        """Return the top member ``member`` copies, or None if it is not in the bottom quantile."""
        if len(scores) < 2 or self.plan.quantile <= 0:
            return None
        ranked = self._rank(scores)
        n = min(math.ceil(len(ranked) * self.plan.quantile), len(ranked) // 2)
        if n == 0 or member not in ranked[-n:]:
            return None
        return int(rng.choice(ranked[:n]))

    def _values(self, attrs: Mapping[str, Any]) -> dict[str, float]:
        """Return the explored keys' values a segment trained with (from its record)."""
        record = attrs.get(TrialAttr.RECORD, {})
        return {key: float(record[key]) for key in self.plan.keys if isinstance(record.get(key), (int, float))}

    def _explore(
        self, study: optuna.Study, values: Mapping[str, float], parent: FrozenTrial, rng: np.random.Generator
    ) -> dict[str, float]:
        if self.plan.scheduler == "pb2":
            time = float(parent.user_attrs.get(TrialAttr.PBT_MODEL_STEPS, 0))
            return explore_pb2(values, self._history(study), time=time, rng=rng)
        return explore_pbt(values, resample_probability=self.plan.resample_probability, rng=rng)

    def _history(self, study: optuna.Study) -> list[tuple[float, dict[str, float], float]]:
        """Return PB2's data: per complete segment with a parent, its model's env steps, values and score change."""
        trials = study.get_trials(deepcopy=False)
        sign = 1.0 if self.maximize else -1.0
        history = []
        for trial in segments(study, (TrialState.COMPLETE,)):
            parent = trial.user_attrs.get(TrialAttr.PBT_PARENT_TRIAL)
            if parent is None or trial.value is None or trials[parent].value is None:
                continue
            change = sign * (float(trial.value) - float(trials[parent].value))  # type: ignore[arg-type]
            steps = float(trial.user_attrs.get(TrialAttr.PBT_MODEL_STEPS, 0))
            history.append((steps, self._values(trial.user_attrs), change))
        return history

    def _enqueue(
        self,
        study: optuna.Study,
        *,
        member: int,
        generation: int,
        parent: int | None = None,
        values: Mapping[str, float] | None = None,
        exploited: bool = False,
    ) -> None:
        """Queue a WAITING segment; without ``values`` (first generation) the search space samples it."""
        user_attrs: dict[str, Any] = {
            TrialAttr.PBT_MEMBER: member,
            TrialAttr.PBT_GENERATION: generation,
            TrialAttr.PBT_EXPLOITED: exploited,
        }
        if parent is not None:
            user_attrs[TrialAttr.PBT_PARENT_TRIAL] = parent
        distributions = {PARAM_PREFIX + key: distribution(key, value) for key, value in (values or {}).items()}
        params = {
            name: round(value) if isinstance(distributions[name], optuna.distributions.IntDistribution) else value
            for name, value in zip(distributions, (values or {}).values(), strict=True)
        }
        study.add_trial(
            optuna.create_trial(
                state=TrialState.WAITING,
                params=params,
                distributions=distributions,
                user_attrs=user_attrs,
            )
        )
