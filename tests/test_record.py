"""``--trial-id`` and ``export`` → stock ``--conf-file`` train with the trial's exact kwargs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import STOCK, load, optimize_args, run
from sb3_contrib import ARS  # noqa: F401 - sb3-contrib must be importable for the zoo
from stable_baselines3 import PPO

pytestmark = pytest.mark.slow

SPACE = textwrap.dedent(
    '''
    import torch
    from rl_zoo3.utils import linear_schedule


    def custom(trial, n_actions, n_envs, additional_args):
        """Schedules, classes and nested policy kwargs: everything the record must carry."""
        width = trial.suggest_categorical("width", [16, 32])
        return {
            "learning_rate": linear_schedule(trial.suggest_float("lr", 1e-4, 1e-3, log=True)),
            "gamma": 1 - trial.suggest_float("one_minus_gamma", 0.001, 0.1, log=True),
            "n_steps": 64,
            "batch_size": 32,
            "policy_kwargs": {
                "net_arch": {"pi": [width], "vf": [width, width]},
                "activation_fn": torch.nn.ReLU,
                "optimizer_class": torch.optim.RMSprop,
                "optimizer_kwargs": {"alpha": 0.9},
            },
        }
    '''
)


def _trained(workdir: Path, sub: str) -> tuple[dict, Path]:
    (folder,) = (workdir / sub).glob("ppo/CartPole-v1_*/CartPole-v1")
    return json.loads((folder / "hyperparams.json").read_text()), folder.parent / "CartPole-v1.zip"


@pytest.mark.parametrize("number", [0, 1])
def test_trial_id_and_export_round_trip(workdir: Path, number: int) -> None:
    (workdir / "myspace.py").write_text(SPACE)
    env = {"PYTHONPATH": str(workdir)}
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=2), "--sampler", "random", "--pruner", "none"]
    run([*STOCK, *args, "--search-space", "myspace:custom", "-params", "n_envs:1"], workdir, env=env)
    trial = load(workdir).trials[number]
    expected = trial.user_attrs["hyperparams"]
    assert expected["learning_rate"].startswith("lin_")
    assert expected["policy_kwargs"]["activation_fn"] == "torch.nn:ReLU"

    train = ["--algo", "ppo", "--env", "CartPole-v1", "-n", "64", "--eval-freq", "-1", "--seed", "0"]
    retrain = ["--storage", "study.log", "--study-name", "s", "--trial-id", str(number), "-params", "n_envs:1"]
    run([*STOCK, *train, *retrain, "-f", "a"], workdir, env=env)
    from_trial, _ = _trained(workdir, "a")
    assert from_trial == expected

    run(["python", "-m", "zoo_ext", "export", "--storage", "study.log", "--study-name", "s",
         "--trial", str(number), "-o", "out.yml"], workdir)  # fmt: skip
    entry = yaml.safe_load((workdir / "out.yml").read_text())["CartPole-v1"]
    assert entry["n_envs"] == 1 and "zoo_ext" not in entry
    run([*STOCK, *train, "--conf-file", "out.yml", "-f", "b"], workdir, env=env)
    from_export, _ = _trained(workdir, "b")
    assert from_export == expected

    run([*STOCK, *train, "--conf-file", "out.yml", "-f", "c"], workdir, env={**env, "ZOO_EXT_DISABLE": "1"})
    (zip_path,) = (workdir / "c").glob("ppo/CartPole-v1_*/CartPole-v1.zip")
    model = PPO.load(zip_path)
    assert model.gamma == pytest.approx(expected["gamma"])
    assert model.policy_kwargs["net_arch"] == expected["policy_kwargs"]["net_arch"]
    assert model.policy_kwargs["optimizer_kwargs"] == {"alpha": 0.9}
    assert type(model.policy.optimizer).__name__ == "RMSprop"
    initial_lr = float(expected["learning_rate"].split("_")[1])
    assert model.learning_rate(1.0) == pytest.approx(initial_lr)
    assert model.learning_rate(0.5) == pytest.approx(initial_lr / 2)


def test_export_defaults_to_best_trial(workdir: Path) -> None:
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=2), "--sampler", "random", "--pruner", "none"]
    run([*STOCK, *args, "-params", "n_envs:1"], workdir)
    out = run(["python", "-m", "zoo_ext", "export", "--storage", "study.log", "--study-name", "s", "-o", "best.yml"],
              workdir).stdout  # fmt: skip
    best = load(workdir).best_trial
    assert f"Wrote trial {best.number} " in out
    entry = yaml.safe_load((workdir / "best.yml").read_text())["CartPole-v1"]
    assert entry["gamma"] == pytest.approx(best.user_attrs["hyperparams"]["gamma"])
