"""One stock-command study per new space, from the ready-made configs in hyperparams/."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT, STOCK, load, optimize_args, run

from zoo_ext.spaces import replay_ratio

pytestmark = pytest.mark.slow


def test_arch_config_records_net_arch_and_n_params(workdir: Path) -> None:
    conf = ROOT / "hyperparams" / "ppo_pendulum_arch.yml"
    args = [*optimize_args("ppo", "Pendulum-v1", n=256, trials=2), "--conf-file", str(conf)]
    run([*STOCK, *args, "-params", "n_envs:1", "n_steps:128"], workdir)
    study = load(workdir)
    for trial in study.trials:
        assert trial.user_attrs["search_space"] == "arch"
        policy_kwargs = trial.user_attrs["hyperparams"]["policy_kwargs"]
        assert trial.user_attrs["net_arch"] == policy_kwargs["net_arch"]
        widths = [w for part in (policy_kwargs["net_arch"].values() if isinstance(policy_kwargs["net_arch"], dict)
                                 else [policy_kwargs["net_arch"]]) for w in part]  # fmt: skip
        assert trial.user_attrs["n_params"] > sum(widths)
        assert trial.user_attrs["hyperparams"]["use_sde"] is True  # the config's values stay


def test_replay_ratio_config_with_two_envs(workdir: Path) -> None:
    conf = ROOT / "hyperparams" / "sac_pendulum_replay_ratio.yml"
    args = [*optimize_args("sac", "Pendulum-v1", n=200, trials=2), "--conf-file", str(conf)]
    proc = run([*STOCK, *args, "-params", "learning_starts:50"], workdir)
    assert "warm start: trial 0 uses rl_zoo3's tuned learning_rate" in proc.stderr
    study = load(workdir)
    assert study.trials[0].user_attrs["warm_start"] is True
    assert study.trials[0].params["learning_rate"] == pytest.approx(1e-3)
    for trial in study.trials:
        record = trial.user_attrs["hyperparams"]
        freq, steps = record["train_freq"], record["gradient_steps"]
        assert trial.user_attrs["replay_ratio"] == steps / (freq * 2)
        assert (freq, steps) == replay_ratio.derive(trial.params["replay_ratio"], trial.params["train_freq"], 2)


def test_conditional_config_warm_starts_with_zoo_values(workdir: Path) -> None:
    conf = ROOT / "hyperparams" / "dqn_cartpole_conditional.yml"
    args = [*optimize_args("dqn", "CartPole-v1", n=256, trials=2), "--conf-file", str(conf)]
    proc = run([*STOCK, *args, "-params", "learning_starts:64"], workdir)
    first = load(workdir).trials[0]
    assert first.params["target_update"] == "hard" and first.params["target_update_interval"] == 10
    assert first.params["learning_rate"] == pytest.approx(0.0023) and first.params["lr_schedule"] == "constant"
    assert first.params["train_freq"] == 256 and first.params["gradient_steps"] == 128
    assert "tau" not in first.params and "learning_rate_initial" not in first.params
    assert f"Warm start (trial 0 {first.state.name}): " in proc.stdout  # what the warm start trial became
    assert first.user_attrs["hyperparams"]["policy_kwargs"]["net_arch"] == [256, 256]  # merged with the config


def test_yaml_space_file_through_stock_command(workdir: Path) -> None:
    space = ROOT / "hyperparams" / "spaces" / "ppo_conditional.yml"
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=2), "--sampler", "random", "--pruner", "none"]
    run([*STOCK, *args, "--search-space", str(space), "-params", "n_envs:1"], workdir)
    for trial in load(workdir).trials:
        assert trial.state.name == "COMPLETE", trial.user_attrs.get("fail_reason")
        assert ("learning_rate" in trial.params) != ("learning_rate_initial" in trial.params)
        assert "rollout_size" in trial.user_attrs


def test_malformed_yaml_space_fails_before_training(workdir: Path) -> None:
    bad = workdir / "bad.yml"
    bad.write_text("params:\n  gamma: {type: float, low: 0.99, high: 0.9}\n")
    proc = run([*STOCK, *optimize_args("ppo", "CartPole-v1"), "--search-space", str(bad)], workdir, check=False)
    assert proc.returncode == 2
    assert "bad.yml: gamma:" in proc.stderr and "low" in proc.stderr
    assert not (workdir / "logs").exists()
