"""``scripts/benchmark.py --quick`` runs every section against stock rl_zoo3 and records its ratios and scores."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from helpers import ROOT, run

pytestmark = pytest.mark.slow


def test_quick_benchmark_prints_every_section(tmp_path: Path) -> None:
    proc = run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--quick", "--out", "bench"], tmp_path)
    for header in ("== overhead:", "== small study:", "== throughput:", "== search efficiency:", "== cold:",
                   "== leaderboard:", "== pbt:", "== multi_env:"):  # fmt: skip
        assert header in proc.stdout
    assert "same trials (params) in both: yes" in proc.stdout  # zoo_ext samples exactly the stock trials
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert results["mode"] == "quick"
    ratios = [
        results["overhead"]["median_trial_ratio"],
        results["throughput"]["vs_n_jobs_1"],
        results["throughput"]["vs_n_jobs_2"],
        results["search"]["steps_ratio"],
        results["small_study"]["command_ratio"],
        results["small_study"]["mirror_command_ratio"],
        results["cold"]["racing"]["env_steps_share"],
    ]
    assert all(math.isfinite(r) and r > 0 for r in ratios)
    for label in ("stock", "zoo_ext"):
        (row,) = results["search"]["rows"][label]
        assert len(row["retrain_returns"]) == 2 and all(math.isfinite(r) for r in row["retrain_returns"])
        assert row["env_steps_used"] > 0
    cold = results["cold"]["a2c-CartPole-v1"]
    assert 0.0 <= cold["p_improvement"] <= 1.0
    for label in ("stock", "zoo_ext"):
        low, high = cold[label]["ci95"]
        assert len(cold[label]["scores"]) == 2 and low <= cold[label]["iqm"] <= high
    assert "P(zoo_ext > stock) = " in proc.stdout and "racing used " in proc.stdout
    board = results["leaderboard"]
    assert board["dehb"].startswith(("DEHB left out: ", "DEHB included"))
    methods = board["problems"]["a2c-CartPole-v1"]
    assert list(methods)[:4] == ["stock TPE+median", "random, cold space", "preset cold", "preset cold, 3 seeds raced"]
    for label, entry in methods.items():
        assert len(entry["scores"]) == 2 and entry["env_steps"] > 0 and 0.0 <= entry["p_improvement"] <= 1.0
        assert label == "stock TPE+median" or entry["ceiling_ratio"] <= 2  # -n plus one rollout of at most -n
    assert (tmp_path / "bench" / "leaderboard.png").stat().st_size > 0
    assert "| a2c-CartPole-v1 | preset cold | " in proc.stdout
    populations = results["pbt"]["problems"]["a2c-CartPole-v1"]
    assert list(populations) == ["preset cold (TPE)", "PBT", "PB2"]
    for entry in populations.values():  # a population's best member re-trained through its exported schedule
        assert len(entry["scores"]) == 2 and all(math.isfinite(s) for s in entry["scores"])
    assert populations["PBT"]["env_steps"] <= 3 * 1024 + 3 * 5 * 40  # 3 members x -n, at most a rollout per segment
    assert results["pbt"]["workers"]["ratio"] > 0 and "| a2c-CartPole-v1 | PB2 | " in proc.stdout
    multi = results["multi_env"]["methods"]
    assert list(multi) == ["multi-env", "CartPole-v1 only", "Acrobot-v1 only"]
    for label, entry in multi.items():  # each best re-trained on 2 fresh seeds on both envs, scored on 0..1 ranges
        assert len(entry["scores"]) == 4 and all(0.0 <= s <= 1.0 for s in entry["scores"])
        assert entry["env_steps"] > 0 and entry["ci95"][0] <= entry["iqm"] <= entry["ci95"][1]
        assert label == "multi-env" or 0.0 <= entry["p_multi_env_better_transferred"] <= 1.0
    assert multi["multi-env"]["env_steps"] >= 4096  # ran to its --budget-steps: 2 trials x 2 envs x 1024
    assert "| multi-env | " in proc.stdout and "multi_env: multi-env IQM " in proc.stdout
