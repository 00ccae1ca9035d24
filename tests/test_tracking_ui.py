"""The MLflow UI, served by a real ``mlflow server``, shows every trial run (headless Chromium)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, STOCK, load, mlflow_server, optimize_args, run

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

    ARTIFACTS.mkdir(exist_ok=True)
    url = f"{mlflow_server}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        parent = page.get_by_text("ui-study", exact=True)
        parent.first.wait_for(timeout=60_000)
        # Nested runs are collapsed under their parent: expand it, as a user would.
        row = page.locator("[role=row]", has=parent).first
        row.locator("button[data-component-id*=runnamecellrenderer]").click()
        for number in range(3):
            page.get_by_text(f"trial-{number}", exact=True).wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "mlflow-ui-runs.png"))
        browser.close()
