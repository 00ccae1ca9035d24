"""The adapter: every rl_zoo3 name zoo_ext uses still exists, and its tables and helpers work."""

from __future__ import annotations

import importlib

from zoo_ext import adapter


def test_touched_module_names_exist() -> None:
    for module_name, names in adapter.TOUCHED_MODULE_NAMES.items():
        module = importlib.import_module(module_name)
        missing = [name for name in names if not hasattr(module, name)]
        assert not missing, f"rl_zoo3 changed: {module_name} no longer has {missing}"


def test_tables_and_helpers() -> None:
    from stable_baselines3 import PPO

    assert adapter.algo_classes()["ppo"] is PPO
    assert "ppo" in adapter.zoo_search_spaces()
    assert callable(adapter.zoo_converter("ppo"))
    assert "Pendulum-v1" in adapter.default_config_path("ppo").read_text()
    schedule = adapter.linear_schedule(0.5)
    assert schedule(1.0) == 0.5 and schedule(0.0) == 0.0
    assert adapter.callback_list(None) == []
