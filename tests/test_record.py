"""``--trial-id`` and ``export`` → stock ``--conf-file`` train with the trial's exact kwargs."""

from __future__ import annotations

import functools
import json
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers import STOCK, load, optimize_args, run
from rl_zoo3.utils import linear_schedule
from sb3_contrib import ARS  # noqa: F401 - sb3-contrib must be importable for the zoo
from stable_baselines3 import PPO
from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule, get_linear_fn

from zoo_ext.record import RecordError, encode
from zoo_ext.registry import import_dotted

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


@pytest.mark.slow
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

    run([sys.executable, "-m", "zoo_ext", "export", "--storage", "study.log", "--study-name", "s",
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


@pytest.mark.slow
def test_export_defaults_to_best_trial(workdir: Path) -> None:
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=2), "--sampler", "random", "--pruner", "none"]
    run([*STOCK, *args, "-params", "n_envs:1"], workdir)
    export = [sys.executable, "-m", "zoo_ext", "export", "--storage", "study.log", "--study-name", "s"]
    out = run([*export, "-o", "best.yml"], workdir).stdout
    best = load(workdir).best_trial
    assert f"Wrote trial {best.number} " in out
    entry = yaml.safe_load((workdir / "best.yml").read_text())["CartPole-v1"]
    assert entry["gamma"] == pytest.approx(best.user_attrs["hyperparams"]["gamma"])


# --- every recorded callable imports back to the same object ------------------------------------------------


def module_level_schedule(progress_remaining: float) -> float:
    """A schedule defined at module level: recordable."""
    return 1e-3 * progress_remaining


def _linear_fn() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # get_linear_fn is deprecated in SB3
        return get_linear_fn(1e-3, 1e-4, 1.0)


def test_encodable_callables_import_back_to_the_same_object() -> None:
    kwargs = {
        "learning_rate": module_level_schedule,
        "policy_kwargs": {"activation_fn": torch.nn.ReLU, "optimizer_class": torch.optim.RMSprop},
        "policy": PPO.policy_aliases["MlpPolicy"],
        "factory": linear_schedule,
    }
    record = encode(kwargs)
    assert record["policy_kwargs"]["activation_fn"] == "torch.nn:ReLU"
    for path, obj in [
        (record["learning_rate"], module_level_schedule),
        (record["policy_kwargs"]["activation_fn"], torch.nn.ReLU),
        (record["policy_kwargs"]["optimizer_class"], torch.optim.RMSprop),
        (record["policy"], kwargs["policy"]),
        (record["factory"], linear_schedule),
    ]:
        assert import_dotted(path) is obj


def test_schedules_stay_encodable() -> None:
    assert encode(
        {"a": linear_schedule(3e-4), "b": LinearSchedule(2e-4, 0.0, 1.0), "c": FloatSchedule(0.2),
         "d": ConstantSchedule(0.1), "e": FloatSchedule(linear_schedule(0.3))}
    ) == {"a": "lin_0.0003", "b": "lin_0.0002", "c": 0.2, "d": 0.1, "e": "lin_0.3"}  # fmt: skip


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (_linear_fn(), "get_linear_fn.<locals>.func"),
        (lambda progress: 1e-3, "<lambda>"),
        (functools.partial(module_level_schedule), "functools.partial"),
    ],
    ids=["closure", "lambda", "partial"],
)
def test_unimportable_callable_is_a_record_error_naming_the_key(value: Any, what: str) -> None:
    with pytest.raises(RecordError) as info:
        encode({"n_steps": 64, "policy_kwargs": {"net_arch": [8], "activation_fn": value}})
    message = str(info.value)
    assert message.startswith("cannot record policy_kwargs.activation_fn=")
    assert what in message


def test_a_method_is_not_recorded_as_its_function() -> None:
    model_method = torch.nn.ReLU().forward  # "torch.nn:ReLU.forward" imports the function, not this
    with pytest.raises(RecordError, match=r"cannot record learning_rate=<bound method ReLU.forward"):
        encode({"learning_rate": model_method})


CLOSURE_SPACE = textwrap.dedent(
    """
    import warnings

    from stable_baselines3.common.utils import get_linear_fn


    def space(trial, n_actions, n_envs, additional_args):
        lr = trial.suggest_float("lr", 1e-4, 1e-3, log=True)
        if trial.number == 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return {"learning_rate": get_linear_fn(lr, lr / 10, 1.0), "n_steps": 64, "batch_size": 32}
        return {"learning_rate": lr, "n_steps": 64, "batch_size": 32}
    """
)


@pytest.mark.slow
def test_unrecordable_kwargs_fail_the_trial_not_the_study(workdir: Path) -> None:
    (workdir / "mymod.py").write_text(CLOSURE_SPACE)
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=2), "--sampler", "random", "--pruner", "none"]
    proc = run([*STOCK, *args, "--search-space", "mymod:space", "-params", "n_envs:1"], workdir,
               env={"PYTHONPATH": str(workdir)})  # fmt: skip
    first, second, *_ = trials = load(workdir).trials
    assert first.state.name == "FAIL"
    assert all(t.state.name == "COMPLETE" for t in trials[1:])
    reason = first.user_attrs["fail_reason"]
    assert reason.startswith("cannot record learning_rate=<function get_linear_fn.<locals>.func")
    assert "closure or local function" in reason
    assert "hyperparams" not in first.user_attrs and "seed" not in first.user_attrs  # failed before training
    assert second.state.name == "COMPLETE"
    assert second.user_attrs["hyperparams"]["learning_rate"] == pytest.approx(second.params["lr"])
    assert "cannot record learning_rate=" in proc.stderr


@pytest.mark.slow
def test_plain_training_warns_and_goes_on_when_the_record_cannot_encode(workdir: Path) -> None:
    (workdir / "conf.py").write_text(
        "import torch\n\nhyperparams = {'CartPole-v1': {'policy': 'MlpPolicy', 'n_envs': 1, 'n_timesteps': 128,"
        " 'n_steps': 64, 'batch_size': 32,"
        " 'policy_kwargs': {'net_arch': [8], 'activation_fn': lambda: torch.nn.LeakyReLU(0.1)}}}\n"
    )
    proc = run([*STOCK, "--algo", "ppo", "--env", "CartPole-v1", "--conf-file", "conf.py", "--eval-freq", "-1"],
               workdir)  # fmt: skip
    assert "WARNING: cannot record policy_kwargs.activation_fn=<function <lambda>" in proc.stderr
    assert "hyperparams.json holds its repr instead, training goes on" in proc.stderr
    (folder,) = workdir.glob("logs/ppo/CartPole-v1_1")
    assert (folder / "CartPole-v1.zip").exists()
    saved = json.loads((folder / "CartPole-v1" / "hyperparams.json").read_text())
    assert saved["n_steps"] == 64 and saved["policy_kwargs"]["net_arch"] == [8]
    assert saved["policy_kwargs"]["activation_fn"].startswith("<function <lambda>")
