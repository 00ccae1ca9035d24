"""The MLflow UI, served by a real ``mlflow server``, shows every trial run and the best value (headless Chromium)."""

from __future__ import annotations

import itertools
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers import ROOT, STOCK, load, mlflow_server, optimize_args, run

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(name="mlflow_server")
def mlflow_server_fixture(tmp_path: Path) -> Iterator[str]:
    """A throw-away ``mlflow server`` on 127.0.0.1 with its own SQLite store; yields its URL."""
    with mlflow_server(tmp_path, f"sqlite:///{tmp_path / 'server.db'}") as url:
        yield url


def _post(url: str, endpoint: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{endpoint}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_trial_runs_are_browsable_in_the_mlflow_ui(workdir: Path, mlflow_server: str) -> None:
    from playwright.sync_api import sync_playwright

    args = [*optimize_args("ppo", "CartPole-v1", n=64, trials=3), "--sampler", "random", "--pruner", "none",
            "-params", "n_envs:1", "n_steps:32", "--study-name", "ui-study"]  # fmt: skip
    run([*STOCK, *args], workdir, env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert len(load(workdir, "ui-study").trials) == 3

    get = f"{mlflow_server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ppo-CartPole-v1"
    with urllib.request.urlopen(get, timeout=30) as response:
        experiment = json.loads(response.read())
    experiment_id = experiment["experiment"]["experiment_id"]
    found = _post(mlflow_server, "runs/search", {"experiment_ids": [experiment_id], "max_results": 100})
    names = sorted(r["info"]["run_name"] for r in found["runs"])
    assert names == ["trial-0", "trial-1", "trial-2", "ui-study"]
    (study_run,) = [r for r in found["runs"] if r["info"]["run_name"] == "ui-study"]
    parent_id = study_run["info"]["run_id"]
    best = max(t.value for t in load(workdir, "ui-study").trials)
    metrics = {m["key"]: m["value"] for m in study_run["data"]["metrics"]}
    assert metrics["best_value"] == pytest.approx(best) and metrics["n_complete"] == 3

    ARTIFACTS.mkdir(exist_ok=True)
    url = f"{mlflow_server}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(url)
        parent = page.get_by_text("ui-study", exact=True)
        parent.first.wait_for(timeout=60_000)
        # Nested runs are collapsed under their parent: expand it, as a user would.
        row = page.locator("[role=row]", has=parent).first
        row.locator("button[data-component-id*=runnamecellrenderer]").click()
        for number in range(3):
            page.get_by_text(f"trial-{number}", exact=True).wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "mlflow-ui-runs.png"))
        _check_best_value_column(page, parent_id, best)
        _check_best_value_chart(page, "ui-study", n_points=3)
        page.screenshot(path=str(ARTIFACTS / "mlflow-ui-chart.png"))
        browser.close()


def _check_best_value_column(page: Page, parent_id: str, best: float) -> None:
    """Show the metric column ``best_value`` as a user would (Columns, the metric): the study's row holds ``best``."""
    close = page.get_by_role("button", name="Close")  # the MLflow Assistant side panel, if shown: room for the column
    if close.count() == 1:
        close.click()
    columns = page.get_by_role("button", name="Columns", exact=True)
    columns.click()
    page.get_by_title("best_value", exact=True).click()
    columns.click()  # closes the column selector
    cell = page.locator(f"[role=row][row-id='{parent_id}'] [role=gridcell][col-id='metrics.`best_value`']")
    cell.wait_for(timeout=30_000)
    assert float(cell.inner_text()) == pytest.approx(best, rel=1e-4)


def _check_best_value_chart(page: Page, study_name: str, n_points: int) -> None:
    """Switch to the chart view: a card ``best_value`` plots the study's run, one point per trial, never falling."""
    page.locator("label", has=page.locator("input[name=runs-view-mode][value=CHART]")).click()
    card = page.locator("[data-testid=experiment-view-compare-runs-card]", has=page.locator("h4[title=best_value]"))
    line = card.locator("svg path.js-line")
    line.first.wait_for(timeout=30_000)
    assert card.get_by_text(f"{study_name} (best_value)", exact=True).is_visible()  # the legend names the study's run
    assert card.locator("svg path.point").count() == n_points
    # A maximised value never falls: the line's y pixel coordinates (growing downwards) never grow.
    ys = [float(y) for y in re.findall(r"[ML][-\d.]+,([-\d.]+)", line.first.get_attribute("d") or "")]
    assert len(ys) >= 2 and all(b <= a + 1e-6 for a, b in itertools.pairwise(ys)), ys
    card.scroll_into_view_if_needed()
