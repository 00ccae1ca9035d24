"""End to end: the unchanged ``python -m rl_zoo3.train -optimize`` runs its study through zoo_ext."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from helpers import STOCK, load, optimize_args, run

pytestmark = pytest.mark.slow

ZOO_PARAMS = {
    "ppo": {"batch_size_pow", "n_steps_pow", "one_minus_gamma", "one_minus_gae_lambda", "learning_rate",
            "ent_coef", "clip_range", "n_epochs", "max_grad_norm", "net_arch", "activation_fn"},
    "sac": {"one_minus_gamma", "batch_size_pow", "learning_rate", "train_freq", "tau", "net_arch"},
    "dqn": {"one_minus_gamma", "batch_size_pow", "learning_rate", "train_freq", "subsample_steps",
            "exploration_final_eps", "exploration_fraction", "target_update_interval", "net_arch"},
}  # fmt: skip


@pytest.mark.parametrize(
    ("algo", "env_id", "sampler", "pruner", "sampler_class", "pruner_class"),
    [
        ("ppo", "Pendulum-v1", "tpe", "median", "TPESampler", "MedianPruner"),
        ("ppo", "Pendulum-v1", "cmaes", "hyperband", "CmaEsSampler", "HyperbandPruner"),
        ("sac", "Pendulum-v1", "random", "wilcoxon", "RandomSampler", "WilcoxonPruner"),
        ("sac", "Pendulum-v1", "gp", "hyperband", "GPSampler", "HyperbandPruner"),
        ("dqn", "CartPole-v1", "qmc", "wilcoxon", "QMCSampler", "WilcoxonPruner"),
        ("dqn", "CartPole-v1", "auto", "median", "TPESampler", "MedianPruner"),
    ],
)
def test_stock_command_runs_study_through_zoo_ext(
    workdir: Path, algo: str, env_id: str, sampler: str, pruner: str, sampler_class: str, pruner_class: str
) -> None:
    n = 200 if algo == "sac" else 256
    args = [*optimize_args(algo, env_id, n=n), "--sampler", sampler, "--pruner", pruner, "--n-startup-trials", "1"]
    proc = run([*STOCK, *args, "-params", "n_envs:1"], workdir, env={"ZOO_EXT_HUB_OFFLINE": "1"})
    assert f"Sampler: {sampler_class}" in proc.stdout
    assert f"Pruner: {pruner_class}" in proc.stdout
    if sampler == "auto":
        assert "auto: OptunaHub package 'samplers/auto_sampler' is not cached" in proc.stderr
        assert "picked TPESampler because the space has 9 parameters (1 categorical" in proc.stderr
    study = load(workdir)
    assert len(study.trials) == 2
    for trial in study.trials:
        assert trial.state.name in {"COMPLETE", "PRUNED"}, trial.user_attrs.get("fail_reason")
        assert set(trial.params) == ZOO_PARAMS[algo]
        assert trial.user_attrs["search_space"] == "zoo"
        record = trial.user_attrs["hyperparams"]
        assert math.isclose(record["gamma"], 1 - trial.params["one_minus_gamma"])
        clipped = trial.user_attrs.get("clipped", {}).get("batch_size")  # -n is a ceiling: it may be fitted
        sampled = 2 ** trial.params["batch_size_pow"]
        assert record["batch_size"] == (sampled if clipped is None else clipped["to"])
        assert clipped is None or clipped["from"] == sampled
    assert study.user_attrs["zoo_ext_options"]["sampler"] == sampler


def test_disable_gives_stock_trial_parameters(workdir: Path) -> None:
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=3), "--sampler", "random", "--pruner", "none"]
    stock_dir, ext_dir = workdir / "stock", workdir / "ext"
    stock_dir.mkdir()
    ext_dir.mkdir()
    run([*STOCK, *args], stock_dir, env={"ZOO_EXT_DISABLE": "1"})
    run([*STOCK, *args], ext_dir)
    stock, ext = load(stock_dir), load(ext_dir)
    assert [t.params for t in stock.trials] == [t.params for t in ext.trials]
    assert all("hyperparams" not in t.user_attrs for t in stock.trials)
    assert all("hyperparams" in t.user_attrs for t in ext.trials)


def test_python_m_zoo_ext_train_is_the_same_command(workdir: Path) -> None:
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=1), "--sampler", "random", "--search-space", "zoo"]
    proc = run([sys.executable, "-m", "zoo_ext", "train", *args], workdir, env={"ZOO_EXT_DISABLE": "1"})
    assert "Sampler: RandomSampler" in proc.stdout
    assert load(workdir).trials[0].user_attrs["search_space"] == "zoo"


def test_gym_packages_activates_with_yaml_block(workdir: Path) -> None:
    conf = workdir / "conf.yml"
    conf.write_text(
        "CartPole-v1:\n  n_envs: 1\n  n_timesteps: 1000\n  policy: MlpPolicy\n"
        "  zoo_ext:\n    sampler: qmc\n    pruner: none\n    sampler_kwargs: {scramble: true}\n"
    )
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=1), "--conf-file", str(conf)]
    proc = run([*STOCK, *args, "--gym-packages", "zoo_ext"], workdir, env={"ZOO_EXT_DISABLE": "1"})
    assert "Sampler: QMCSampler - Pruner: NopPruner" in proc.stdout
    assert load(workdir).user_attrs["zoo_ext_options"]["sampler_kwargs"] == {"scramble": True}


def test_yaml_block_never_reaches_the_constructor(workdir: Path) -> None:
    conf = workdir / "conf.yml"
    conf.write_text("CartPole-v1:\n  n_envs: 1\n  n_timesteps: 256\n  policy: MlpPolicy\n  n_steps: 64\n"
                    "  zoo_ext: {search_space: zoo}\n")  # fmt: skip
    run([*STOCK, "--algo", "ppo", "--env", "CartPole-v1", "--conf-file", str(conf), "--eval-freq", "-1"], workdir)
    (record,) = workdir.glob("logs/ppo/CartPole-v1_1/CartPole-v1/hyperparams.json")
    assert "zoo_ext" not in record.read_text()
