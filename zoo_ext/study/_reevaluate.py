"""Re-training the best trials and a baseline on fresh seeds once the study ends (once, whatever the number of
processes), and the result card comparing them.
"""

from __future__ import annotations

import functools
import html
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import yaml
from optuna.trial import TrialState

from zoo_ext import options, pbt, record, statistics, storage, tracking
from zoo_ext.attrs import StudyAttr, TrialAttr
from zoo_ext.ceiling import fit_to_budget
from zoo_ext.objectives import aggregate
from zoo_ext.statistics import sign
from zoo_ext.training import train_run
from zoo_ext.trial import Objective

if TYPE_CHECKING:
    from zoo_ext.experiment import Experiment
    from zoo_ext.objectives import Objective as ObjectiveSpec

__all__ = ["BASELINE", "SB3_DEFAULTS", "ZOO_TUNED", "add_statistics", "baseline_config", "card_html", "card_text",
           "fresh_seeds", "reevaluate"]  # fmt: skip

_logger = logging.getLogger("zoo_ext.study")

#: The key of ``test_scores`` holding the baseline's scores and statistics.
BASELINE = "baseline"
#: Baseline kinds: rl_zoo3's tuned hyperparameters for the env, or the algorithm's SB3 defaults.
ZOO_TUNED = "zoo tuned"
SB3_DEFAULTS = "sb3 defaults"
_KIND_TEXT = {ZOO_TUNED: "rl_zoo3's tuned hyperparameters", SB3_DEFAULTS: "the algorithm's SB3 defaults"}


def _candidates(study: optuna.Study, top: int) -> list[optuna.trial.FrozenTrial]:
    """Return the trials to re-evaluate: the ``top`` best (one objective) or Pareto-optimal (several).

    In a population, the best members' last segments: each stands for its model's whole schedule.
    """
    if pbt.is_population(study):
        done = pbt.segments(study, (TrialState.COMPLETE,))
        last = max((t.user_attrs[TrialAttr.PBT_GENERATION] for t in done), default=0)
        trials = [t for t in done if t.user_attrs[TrialAttr.PBT_GENERATION] == last]
    elif len(study.directions) > 1:
        trials = study.best_trials
    else:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = sign(study.directions[0]) > 0
    return sorted(trials, key=lambda t: t.values[0], reverse=maximize)[:top]


def fresh_seeds(study: optuna.Study, study_seed: int, n: int) -> list[int]:
    """Return ``n`` seeds never used to train any trial of ``study`` (reproducible per study seed)."""
    trials = study.get_trials(deepcopy=False)
    used = {s for t in trials for s in t.user_attrs.get(TrialAttr.SEEDS, [t.user_attrs.get(TrialAttr.SEED)])}
    rng = np.random.default_rng([study_seed, 2**20])
    seeds: list[int] = []
    while len(seeds) < n:
        seed = int(rng.integers(2**31))
        if seed not in used and seed not in seeds:
            seeds.append(seed)
    return seeds


def _claim(study: optuna.Study, key: str) -> Callable[[], None] | None:
    """Return a release function if this process won ``key`` for ``study`` (None if another process holds it).

    The storage decides atomically: the claim is a study named ``<study>:<key>``, which only one
    process can create (in-memory studies always win).
    """
    if isinstance(study._storage, optuna.storages.InMemoryStorage):
        return lambda: None
    name = f"{study.study_name}:{key}"
    try:
        with storage.quiet_optuna():
            optuna.create_study(storage=study._storage, study_name=name)
    except optuna.exceptions.DuplicatedStudyError:
        return None
    return functools.partial(optuna.delete_study, study_name=name, storage=study._storage)


def _wait_for_local_trials(study: optuna.Study) -> None:
    """Wait while live processes on this host still run trials of ``study`` (a re-evaluation needs them all)."""
    while any(
        storage.is_live_local(t.user_attrs.get(storage.WORKER_ATTR))
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    ):
        time.sleep(2)


