"""Study reports: the trials CSV and Optuna's plots as self-contained HTML and as PNG images.

HTML embeds plotly.js (no CDN: many clusters are offline); PNG comes from Optuna's matplotlib
backend (no browser needed). A plot that cannot be drawn yet (e.g. importances with one trial)
is skipped with a log message.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import optuna

__all__ = ["PLOTS", "write_report"]

_logger = logging.getLogger(__name__)

#: Plot name → (plotly function, matplotlib function) names in ``optuna.visualization``.
PLOTS = {
    "optimization_history": "plot_optimization_history",
    "param_importances": "plot_param_importances",
    "parallel_coordinate": "plot_parallel_coordinate",
}


def _draw(name: str, draw: Callable[[], Any], save: Callable[[Any], None]) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            save(draw())
        return True
    except (ValueError, RuntimeError, ImportError, ZeroDivisionError) as exc:
        _logger.info("plot %s skipped: %s", name, exc)
        return False


def write_report(study: optuna.Study, folder: Path, *, plots: bool = True) -> list[Path]:
    """Write ``trials.csv`` and the study's plots (HTML and PNG) into ``folder``; return the files."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "trials.csv"]
    study.trials_dataframe().to_csv(written[0])
    if not plots or not any(t.state.is_finished() for t in study.get_trials(deepcopy=False)):
        return written
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna import visualization
    from optuna.visualization import matplotlib as mpl

    multi = len(study.directions) > 1
    plots_to_draw = {"pareto_front": "plot_pareto_front"} if multi else dict(PLOTS)
    for name, function in plots_to_draw.items():
        html, png = folder / f"{name}.html", folder / f"{name}.png"

        def save_html(fig: Any, path: Path = html) -> None:
            fig.write_html(str(path), include_plotlyjs=True)

        def save_png(ax: Any, path: Path = png) -> None:
            figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            figure.savefig(path, bbox_inches="tight", dpi=100)
            plt.close(figure)

        fn_html, fn_png = getattr(visualization, function), getattr(mpl, function)
        if _draw(name, partial(fn_html, study), save_html):
            written.append(html)
        if _draw(name, partial(fn_png, study), save_png):
            written.append(png)
    return written
