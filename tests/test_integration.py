"""The integration: the methods it patches, the parser it widens and the manager attributes it reads still exist."""

from __future__ import annotations

import argparse
import inspect
import sys
import types

import pytest

from zoo_ext import adapter, integration


def test_patched_methods_exist_with_stock_signatures() -> None:
    ExperimentManager = adapter.experiment_manager_class()

    original = getattr(integration, "_ORIGINALS", {})
    for name in integration.PATCHED_METHODS:
        method = original.get(name, getattr(ExperimentManager, name))
        params = list(inspect.signature(method).parameters)
        assert params[0] == "self", name
    assert list(inspect.signature(original.get("_save_config", ExperimentManager._save_config)).parameters) == [
        "self",
        "saved_hyperparams",
    ]


def test_train_builds_its_parser_from_module_argparse() -> None:
    import rl_zoo3.train

    source = inspect.getsource(rl_zoo3.train.train)
    assert "argparse.ArgumentParser()" in source, "rl_zoo3.train no longer builds its parser inline"
    assert "--sampler" in source and "--pruner" in source


def test_experiment_manager_has_every_attribute_read(tmp_path) -> None:
    ExperimentManager = adapter.experiment_manager_class()
    args = argparse.Namespace(search_space=None, sampler=None, sampler_kwargs=None, pruner=None,
                              pruner_kwargs=None, hub_registry=None)  # fmt: skip
    manager = ExperimentManager(
        args, "ppo", "CartPole-v1", str(tmp_path), n_timesteps=100, optimize_hyperparameters=True, n_evaluations=1
    )
    integration.install()
    assert manager.setup_experiment() is None
    missing = [name for name in integration.TOUCHED_ATTRIBUTES if not hasattr(manager, name)]
    assert not missing, f"rl_zoo3 changed: ExperimentManager has no {missing}"
    experiment = integration.ZooExperiment(manager)
    assert experiment.env_id == "CartPole-v1" and experiment.options.search_space == "zoo"
    assert experiment.base_kwargs()["policy"] == "MlpPolicy"
    env = experiment.make_env(1)
    assert env.num_envs == 1
    env.close()
    assert experiment.tuned_config_path.name == "ppo.yml" and experiment.tuned_config_path.is_file()
    assert experiment.worker_main is adapter.run_train
    with pytest.raises(AttributeError, match="read-only once built"):
        experiment.n_jobs = 1  # type: ignore[misc]


def test_hook_is_armed_but_heavy_modules_are_not_imported() -> None:
    import subprocess

    code = "import sys; print(sorted(m for m in sys.modules if m.startswith(('zoo_ext', 'optuna', 'rl_zoo3'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={}).stdout
    assert out.strip() == "['zoo_ext', 'zoo_ext._startup']"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"ZOO_EXT_DISABLE": "1"}
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_stock_help_lists_zoo_ext_options() -> None:
    import subprocess

    out = subprocess.run([sys.executable, "-m", "rl_zoo3.train", "--help"], capture_output=True, text=True).stdout
    assert "--search-space" in out and "--sampler-kwargs" in out and "--hub-registry" in out


def test_stock_seed_line_is_printed_once_and_true(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """rl_zoo3.train prints ``Seed: N`` before ``--trial-id`` can replace N: the line waits for the true seed."""
    import rl_zoo3.train

    assert 'print(f"Seed: {args.seed}")' in inspect.getsource(rl_zoo3.train.train), "rl_zoo3 changed its seed line"
    module = types.ModuleType("train")
    integration.patch_train_module(module)
    stock_line = 'print(f"Seed: {3309232883}")'  # the stock call, run in the patched module's namespace
    for argv in (["--algo", "a2c"], ["--trial-id", "0", "--seed", "5"]):  # the seed stays the stock one
        monkeypatch.setattr(sys, "argv", ["train", *argv])
        exec(stock_line, vars(module))
        assert capsys.readouterr().out == "Seed: 3309232883\n"
        assert not integration._print_seed_line(12, 0)  # nothing held back
    monkeypatch.setattr(sys, "argv", ["train", "--trial-id", "0"])
    exec(stock_line, vars(module))
    assert capsys.readouterr().out == ""
    assert integration._print_seed_line(12, 0)
    assert capsys.readouterr().out == "Seed: 12, the one trial 0 trained with (--seed overrides it)\n"
