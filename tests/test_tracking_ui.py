"""The MLflow UI, served by a real ``mlflow server``, shows every trial run (headless Chromium)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, STOCK, load, optimize_args, run

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
ARTIFACTS = ROOT / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A throw-away ``mlflow server`` on 127.0.0.1 with its own SQLite store; yields its URL."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--default-artifact-root", str(tmp_path / "artifacts")]  # fmt: skip
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server_log = (tmp_path / "server.log").read_text()
                    raise AssertionError(f"mlflow server did not start:\n{server_log}") from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


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
