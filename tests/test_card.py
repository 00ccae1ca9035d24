"""The result card of ``--reevaluate-top``: baseline, statistics, stdout table, MLflow parent run, export comment."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from helpers import STOCK, load, mlflow_runs, mlflow_store, optimize_args, run
from mlflow import MlflowClient
from scipy.stats import mannwhitneyu, trim_mean
from stable_baselines3 import A2C

from zoo_ext import adapter, statistics
from zoo_ext.objectives import resolve_objectives
from zoo_ext.study._reevaluate import SB3_DEFAULTS, ZOO_TUNED, add_statistics, baseline_config, card_html, card_text
from zoo_ext.tracking._mapping import card_metrics

SCORES = {
    "3": {"seeds": [10, 11, 12], "scores": {"mean_reward": [5.0, 7.0, 9.0]}, "aggregate": {"mean_reward": 7.0}},
    "baseline": {
        "kind": "sb3 defaults",
        "seeds": [10, 11, 12],
        "scores": {"mean_reward": [1.0, 7.0, 2.0]},
        "aggregate": {"mean_reward": 10 / 3},
    },
}


def test_card_statistics_text_html_and_metrics() -> None:
    tests = add_statistics(SCORES, resolve_objectives(["mean_reward"]), seed=4)
    trial, base = tests["3"], tests["baseline"]
    assert trial["median"] == {"mean_reward": 7.0} and base["iqm"] == {"mean_reward": pytest.approx(10 / 3)}
    assert trial["ci95"]["mean_reward"] == list(statistics.iqm_ci([5.0, 7.0, 9.0], seed=4))
    # 5 beats 1 and 2, 7 beats 1 and 2 and ties 7, 9 beats all: 7.5 of 9 pairs.
    assert trial["p_improvement"] == {"mean_reward": pytest.approx(7.5 / 9)}
    assert "p_improvement" not in base and base["kind"] == "sb3 defaults"

    text = card_text(tests, ["mean_reward"], "study 's'")
    rows = text.splitlines()
    assert rows[0] == "Result card, study 's'" and "the algorithm's SB3 defaults" in rows[1]
    assert rows[3].split()[:4] == ["trial", "3", "7", "7"] and rows[3].endswith("0.83")
    assert rows[4].split()[0] == "baseline"

    page = card_html(tests, ["mean_reward"], "study <s>")
    assert page.startswith("<!DOCTYPE html>") and "study &lt;s&gt;" in page
    assert "<script" not in page and "http" not in page and "<td>0.83</td>" in page

    metrics = card_metrics(tests)
    assert metrics["card/trial_3/mean_reward/p_improvement"] == pytest.approx(7.5 / 9)
    assert metrics["card/baseline/mean_reward/ci95_low"] == base["ci95"]["mean_reward"][0]
    assert "card/baseline/mean_reward/p_improvement" not in metrics
    one_seed = {
        "1": {"seeds": [1], "scores": {"x": [2.0]}, "median": {"x": 2.0}, "iqm": {"x": 2.0}, "ci95": {"x": None}}
    }
    assert card_metrics(one_seed) == {"card/trial_1/x/median": 2.0, "card/trial_1/x/iqm": 2.0}


def test_card_per_objective_follows_its_direction() -> None:
    two = {
        key: {**entry, "scores": {**entry["scores"], "train_time": [3.0, 1.0, 2.0] if key == "3" else [4.0, 5.0, 0.5]}}
        for key, entry in SCORES.items()
    }
    tests = add_statistics(two, resolve_objectives(["mean_reward", "train_time"]), seed=4)
    # train_time is minimised: the trial wins a pair when it is faster (3 of 3 against 4 and 5, 0 against 0.5).
    assert tests["3"]["p_improvement"]["train_time"] == pytest.approx(6 / 9)
    text = card_text(tests, ["mean_reward", "train_time"], "study 's'")
    assert [line.split()[0] for line in text.splitlines() if line.startswith(("mean_reward", "train_time"))] == [
        "mean_reward",
        "train_time",
    ]


def _experiment(env_id: str, config: dict[str, Any]) -> Any:
    """Return the parts of an experiment :func:`baseline_config` reads (rl_zoo3 drops n_envs, n_timesteps)."""
    kwargs = {k: v for k, v in config.items() if k not in ("n_envs", "n_timesteps")}
    return SimpleNamespace(algo="a2c", env_id=env_id, config=config, base_kwargs=lambda: dict(kwargs),
                           tuned_config_path=adapter.default_config_path("a2c"))  # fmt: skip


def test_baseline_is_the_zoo_tuned_entry_when_the_study_runs_on_it() -> None:
    tuned = {"ent_coef": 0.0, "n_envs": 8, "n_timesteps": 500000.0, "policy": "MlpPolicy"}  # rl_zoo3 2.9's a2c.yml
    assert baseline_config(_experiment("CartPole-v1", tuned)) == (ZOO_TUNED, {"ent_coef": 0.0, "policy": "MlpPolicy"})
    # Env settings (-params n_envs:2) are the study's for the baseline too.
    assert baseline_config(_experiment("CartPole-v1", {**tuned, "n_envs": 2}))[0] == ZOO_TUNED
    # Other model kwargs (a --conf-file of one's own, -params learning_rate:...) are not rl_zoo3's tuned entry.
    other = _experiment("CartPole-v1", {**tuned, "learning_rate": 0.01})
    assert baseline_config(other) == (SB3_DEFAULTS, {"policy": "MlpPolicy"})
    # No tuned entry for the env in rl_zoo3's table.
    assert baseline_config(_experiment("NoSuchEnv-v0", tuned)) == (SB3_DEFAULTS, {"policy": "MlpPolicy"})


@pytest.mark.slow
def test_result_card_in_stdout_study_mlflow_and_export(workdir: Path) -> None:
    uri = mlflow_store(workdir)
    args = [*optimize_args("a2c", "CartPole-v1", n=256, trials=2), "--reevaluate-top", "1", "--eval-seeds", "3",
            "--mlflow-tracking-uri", uri]  # fmt: skip
    proc = run([*STOCK, *args], workdir)
    study = load(workdir)
    tests = study.user_attrs["test_scores"]
    (number,) = (key for key in tests if key != "baseline")
    trial, base = tests[number], tests["baseline"]
    # a2c has a tuned CartPole-v1 entry in rl_zoo3's table, and the study ran on it.
    assert base["kind"] == "zoo tuned"
    assert base["seeds"] == trial["seeds"] and len(trial["seeds"]) == 3
    assert not set(base["seeds"]) & {s for t in study.trials for s in t.user_attrs["seeds"]}
    for entry in (trial, base):
        scores = entry["scores"]["mean_reward"]
        assert entry["iqm"]["mean_reward"] == pytest.approx(trim_mean(scores, 0.25))
        assert entry["ci95"]["mean_reward"] == list(statistics.iqm_ci(scores, seed=3))
        assert entry["median"]["mean_reward"] == pytest.approx(statistics.median(scores))
    expected = mannwhitneyu(trial["scores"]["mean_reward"], base["scores"]["mean_reward"]).statistic / 9
    assert trial["p_improvement"]["mean_reward"] == pytest.approx(expected)

    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Result card, study 's': a2c on CartPole-v1"))
    assert "mean_reward over 3 fresh seeds (baseline: rl_zoo3's tuned hyperparameters" in lines[start + 1]
    assert lines[start + 3].split()[:2] == ["trial", number]
    assert lines[start + 3].endswith(f"{trial['p_improvement']['mean_reward']:.2f}")
    assert lines[start + 4].split()[0] == "baseline"

    (parent,), _ = mlflow_runs(uri)
    metrics = parent.data.metrics
    assert metrics[f"card/trial_{number}/mean_reward/iqm"] == pytest.approx(trial["iqm"]["mean_reward"])
    assert metrics[f"card/trial_{number}/mean_reward/p_improvement"] == pytest.approx(expected)
    assert metrics["card/baseline/mean_reward/ci95_high"] == pytest.approx(base["ci95"]["mean_reward"][1])
    client = MlflowClient(uri)
    page = Path(client.download_artifacts(parent.info.run_id, "result_card.html", str(workdir))).read_text()
    assert f"<td>trial {number}</td>" in page and "<td>baseline</td>" in page and "<script" not in page

    run([sys.executable, "-m", "zoo_ext", "export", "--storage", "study.log", "--study-name", "s", "--trial", number,
         "-o", "best.yml"], workdir)  # fmt: skip
    text = (workdir / "best.yml").read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert text.startswith("# zoo_ext export: study 's' (a2c on CartPole-v1), trial " + number)
    assert header[1] == f"# re-evaluated on 3 fresh seeds {trial['seeds']}:"
    iqm, (low, high) = trial["iqm"]["mean_reward"], trial["ci95"]["mean_reward"]
    assert f"IQM {iqm:.6g} [95% CI {low:.6g}, {high:.6g}]" in header[2]
    assert f"P(improvement) {expected:.2f} over the baseline (zoo tuned, same seeds" in header[2]
    gamma = yaml.safe_load(text)["CartPole-v1"]["gamma"]
    train = ["--algo", "a2c", "--env", "CartPole-v1", "-n", "64", "--eval-freq", "-1", "--num-threads", "1"]
    run([*STOCK, *train, "--conf-file", "best.yml", "-f", "stock"], workdir, env={"ZOO_EXT_DISABLE": "1"})
    (zip_path,) = (workdir / "stock").glob("a2c/CartPole-v1_*/CartPole-v1.zip")
    assert A2C.load(zip_path).gamma == pytest.approx(gamma)
