"""``scripts/benchmark.py --quick`` runs all three sections against stock rl_zoo3 and records their ratios."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run

pytestmark = pytest.mark.slow


def test_quick_benchmark_prints_three_sections(tmp_path: Path) -> None:
    proc = run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--quick", "--out", "bench"], tmp_path)
    for header in ("== overhead:", "== throughput:", "== search efficiency:"):
        assert header in proc.stdout
    assert "same trials (params) in both: yes" in proc.stdout  # zoo_ext samples exactly the stock trials
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert results["mode"] == "quick"
    ratios = [
        results["overhead"]["median_trial_ratio"],
        results["throughput"]["vs_n_jobs_1"],
        results["throughput"]["vs_n_jobs_2"],
        results["search"]["steps_ratio"],
    ]
    assert all(math.isfinite(r) and r > 0 for r in ratios)
    for label in ("stock", "zoo_ext"):
        (row,) = results["search"]["rows"][label]
        assert len(row["retrain_returns"]) == 2 and all(math.isfinite(r) for r in row["retrain_returns"])
        assert row["env_steps_used"] > 0
