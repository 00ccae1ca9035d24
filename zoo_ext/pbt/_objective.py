"""One population segment as an Optuna trial: restore (or build) the member's model, train ``--perturb-interval``
env steps with the segment's values, evaluate, checkpoint, queue the member's next segment.

After training, every explored value is read back from the live model (``pbt_live``); a segment
whose model did not train with its own values (a restored checkpoint overwrote one) fails.
"""

from __future__ import annotations

import inspect
import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from zoo_ext import record
from zoo_ext.attrs import FailKind, TrialAttr, set_failure
from zoo_ext.ceiling import gradient_steps
from zoo_ext.pbt import _checkpoint
from zoo_ext.pbt._export import schedule
from zoo_ext.pbt._population import Plan, Population, lineage, segment_values, segments
from zoo_ext.schedules import ScheduleCallback, as_kwarg, live_keys, read_live, set_live
from zoo_ext.storage import WORKER_ATTR, worker_identity
from zoo_ext.training import TrialEvalCallback, n_params
from zoo_ext.trial import Objective, TrialFailed, trial_seeds

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

    from zoo_ext.experiment import Experiment
    from zoo_ext.spaces import SearchSpace

__all__ = ["SegmentObjective", "only_segments", "plan_for"]

_logger = logging.getLogger("zoo_ext.pbt")


def plan_for(exp: Experiment) -> Plan | None:
    """Return the population plan of ``exp`` (None without ``--scheduler``)."""
    opts = exp.options
    if opts.scheduler == "none":
        return None
    return Plan.of(opts, exp.n_timesteps, opts.pbt_keys or live_keys(exp.algo))


