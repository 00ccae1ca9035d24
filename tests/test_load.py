"""``scripts/load_test.py --quick``: 4 processes on one PostgreSQL study tracked by ``zoo_ext.mlflow.track``, one
killed with SIGKILL midway: every finished trial has exactly one run of the right status, the parent run's
``best_value`` is the study's, and each mode's throughput is measured."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from helpers import ROOT, run

pytestmark = pytest.mark.slow


def test_quick_load_test_leaves_one_run_per_trial_of_the_right_status(tmp_path: Path) -> None:
    proc = run([sys.executable, str(ROOT / "scripts" / "load_test.py"), "--quick", "--out", "load"], tmp_path,
               check=False)  # fmt: skip
    results = json.loads((tmp_path / "load" / "results.json").read_text())
    output = f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, output
    assert results["ok"] and results["problems"] == [], output
    assert results["mode"] == "quick"
    assert results["settings"] | {"workers": 4, "trials": 100, "kill": 1} == results["settings"]
    modes = results["modes"]
    assert set(modes) >= {"untracked", "zoo_ext"}
    assert "mlflow_callback" in modes or results["mlflow_callback_left_out"]
    for mode, row in modes.items():
        assert math.isfinite(row["trials_per_second"]) and row["trials_per_second"] > 0, mode
        assert row["finished_trials"] >= 100 and len(row["killed_pids"]) == 1 and row["workers_ok"], mode
    assert all(math.isfinite(r) and r > 0 for r in results["ratios"].values())
    assert "zoo_ext_vs_untracked" in results["ratios"]
    checks = results["checks"]
    assert checks["sync"]["returncode"] == 0, checks["sync"]["output"]
    # Before the sync too, unless no worker was left to fail a killed worker's stale trial (the script then did).
    late = modes["zoo_ext"]["failed_after_workers_ended"]
    for when in ("after_sync",) if late else ("before_sync", "after_sync"):
        c = checks[when]
        counts = {key: c[key] for key in ("missing", "duplicated", "wrong_status", "running_forever")}
        assert counts == {"missing": [], "duplicated": [], "wrong_status": [], "running_forever": []}, (when, c)
        assert c["trial_runs"] == c["finished_trials"] == modes["zoo_ext"]["finished_trials"], (when, c)
        assert c["parent_runs"] == 1 and c["parent_status"] == ["FINISHED"], (when, c)
        assert c["best_value_equal"] and c["parent_best_value"] == c["study_best_value"], (when, c)
    assert "result: OK" in proc.stdout and "zoo_ext / untracked: " in proc.stdout