def reevaluate(study: optuna.Study, objective: Objective, tracker: tracking.Tracker | None, top: int, n: int) -> None:
    """Re-train the ``top`` best trials and a baseline with ``n`` fresh seeds; store and print the result card.

    The scores and their statistics go to study attr ``test_scores`` (see :func:`_reevaluate`).
    Several processes finishing one study re-evaluate it once: the first to claim it does, the
    others skip it; trials already re-evaluated (and a baseline already trained on these seeds)
    are not trained again.
    """
    exp = objective.exp
    _wait_for_local_trials(study)
    seeds = fresh_seeds(study, exp.seed, n)
    tests = study.user_attrs.get(StudyAttr.TEST_SCORES, {})
    todo = [t for t in _candidates(study, top) if str(t.number) not in tests]
    baseline_due = tests.get(BASELINE, {}).get("seeds") != seeds
    if not todo and not baseline_due and all("iqm" in entry for entry in tests.values()):
        return
    numbers = "-".join(str(t.number) for t in todo)
    release = _claim(study, f"reevaluation-{numbers}{'-baseline' if baseline_due else ''}")
    if release is None:
        _logger.info("another process re-evaluates study %r", study.study_name)
        return
    try:
        _reevaluate(study, objective, tracker, todo, seeds, baseline_due)
    finally:
        release()


def baseline_config(exp: Experiment) -> tuple[str, dict[str, Any]]:
    """Return the baseline's kind and constructor kwargs: rl_zoo3's tuned entry for the env if the study uses it.

    The study runs on rl_zoo3's tuned entry when the env has one in the zoo's table for the
    algorithm and the config in use gives the model the same kwargs (no ``--conf-file`` or
    ``-params`` changing them; env settings such as ``n_envs`` or ``normalize`` may differ, they
    are the study's for the baseline too): the baseline then trains with the study's base kwargs
    (:data:`ZOO_TUNED`). Otherwise it is the algorithm's SB3 defaults with the config's policy
    (:data:`SB3_DEFAULTS`). Either way the env is built as the trials build it.
    """
    kwargs = exp.base_kwargs()
    path = exp.tuned_config_path
    table = yaml.safe_load(path.read_text()) if path.is_file() else None
    entry = table.get(exp.env_id) if isinstance(table, dict) else None
    if not isinstance(entry, dict):
        return SB3_DEFAULTS, {"policy": kwargs["policy"]}
    tuned = record.plain({key: value for key, value in entry.items() if key != options.YAML_KEY})
    env_keys = exp.config.keys() - kwargs.keys()  # what rl_zoo3 took out of the config for the env (n_envs, ...)
    differ = sorted(key for key in tuned.keys() | exp.config.keys() if tuned.get(key) != exp.config.get(key))
    if set(differ) <= env_keys:
        if differ:
            _logger.info("baseline: rl_zoo3's tuned %s kwargs, with the study's %s", exp.algo, ", ".join(differ))
        return ZOO_TUNED, kwargs
    _logger.info(
        "baseline: SB3 defaults, as the config in use differs from rl_zoo3's tuned %s entry for %s in %s",
        exp.algo, exp.env_id, ", ".join(key for key in differ if key not in env_keys),
    )  # fmt: skip
    return SB3_DEFAULTS, {"policy": kwargs["policy"]}


def _train_scores(
    study: optuna.Study, objective: Objective, kwargs: Mapping[str, dict[str, Any]], seeds: Sequence[int], **run: Any
) -> dict[str, Any]:
    """Return the ``seeds``, per-objective ``scores`` and seed ``aggregate`` of ``kwargs`` (by env id) trained once
    per seed on every env of the study, scored as its trials were (:meth:`Objective.seed_scores`).

    ``run``: more :func:`~zoo_ext.training.train_run` arguments (a population's schedule and length).
    """
    inference = any(o.needs_inference for o in objective.objectives)
    runs = [
        (exp.env_id, train_run(exp, kwargs[exp.env_id], seed, measure_inference=inference, **run))
        for seed in seeds
        for exp in objective.envs
    ]
    scores = objective.seed_scores(study, runs)
    summary = {name: aggregate(values, objective.seed_aggregate) for name, values in scores.items()}
    return {"seeds": list(seeds), "scores": scores, "aggregate": summary}