def only_segments(run_trial: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
    """Return ``run_trial`` run only for a queued segment that no other trial ran.

    A trial that is no segment was created because another worker took the last WAITING one at the
    same moment; a segment whose member and generation already ran was queued twice (its parent
    was retried after its worker died). Both are failed unrun (``fail_kind`` ``not_run``).
    """

    def guarded(trial: optuna.Trial) -> Any:
        attrs = trial.user_attrs
        if TrialAttr.PBT_MEMBER not in attrs:
            reason = "not run: no population segment was waiting (another worker took the last one)"
            set_failure(trial.set_user_attr, FailKind.NOT_RUN, reason)
            trial.study.stop()
            raise TrialFailed(reason)
        place = (attrs[TrialAttr.PBT_MEMBER], attrs[TrialAttr.PBT_GENERATION])
        for other in segments(trial.study, (TrialState.COMPLETE, TrialState.RUNNING)):
            if (
                other.number != trial.number
                and (other.user_attrs[TrialAttr.PBT_MEMBER], other.user_attrs[TrialAttr.PBT_GENERATION]) == place
            ):
                reason = f"not run: member {place[0]}'s segment {place[1]} already ran in trial {other.number}"
                set_failure(trial.set_user_attr, FailKind.NOT_RUN, reason)
                raise TrialFailed(reason)
        return run_trial(trial)

    return guarded


class SegmentObjective(Objective):
    """The objective of a population study: one member segment per trial, scored on its closing evaluation."""

    def __init__(self, experiment: Experiment, space: SearchSpace, space_name: str, *, plan: Plan, store: Any) -> None:
        super().__init__(experiment, space, space_name)
        self.plan = plan
        self.store = store
        maximize = self.objectives[0].direction == "maximize"
        self.population = Population(plan, maximize=maximize, seed=experiment.seed)

    def _ceiling(self) -> int:
        return self.plan.interval

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        """Return the segment's closing evaluation; a segment failing on its own is replaced by a copy of the best."""
        try:
            return super().__call__(trial)
        except TrialFailed:
            if trial.user_attrs.get(TrialAttr.FAIL_KIND) == FailKind.ERROR:
                self.population.replace(trial.study, trial)
            raise

    def _call(self, trial: optuna.Trial) -> float:
        exp = self.exp
        attrs = trial.user_attrs
        generation = attrs[TrialAttr.PBT_GENERATION]
        seed = trial_seeds(exp.seed, trial.number)[0]
        trial.set_user_attr(WORKER_ATTR, worker_identity())
        trial.set_user_attr(TrialAttr.SEED, seed)
        trial.set_user_attr(TrialAttr.SEEDS, [seed])
        trial.set_user_attr(TrialAttr.OBJECTIVES, [o.name for o in self.objectives])
        parent_number = attrs.get(TrialAttr.PBT_PARENT_TRIAL)
        with tempfile.TemporaryDirectory(prefix="zoo_ext_pbt_") as tmp:
            folder = Path(tmp)
            if parent_number is None:
                kwargs = self._fit_buffer(trial, self.sample(trial))
                values: dict[str, float] | None = None  # read from the model: SB3's default for a key not sampled
                start: Any = kwargs
                gamma = kwargs.get("gamma")
            else:
                parent = trial.study.get_trials(deepcopy=False)[parent_number]
                ids = parent.user_attrs.get(TrialAttr.PBT_CHECKPOINT)
                if not ids:
                    raise self._fail(trial, f"trial {parent_number} has no checkpoint to start from")
                values = segment_values(trial.params)
                segment_record = {
                    **parent.user_attrs[TrialAttr.RECORD],
                    **{k: as_kwarg(k, v) for k, v in values.items()},
                }
                trial.set_user_attr(TrialAttr.SEARCH_SPACE, parent.user_attrs.get(TrialAttr.SEARCH_SPACE, ""))
                trial.set_user_attr(TrialAttr.RECORD, segment_record)
                start = ids
                gamma = segment_record.get("gamma")
            try:
                return self._train(trial, start, values, seed, self.plan.segment_steps(generation), gamma, folder)
            except (optuna.TrialPruned, TrialFailed, KeyboardInterrupt):
                raise
            except Exception as exc:
                raise self._fail(trial, f"training failed: {type(exc).__name__}: {exc}") from exc

    def _fit_buffer(self, trial: optuna.Trial, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Return ``kwargs`` with a replay buffer no larger than ``-n``: every checkpoint carries it.

        SB3's default (10^6 transitions) would make each checkpoint of a Pendulum member 40 MB.
        """
        parameter = inspect.signature(self.exp.algo_class.__init__).parameters.get("buffer_size")
        size = kwargs.get("buffer_size", parameter.default if parameter is not None else None)
        if isinstance(size, (int, float)) and size > self.exp.n_timesteps:
            kwargs = {**kwargs, "buffer_size": self.exp.n_timesteps}
            clipped = trial.user_attrs.get(TrialAttr.CLIPPED, {})
            clipped["buffer_size"] = {"from": size, "to": self.exp.n_timesteps}
            trial.set_user_attr(TrialAttr.CLIPPED, clipped)
            trial.set_user_attr(TrialAttr.RECORD, record.encode(kwargs))
        return kwargs

    def replay(self, study: optuna.Study, number: int) -> tuple[dict[str, Any], list[ScheduleCallback], int]:
        """Return what re-trains segment ``number``'s model from scratch: kwargs, its schedule callback, env steps.

        The kwargs are its lineage's first segment's (the space's values for that trial's params), the
        explored keys at their first values; the callback replays each value that changed.
        """
        chain = lineage(study, number)
        fixed: Any = optuna.trial.FixedTrial(chain[0].params, number=chain[0].number)
        kwargs = self._fit_buffer(fixed, self.sample(fixed))
        first = chain[0].user_attrs[TrialAttr.RECORD]
        kwargs.update({key: as_kwarg(key, first[key]) for key in chain[-1].user_attrs.get(TrialAttr.PBT_LIVE, {})})
        changing = schedule(study, number, list(chain[-1].user_attrs.get(TrialAttr.PBT_LIVE, {})))
        steps = int(chain[-1].user_attrs[TrialAttr.PBT_MODEL_STEPS])
        return kwargs, [ScheduleCallback(changing)] if changing else [], steps

    def _first_values(self, trial: optuna.Trial, model: BaseAlgorithm) -> dict[str, float]:
        """Return a first segment's explored values as its model has them, and record them.

        A key the space did not sample has SB3's default; a schedule (``lin_0.001``) starts at its
        initial value and stays there: a population trains constant values between its steps.
        """
        values = {}
        for key in self.plan.keys:
            try:
                values[key] = read_live(model, key)
            except (AttributeError, TypeError, ValueError):  # e.g. SAC's ent_coef "auto": not a number
                continue
        typed = {key: as_kwarg(key, value) for key, value in values.items()}
        trial.set_user_attr(TrialAttr.RECORD, {**trial.user_attrs[TrialAttr.RECORD], **typed})
        return values

    def _build(self, start: Any, env: Any, seed: int, folder: Path) -> BaseAlgorithm:
        """Return the segment's model: built from kwargs (first generation) or restored from checkpoint ids."""
        exp = self.exp
        if isinstance(start, Mapping) and _checkpoint.MODEL in start:
            model = _checkpoint.restore(exp.algo_class, start, self.store, folder / "in", env=env, device=exp.device)
            model.set_random_seed(seed)
            return model
        verbose = exp.verbose if exp.verbose >= 2 else 0
        return exp.algo_class(env=env, tensorboard_log=None, seed=seed, verbose=verbose, device=exp.device, **start)

    def _train(
        self,
        trial: optuna.Trial,
        start: Any,
        values: Mapping[str, float] | None,
        seed: int,
        steps: int,
        gamma: float | None,
        folder: Path,
    ) -> float:
        exp = self.exp
        began = time.perf_counter()
        (folder / "in").mkdir()
        (folder / "out").mkdir()
        env = exp.make_env(exp.n_envs, gamma=gamma)
        eval_env = exp.make_env(exp.n_eval_envs, eval_env=True, gamma=gamma)
        try:
            model = self._build(start, env, seed, folder)
            if values is None:
                values = self._first_values(trial, model)
            for key, value in values.items():
                set_live(model, key, value)
            first_step, first_update = int(model.num_timesteps), gradient_steps(model)
            callback = TrialEvalCallback(eval_env, n_eval_episodes=exp.n_eval_episodes, eval_freq=0,
                                         deterministic=exp.deterministic_eval)  # fmt: skip
            callbacks = [*exp.extra_callbacks(), callback]
            model.learn(_whole_rollouts(model, steps), callback=callbacks, reset_num_timesteps=False,
                        **exp.learn_kwargs(model))  # fmt: skip
            mean = callback.evaluate()
            trial.set_user_attr(TrialAttr.ENV_STEPS, int(model.num_timesteps) - first_step)
            trial.set_user_attr(TrialAttr.N_UPDATES, gradient_steps(model) - first_update)
            trial.set_user_attr(TrialAttr.N_PARAMS, n_params(model))
            trial.set_user_attr(TrialAttr.PBT_MODEL_STEPS, int(model.num_timesteps))
            trial.set_user_attr(TrialAttr.EVALUATIONS, callback.curve)
            live = {key: read_live(model, key) for key in values}
            trial.set_user_attr(TrialAttr.PBT_LIVE, live)
            wrong = {k: (values[k], live[k]) for k in values if not math.isclose(values[k], live[k], rel_tol=1e-6)}
            if wrong:
                raise self._fail(trial, f"the model trained with other values than the segment's: {wrong}")
            if not math.isfinite(mean):
                raise self._fail(trial, f"diverged: the evaluation return of seed {seed} is not finite")
            trial.set_user_attr(TrialAttr.PBT_CHECKPOINT, _checkpoint.save(model, trial, self.store, folder / "out"))
        finally:
            trial.set_user_attr(TrialAttr.TRAIN_TIME, time.perf_counter() - began)
            env.close()
            eval_env.close()
        self.population.advance(trial.study, trial, mean)
        return mean


def _whole_rollouts(model: BaseAlgorithm, steps: int) -> int:
    """Return ``steps`` rounded down to whole rollouts of an on-policy ``model`` (at least one).

    SB3 trains whole rollouts until it reaches the steps asked: asking for a multiple keeps a
    member's segments adding up to ``-n`` instead of one rollout more per segment.
    """
    rollout = int(getattr(model, "n_steps", 0)) * model.n_envs
    return max(rollout, steps // rollout * rollout) if rollout > 0 else steps
