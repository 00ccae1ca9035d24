"""``hub:`` and ``auto`` load OptunaHub packages offline: a local registry folder or the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import STOCK, load, optimize_args, run

from zoo_ext.samplers import HubError, check_sampler_name

PACKAGE = '''
from optuna.samplers import RandomSampler


class {name}(RandomSampler):
    """A sampler package laid out like the OptunaHub registry."""


__all__ = ["{name}"]
'''


def _package(root: Path, name: str, cls: str) -> None:
    folder = root / "samplers" / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(PACKAGE.format(name=cls))
    (folder / "README.md").write_text(f"# {name}\n")
    (folder / "LICENSE").write_text("MIT\n")


@pytest.mark.slow
def test_hub_sampler_from_local_registry(workdir: Path) -> None:
    registry = workdir / "registry"
    _package(registry, "my_sampler", "HubRandomSampler")
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=2), "--pruner", "none"]
    flags = ["--sampler", "hub:my_sampler", "--hub-registry", str(registry)]
    proc = run([*STOCK, *args, *flags, "-params", "n_envs:1"], workdir, env={"ZOO_EXT_HUB_OFFLINE": "1"})
    assert "Sampler: HubRandomSampler" in proc.stdout
    assert len(load(workdir).trials) == 2


@pytest.mark.slow
def test_auto_uses_cached_hub_package_without_network(workdir: Path) -> None:
    cache = workdir / "optunahub-cache" / "github.com" / "optuna" / "optunahub-registry" / "main" / "package"
    _package(cache, "auto_sampler", "AutoSampler")
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=1), "--sampler", "auto", "--pruner", "none"]
    proc = run([*STOCK, *args, "-params", "n_envs:1"], workdir, env={"ZOO_EXT_HUB_OFFLINE": "1"})
    assert "auto: using OptunaHub AutoSampler from" in proc.stderr
    assert "Sampler: AutoSampler" in proc.stdout


@pytest.mark.parametrize("spec", ["hub:", "hub:samplers/", "hub:/auto_sampler", "hub::AutoSampler"])
def test_hub_spec_without_a_package_is_refused(spec: str) -> None:
    with pytest.raises(HubError, match=f"--sampler '{spec}' names no OptunaHub package"):
        check_sampler_name(spec)
    check_sampler_name("hub:auto_sampler:AutoSampler")