def _reevaluate(
    study: optuna.Study,
    objective: Objective,
    tracker: tracking.Tracker | None,
    todo: list[optuna.trial.FrozenTrial],
    seeds: list[int],
    baseline_due: bool,
) -> None:
    """Train the ``todo`` trials, then the baseline if due, on ``seeds``; store, print and log the result card.

    ``test_scores`` holds per trial number its ``seeds``, ``scores`` and ``aggregate``, and per
    objective its ``median``, ``iqm``, ``ci95`` and ``p_improvement`` over the baseline; under
    ``baseline`` the same (no ``p_improvement``) with its ``kind``.
    """
    exp = objective.exp
    tests = dict(study.user_attrs.get(StudyAttr.TEST_SCORES, {}))
    for trial in todo:
        if isinstance(objective, pbt.SegmentObjective):  # the member's schedule, from scratch
            kwargs, callbacks, steps = objective.replay(study, trial.number)
            entry = _train_scores(study, objective, {exp.env_id: kwargs}, seeds, callbacks=callbacks, n_timesteps=steps)
        else:
            fixed = optuna.trial.FixedTrial(trial.params, number=trial.number)
            entry = _train_scores(study, objective, objective.kwargs_per_env(fixed), seeds)  # type: ignore[arg-type]
        tests[str(trial.number)] = entry
        study.set_user_attr(StudyAttr.TEST_SCORES, tests)
        if tracker is not None:
            tracker.log_test_scores(trial.number, entry["scores"], entry["aggregate"])
        _logger.info("trial %d re-evaluated on %d fresh seeds: %s", trial.number, len(seeds), entry["aggregate"])
    if baseline_due:
        kinds, per_env = {}, {}
        try:
            for one in objective.envs:  # each env's own baseline (--tune-envs)
                kinds[one.env_id], kwargs = baseline_config(one)
                if not exp.options.no_clip_to_budget:  # the trials' ceiling, so the card compares like with like
                    kwargs = fit_to_budget(one.algo_class, kwargs, n_timesteps=one.n_timesteps, n_envs=one.n_envs)[0]
                per_env[one.env_id] = kwargs
            kind = " + ".join(dict.fromkeys(kinds.values()))
            tests[BASELINE] = {"kind": kind, **_train_scores(study, objective, per_env, seeds)}
        except Exception as exc:  # noqa: BLE001 - the trials' scores are kept; a resume tries the baseline again
            kind = " + ".join(dict.fromkeys(kinds.values()))
            _logger.warning("the baseline (%s) could not be trained (%s): the card has no baseline", kind, exc)
            tests.pop(BASELINE, None)
        else:
            study.set_user_attr(StudyAttr.TEST_SCORES, tests)
            _logger.info("baseline (%s) trained on %d fresh seeds: %s", kind, len(seeds), tests[BASELINE]["aggregate"])
    tests = add_statistics(tests, objective.objectives, exp.seed)
    study.set_user_attr(StudyAttr.TEST_SCORES, tests)
    names = [o.name for o in objective.objectives]
    title = f"study {study.study_name!r}: {exp.algo} on {' + '.join(one.env_id for one in objective.envs)}"
    print(card_text(tests, names, title))
    if tracker is not None:
        tracker.log_result_card(tests, card_html(tests, names, title))


