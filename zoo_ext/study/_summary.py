"""The end-of-study summary and the stock report files (CSV, pickle, plots)."""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from zoo_ext import reports, storage
from zoo_ext.attrs import StudyAttr, TrialAttr
from zoo_ext.study._loop import STOP_ATTR
from zoo_ext.study._rules import env_steps_used

if TYPE_CHECKING:
    from zoo_ext.experiment import Experiment

__all__ = ["summarize"]

_logger = logging.getLogger("zoo_ext.study")


def summarize(study: optuna.Study, exp: Experiment, *, pruner: str) -> Path:
    """Print the best trial, write the stock report (CSV, pickle) and the report folder; return the folder.

    ``pruner``: the pruner the study ran with (named in the report's name, as stock names it).

    Also printed: the env steps the trials used (of ``--budget-steps``) and why a stop rule ended the study.
    """
    states = {state.name: len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    # Finished: COMPLETE, PRUNED, FAIL (not a WAITING retry, nor a trial still RUNNING in another worker).
    print("Number of finished trials: ", sum(n for name, n in states.items() if TrialState[name].is_finished()))
    print("Trial states: ", ", ".join(f"{name}={n}" for name, n in states.items() if n))
    used, budget = env_steps_used(study), exp.options.budget_steps
    if used or budget:
        print(f"Total env steps used: {used}" + (f" of {budget} (--budget-steps)" if budget else ""))
    rules = _prune_rules(study)
    if rules:
        print("Pruned by: " + ", ".join(f"{rule} {n}" for rule, n in rules.items()))
    if StudyAttr.ENV_SCORES in study.user_attrs:
        print(_describe_envs(study, exp.options.env_aggregate))
    stop_reason = study.user_attrs.get(STOP_ATTR)
    if stop_reason:
        print(f"Study stopped early: {stop_reason}")
    print(reports.describe_best(study))
    warm = study.user_attrs.get(StudyAttr.WARM_START)
    if warm:
        print(_describe_warm_start(study, warm))
    opts = exp.options
    report_name = (
        (f"report_{exp.env_id}_{exp.n_trials}-trials-{exp.n_timesteps}-{opts.sampler}-{pruner}_{int(time.time())}")
        .replace(":", "_")
        .replace("/", "_")
    )
    log_path = os.path.join(exp.log_folder, exp.algo, report_name)
    if exp.verbose:
        print(f"Writing report to {log_path}")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    trials = reports.trials_table(study)
    trials.to_csv(f"{log_path}.csv")
    try:
        with open(f"{log_path}.pkl", "wb+") as f:
            pickle.dump(_detached(study), f)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        _logger.warning("The study object cannot be pickled (%s); load it from its storage instead", exc)
    folder = Path(log_path)
    reports.write_report(study, folder, plots=not exp.no_optim_plots, trials=trials)
    return folder


def _prune_rules(study: optuna.Study) -> dict[str, int]:
    """Return how many PRUNED trials each rule pruned (the pruner's, the budget's, the search space's)."""
    rules: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)):
        rule = str(trial.user_attrs.get(TrialAttr.PRUNE_RULE, "pruner"))
        rules[rule] = rules.get(rule, 0) + 1
    return dict(sorted(rules.items(), key=lambda item: -item[1]))


def _describe_envs(study: optuna.Study, how: str) -> str:
    """Return the summary line of ``--tune-envs``: each env's return scoring 0 and 1, and where it came from."""
    best: dict[str, float] = {}
    for trial in study.get_trials(deepcopy=False):
        for env, scores in trial.user_attrs.get(TrialAttr.PER_ENV, {}).items():
            best[env] = max([best.get(env, -math.inf), *scores.get("raw", [])])
    parts = []
    for env, data in study.user_attrs[StudyAttr.ENV_SCORES].items():
        if data["hi"] is not None:
            parts.append(f"{env} 0 = {data['lo']:.4g}, 1 = {data['hi']:.4g} (--env-scores)")
        else:
            hi = f"{best[env]:.4g}" if env in best else "none yet"
            parts.append(f"{env} 0 = {data['lo']:.4g} (a random policy), 1 = {hi} (the best run so far)")
    note = (
        ""
        if all(d["hi"] is not None for d in study.user_attrs[StudyAttr.ENV_SCORES].values())
        else (
            "; a trial was scored against the best run before it ended (pass --env-scores ENV:LO:HI for fixed scales)"
        )
    )
    return f"Envs (value: {how} over envs of the seeds' normalised scores): " + "; ".join(parts) + note


def _describe_warm_start(study: optuna.Study, warm: dict[str, Any]) -> str:
    """Return the summary lines of the warm start: what trial 0 used, and whether it (or its retry) completed."""
    runs = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(TrialAttr.WARM_START)]
    states = ", ".join(f"trial {t.number} {t.state.name}" for t in runs) or "not run"
    done = any(t.state == TrialState.COMPLETE for t in runs)
    used = ", ".join(warm["represented"]) or "nothing"
    lines = [
        f"Warm start ({states}): " + (f"completed with rl_zoo3's tuned {used}" if done else "did not complete"),
        "Not representable in this space (left to the sampler): " + (", ".join(warm["not_represented"]) or "none"),
    ]
    return "\n".join(lines)


def _detached(study: optuna.Study) -> optuna.Study:
    """Return an in-memory copy of ``study`` to pickle: a database storage would pickle its URL (password)."""
    with storage.quiet_optuna():
        copy = optuna.create_study(
            study_name=study.study_name, directions=study.directions, sampler=study.sampler, pruner=study.pruner
        )
    for key, value in study.user_attrs.items():
        copy.set_user_attr(key, value)
    copy.add_trials(study.get_trials(deepcopy=False, states=tuple(s for s in TrialState if s.is_finished())))
    return copy
