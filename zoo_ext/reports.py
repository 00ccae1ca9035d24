"""Study reports: the trials CSV and Optuna's plots as self-contained HTML and as PNG images.

HTML embeds plotly.js (no CDN: many clusters are offline); PNG comes from Optuna's matplotlib
backend (no browser needed). Parameter importances are PED-ANOVA's (:func:`importance_evaluator`),
which rates conditional parameters too. A plot that cannot be drawn yet is skipped with a log message.
A population study (``--scheduler pbt|pb2``) also gets ``population.png`` (:func:`population_plot`):
each member's reward and perturbed values over its env steps, its exploits marked.
"""

from __future__ import annotations

import difflib
import logging
import re
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from zoo_ext import storage
from zoo_ext.attrs import StudyAttr, TrialAttr
from zoo_ext.statistics import sign

__all__ = [
    "PLOTS",
    "describe_best",
    "importance_evaluator",
    "member_segments",
    "pareto_table",
    "pick",
    "population_plot",
    "trials_table",
    "write_report",
]

_logger = logging.getLogger(__name__)

#: Plot name → function name, in both ``optuna.visualization`` (HTML) and its ``matplotlib`` module (PNG).
PLOTS = {
    "optimization_history": "plot_optimization_history",
    "param_importances": "plot_param_importances",
    "parallel_coordinate": "plot_parallel_coordinate",
}
#: Characters of an objective name (e.g. a dotted path ``pkg.mod:fn``) not used in file names.
_FILE_UNSAFE = re.compile(r"[^\w.-]")
#: How the population plot marks a segment that copied another member's checkpoint.
_EXPLOIT_MARKER: dict[str, Any] = {"marker": "*", "s": 140, "edgecolors": "black", "linewidths": 0.6, "zorder": 3}


def _draw(name: str, draw: Callable[[], Any], save: Callable[[Any], None]) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            save(draw())
        return True
    except (ValueError, RuntimeError, ImportError, ZeroDivisionError) as exc:
        _logger.info("plot %s skipped: %s", name, exc)
        return False


def importance_evaluator() -> optuna.importance.BaseImportanceEvaluator:
    """Return the evaluator of the importances plot: PED-ANOVA.

    Unlike fANOVA and mean decrease impurity, which rate only the parameters present in every
    completed trial, it rates conditional parameters too (on the trials that have them).
    """
    return optuna.importance.PedAnovaImportanceEvaluator()


def _plots(study: optuna.Study) -> dict[str, tuple[str, optuna.Study, dict[str, Any]]]:
    """Return the plots to draw: file name → (Optuna plot function, the study to plot, keyword arguments).

    One objective: :data:`PLOTS`. Several: the Pareto front (2 or 3 objectives; Optuna draws no
    more), the parameter importances (bars per objective) and one optimization history per objective.
    """
    importances: dict[str, Any] = {"evaluator": importance_evaluator()}
    if len(study.directions) == 1:
        return {
            name: (function, study, importances if name == "param_importances" else {})
            for name, function in PLOTS.items()
        }
    plots: dict[str, tuple[str, optuna.Study, dict[str, Any]]] = {
        "pareto_front": ("plot_pareto_front", study, {}),
        "param_importances": ("plot_param_importances", _minimized(study), importances),
    }
    for i, objective in enumerate(objective_names(study)):
        target = {"target": partial(_objective_value, i), "target_name": objective}
        name = "optimization_history_" + _FILE_UNSAFE.sub("_", objective)
        plots[name] = ("plot_optimization_history", study, target)
    return plots


def _minimized(study: optuna.Study) -> optuna.Study:
    """Return an in-memory copy of ``study``'s completed trials in which every objective is minimised.

    For several objectives Optuna hands PED-ANOVA one target per objective, and PED-ANOVA then
    rates what it takes to reach *low* values: maximised objectives are negated here, so their
    importances are those of reaching high values. Objective names become the legend.
    """
    signs = [-sign(d) for d in study.directions]
    with storage.quiet_optuna(), storage.experimental():
        view = optuna.create_study(study_name=f"{study.study_name}-minimized", directions=["minimize"] * len(signs))
        view.set_metric_names(objective_names(study))
    view.add_trials(
        optuna.trial.create_trial(
            params=t.params,
            distributions=t.distributions,
            values=[negate * v for negate, v in zip(signs, t.values, strict=True)],
        )
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    )
    return view


def _objective_value(index: int, trial: optuna.trial.FrozenTrial) -> float:
    return float(trial.values[index])


def trials_table(study: optuna.Study) -> Any:
    """Return the study's ``trials_dataframe()``; one objective's column keeps stock's name ``value``.

    Named objectives (``set_metric_names``) make Optuna write ``value_<name>``: scripts that read
    rl_zoo3's report CSV expect ``value``. Several objectives keep their ``values_<name>`` columns.
    """
    table = study.trials_dataframe()
    if len(study.directions) == 1 and study.metric_names:
        table = table.rename(columns={f"value_{study.metric_names[0]}": "value"})
    return table