def add_statistics(
    tests: Mapping[str, Mapping[str, Any]], objectives: Sequence[ObjectiveSpec], seed: int
) -> dict[str, dict[str, Any]]:
    """Return ``tests`` with each entry's ``median``, ``iqm``, ``ci95`` and (not the baseline's) ``p_improvement``.

    Statistics per objective of the entry's scores (:mod:`zoo_ext.statistics`); bootstrap seeded
    by the study's ``seed``; no ``p_improvement`` without a baseline.
    """
    baseline = tests.get(BASELINE)
    out: dict[str, dict[str, Any]] = {}
    for key, entry in tests.items():
        scores = entry["scores"]
        stats = {o.name: statistics.describe(scores[o.name], seed=seed) for o in objectives if o.name in scores}
        new = {**entry, **{stat: {name: s[stat] for name, s in stats.items()} for stat in ("median", "iqm", "ci95")}}
        if key != BASELINE and baseline is not None:
            new["p_improvement"] = {
                o.name: statistics.probability_of_improvement(
                    scores[o.name], baseline["scores"][o.name], maximize=sign(o.direction) > 0
                )
                for o in objectives
                if o.name in scores and o.name in baseline["scores"]
            }
        out[key] = new
    return out


def _entries(tests: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    """Return the card's rows: the re-evaluated trials by number, then the baseline."""
    trials = sorted(((k, v) for k, v in tests.items() if k.isdigit()), key=lambda item: int(item[0]))
    rows = [(f"trial {key}", entry) for key, entry in trials]
    return [*rows, (BASELINE, tests[BASELINE])] if BASELINE in tests else rows


def _cells(entry: Mapping[str, Any], name: str) -> list[str]:
    """Return the median, IQM [95% CI] and P(improvement) cells of ``entry`` for objective ``name``."""
    interval = (entry.get("ci95") or {}).get(name)
    ci = "" if interval is None else f" [{interval[0]:.6g}, {interval[1]:.6g}]"
    p = (entry.get("p_improvement") or {}).get(name)
    return [f"{entry['median'][name]:.6g}", f"{entry['iqm'][name]:.6g}{ci}", "" if p is None else f"{p:.2f}"]


def _caption(tests: Mapping[str, Mapping[str, Any]], name: str) -> str:
    baseline = tests.get(BASELINE)
    n = len(next(iter(tests.values()))["seeds"])
    against = f"baseline: {_KIND_TEXT[baseline['kind']]}" if baseline else "no baseline"
    return (
        f"{name} over {n} fresh seeds ({against}, same seeds); IQM = interquartile mean, 95% CI by percentile "
        f"bootstrap ({statistics.N_RESAMPLES} resamples; none below 2 seeds); "
        "P(improvement) = P(trial better than baseline)"
    )


_HEADER = ["", "median", "IQM [95% CI]", "P(improvement)"]


def card_text(tests: Mapping[str, Mapping[str, Any]], names: Sequence[str], title: str) -> str:
    """Return the result card as a text table per objective: median, IQM [95% CI], P(improvement) of each entry."""
    lines = [f"Result card, {title}"]
    for name in names:
        rows = [_HEADER] + [[label, *_cells(entry, name)] for label, entry in _entries(tests)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
        lines.append(_caption(tests, name))
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def card_html(tests: Mapping[str, Mapping[str, Any]], names: Sequence[str], title: str) -> str:
    """Return the result card as a self-contained HTML page (inline style, no script, nothing fetched)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Result card, {html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "th,td{border:1px solid #999;padding:.3em .8em;text-align:right}th:first-child,td:first-child"
        "{text-align:left}caption{text-align:left;padding-bottom:.4em}</style>",
        f"</head><body><h1>Result card, {html.escape(title)}</h1>",
    ]
    for name in names:
        parts.append(f"<table><caption>{html.escape(_caption(tests, name))}</caption>")
        parts.append("<tr>" + "".join(f"<th>{html.escape(cell)}</th>" for cell in _HEADER) + "</tr>")
        for label, entry in _entries(tests):
            cells = [label, *_cells(entry, name)]
            parts.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