def write_report(study: optuna.Study, folder: Path, *, plots: bool = True, trials: Any = None) -> list[Path]:
    """Write ``trials.csv`` and the study's plots (HTML and PNG) into ``folder``; return the files.

    A population study also gets ``population.png`` (:func:`population_plot`), even without ``plots``.

    ``trials``: the study's :func:`trials_table` when the caller already has it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "trials.csv"]
    (trials_table(study) if trials is None else trials).to_csv(written[0])
    population = population_plot(study, folder / "population.png")  # also with --no-optim-plots: it is the result
    if population is not None:
        written.append(population)
    if not plots or not any(t.state.is_finished() for t in study.get_trials(deepcopy=False)):
        return written
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna import visualization
    from optuna.visualization import matplotlib as mpl

    for name, (function, plotted, kwargs) in _plots(study).items():
        html, png = folder / f"{name}.html", folder / f"{name}.png"

        def save_html(fig: Any, path: Path = html) -> None:
            fig.write_html(str(path), include_plotlyjs=True)

        def save_png(ax: Any, path: Path = png) -> None:
            figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            figure.savefig(path, bbox_inches="tight", dpi=100)
            plt.close(figure)

        fn_html, fn_png = getattr(visualization, function), getattr(mpl, function)
        if _draw(name, partial(fn_html, plotted, **kwargs), save_html):
            written.append(html)
        if _draw(name, partial(fn_png, plotted, **kwargs), save_png):
            written.append(png)
    return written


def member_segments(study: optuna.Study) -> dict[int, list[tuple[int, optuna.trial.FrozenTrial]]]:
    """Return each member's complete segments in generation order, each with the member's env steps so far.

    The env steps are the sum of ``env_steps`` of the member's complete segments up to and including
    the segment: the x axis on which a population's members are compared (the plot, the member runs
    in MLflow). Trials without ``pbt_member`` (a plain study) are left out, so a plain study gives {}.
    """
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if TrialAttr.PBT_MEMBER in t.user_attrs
    ]
    done.sort(key=lambda t: (t.user_attrs[TrialAttr.PBT_GENERATION], t.number))
    members: dict[int, list[tuple[int, optuna.trial.FrozenTrial]]] = {}
    for trial in done:
        steps = members.setdefault(int(trial.user_attrs[TrialAttr.PBT_MEMBER]), [])
        total = (steps[-1][0] if steps else 0) + int(trial.user_attrs.get(TrialAttr.ENV_STEPS, 0))
        steps.append((total, trial))
    return dict(sorted(members.items()))


def population_plot(study: optuna.Study, path: Path) -> Path | None:
    """Draw a population study's members into the PNG ``path``; return it, or None for a study with no complete segment.

    The first panel is each member's reward (the segment's value) against its env steps
    (:func:`member_segments`); each perturbed key (``pbt_live``) gets a panel of its values on the
    same axis, in log scale when they span more than a decade. A star marks a segment that copied
    another member's checkpoint (exploit): where a member's curve jumps, the star says why.
    """
    members = member_segments(study)
    if not members:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(
        {key for segs in members.values() for _, t in segs for key in t.user_attrs.get(TrialAttr.PBT_LIVE, {})}
    )
    fig, axes = plt.subplots(1 + len(keys), 1, sharex=True, figsize=(7.0, 3.0 + 2.2 * len(keys)), squeeze=False)
    reward = axes[0][0]
    for member, segs in members.items():
        color = f"C{member % 10}"
        xs = [x for x, _ in segs]
        exploited = [bool(t.user_attrs.get(TrialAttr.PBT_EXPLOITED)) for _, t in segs]
        _member_line(reward, xs, [t.value for _, t in segs], exploited, color, label=f"member {member}")
        for key, (ax,) in zip(keys, axes[1:], strict=True):
            live = [t.user_attrs.get(TrialAttr.PBT_LIVE, {}).get(key) for _, t in segs]
            _member_line(ax, xs, live, exploited, color, steps=True)
    reward.scatter([], [], color="white", label="exploit: copied a checkpoint", **_EXPLOIT_MARKER)
    reward.set_title(f"population of study {study.study_name!r}")
    reward.set_ylabel(f"{objective_names(study)[0]} (segment end)")
    reward.legend(fontsize=7, loc="best")
    for key, (ax,) in zip(keys, axes[1:], strict=True):
        values = [float(y) for line in ax.get_lines() for y in line.get_ydata()]
        if values and min(values) > 0 and max(values) / min(values) > 10:
            ax.set_yscale("log")
        ax.set_ylabel(key)
    for (ax,) in axes:
        ax.grid(alpha=0.3)
    axes[-1][0].set_xlabel("member env steps (its complete segments)")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", dpi=100)
    plt.close(fig)
    return path


def _member_line(
    ax: Any,
    xs: list[int],
    ys: list[Any],
    exploited: list[bool],
    color: str,
    *,
    label: str | None = None,
    steps: bool = False,
) -> None:
    """Draw one member's values ``ys`` over its env steps ``xs`` on ``ax`` (None skipped), starring its exploits.

    ``steps``: each value held over the whole segment it ends (a perturbed value), drawn as a staircase.
    """
    points = [(x, float(y), jump) for x, y, jump in zip(xs, ys, exploited, strict=True) if y is not None]
    if not points:
        return
    line_x, line_y, _ = zip(*points, strict=True)
    ax.plot(
        line_x,
        line_y,
        marker="o",
        markersize=4,
        color=color,
        drawstyle="steps-pre" if steps else "default",
        label=label,
    )
    jumps = [(x, y) for x, y, jump in points if jump]
    if jumps:
        ax.scatter(*zip(*jumps, strict=True), color=color, **_EXPLOIT_MARKER)


def objective_names(study: optuna.Study) -> list[str]:
    """Return the study's objective names (``value`` / ``value_<i>`` for studies made without them)."""
    names = study.user_attrs.get(StudyAttr.OBJECTIVES)
    if names and len(names) == len(study.directions):
        return list(names)
    return ["value"] if len(study.directions) == 1 else [f"value_{i}" for i in range(len(study.directions))]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [
        "  ".join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=False)) for row in [header, *rows]
    ]
    return "\n".join(lines)


def pareto_table(study: optuna.Study) -> str:
    """Return the Pareto-optimal trials as a table: number, each objective, test score if any."""
    names = objective_names(study)
    tests = study.user_attrs.get(StudyAttr.TEST_SCORES, {})
    header = ["trial", *[f"{n} ({d.name.lower()[:3]})" for n, d in zip(names, study.directions, strict=False)]]
    if tests:
        header.append(f"test {names[0]}")
    rows = []
    for trial in sorted(study.best_trials, key=lambda t: t.number):
        row = [str(trial.number), *[f"{v:.6g}" for v in trial.values]]
        if tests:
            score = tests.get(str(trial.number), {}).get("aggregate", {}).get(names[0])
            row.append("" if score is None else f"{score:.6g}")
        rows.append(row)
    return _table(header, rows)


def describe_best(study: optuna.Study) -> str:
    """Return the best trial (one objective) or the Pareto-optimal trials (several), as text."""
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return "No trial completed."
    if len(study.directions) > 1:
        return f"Pareto-optimal trials ({len(study.best_trials)}):\n{pareto_table(study)}"
    trial = study.best_trial
    lines = [f"Best trial: {trial.number}", f"Value:  {trial.value}", "Params: "]
    lines += [f"    {key}: {value}" for key, value in trial.params.items()]
    lines.append("Hyperparams: ")
    lines += [f"    {key}: {value}" for key, value in trial.user_attrs.get(TrialAttr.RECORD, {}).items()]
    tests = study.user_attrs.get(StudyAttr.TEST_SCORES, {})
    if tests:
        lines.append("Re-evaluated on fresh seeds (tuning value -> test score):")
        for number, scores in sorted(((k, v) for k, v in tests.items() if k.isdigit()), key=lambda kv: int(kv[0])):
            tuned = study.trials[int(number)].value if int(number) < len(study.trials) else None
            test = scores["aggregate"].get(objective_names(study)[0])
            lines.append(f"    trial {number}: {tuned:.6g} -> {test:.6g} (seeds {scores['seeds']})")
    return "\n".join(lines)


def pick(study: optuna.Study, how: str | None) -> int:
    """Return the number of the trial to export.

    ``None``: the best trial (one objective) or the knee point (several); ``"knee"``: the Pareto
    trial closest to the ideal point after scaling each objective to [0, 1]; ``"test"``: the best
    re-evaluation score (``--reevaluate-top``); an objective name: the Pareto trial best on it.
    """
    names = objective_names(study)
    maximize = [sign(d) > 0 for d in study.directions]
    if how == "test":
        tests = study.user_attrs.get(StudyAttr.TEST_SCORES)
        if not tests:
            raise ValueError("no test scores: run the study with --reevaluate-top K")
        better = 1.0 if maximize[0] else -1.0
        return int(max((n for n in tests if n.isdigit()), key=lambda n: better * tests[n]["aggregate"][names[0]]))
    pareto = study.best_trials
    if not pareto:
        raise ValueError(f"study {study.study_name!r} has no completed trial")
    if how == "knee" and len(names) == 1:
        raise ValueError(f"--pick knee: study {study.study_name!r} has one objective; its best trial is the default")
    if how is None and len(names) == 1:
        return study.best_trial.number
    if how is None or how == "knee":
        values = np.array([t.values for t in pareto], dtype=float)
        values[:, maximize] *= -1  # every column minimised
        low, high = values.min(axis=0), values.max(axis=0)
        scaled = (values - low) / np.where(high > low, high - low, 1.0)
        return pareto[int(np.argmin(np.linalg.norm(scaled, axis=1)))].number
    if how not in names:
        choices = ["knee", "test", *names] if len(names) > 1 else ["test", *names]
        close = difflib.get_close_matches(how, choices, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown --pick {how!r} for study {study.study_name!r}.{hint} Valid: {', '.join(choices)}")
    i = names.index(how)
    best = max if maximize[i] else min
    return best(pareto, key=lambda t: t.values[i]).number
