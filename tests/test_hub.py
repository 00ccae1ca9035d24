"""``hub:`` samplers and pruners and ``auto`` load OptunaHub packages offline: a local registry folder or the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import STOCK, load, optimize_args, run
from optuna.trial import TrialState

from zoo_ext.hub import HubError
from zoo_ext.pruners import check_pruner_name, create_pruner
from zoo_ext.samplers import check_sampler_name

PACKAGE = '''
from optuna.samplers import RandomSampler


class {name}(RandomSampler):
    """A sampler package laid out like the OptunaHub registry."""


__all__ = ["{name}"]
'''

PRUNER_PACKAGE = '''
from optuna.pruners import BasePruner


class {name}(BasePruner):
    """A pruner package laid out like the OptunaHub registry: prunes every trial at its first report."""

    def __init__(self, n_startup_trials: int = 0) -> None:
        self.n_startup_trials = n_startup_trials

    def prune(self, study, trial) -> bool:
        return trial.last_step is not None


__all__ = ["{name}"]
'''


def _package(root: Path, name: str, cls: str, *, category: str = "samplers", source: str = PACKAGE) -> None:
    folder = root / category / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(source.format(name=cls))
    (folder / "README.md").write_text(f"# {name}\n")
    (folder / "LICENSE").write_text("MIT\n")


@pytest.fixture
def pruner_registry(tmp_path: Path) -> Path:
    """A local OptunaHub registry holding the pruner package ``mypruner`` (class ``PruneAtFirstReport``)."""
    registry = tmp_path / "registry"
    _package(registry, "mypruner", "PruneAtFirstReport", category="pruners", source=PRUNER_PACKAGE)
    return registry


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


def test_create_pruner_loads_hub_pruner_from_local_registry(pruner_registry: Path) -> None:
    pruner = create_pruner("hub:mypruner", {}, n_startup_trials=3, n_evaluations=2, hub_registry=str(pruner_registry))
    assert type(pruner).__name__ == "PruneAtFirstReport"
    assert type(pruner).__module__ == "optunahub_registry.package.pruners.mypruner"
    assert pruner.n_startup_trials == 3  # the study's context reaches the parameters the class names


@pytest.mark.parametrize("spec", ["hub:", "hub:pruners/", "hub::PruneAtFirstReport"])
def test_hub_pruner_spec_without_a_package_is_refused(spec: str) -> None:
    with pytest.raises(HubError, match=f"--pruner '{spec}' names no OptunaHub package"):
        check_pruner_name(spec)
    check_pruner_name("hub:mypruner:PruneAtFirstReport")


def test_unknown_hub_pruner_lists_the_local_registry(pruner_registry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_EXT_HUB_OFFLINE", "1")
    monkeypatch.setenv("OPTUNAHUB_CACHE_HOME", str(pruner_registry.parent / "empty-cache"))
    with pytest.raises(HubError) as info:
        create_pruner("hub:mypruner2", {}, n_startup_trials=1, n_evaluations=1, hub_registry=str(pruner_registry))
    message = str(info.value)
    assert "OptunaHub package 'pruners/mypruner2' is not cached" in message
    assert f"--hub-registry {pruner_registry} has: pruners/mypruner. Did you mean 'pruners/mypruner'?" in message


@pytest.mark.slow
def test_hub_pruner_prunes_a_stock_study(workdir: Path, pruner_registry: Path) -> None:
    args = [*optimize_args("a2c", "CartPole-v1", n=256, trials=2), "--sampler", "random"]
    flags = ["--pruner", "hub:mypruner", "--hub-registry", str(pruner_registry)]
    proc = run([*STOCK, *args, *flags, "-params", "n_envs:1"], workdir, env={"ZOO_EXT_HUB_OFFLINE": "1"})
    assert "Pruner: PruneAtFirstReport" in proc.stdout
    trials = load(workdir).trials
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.PRUNED]
    assert [len(t.intermediate_values) for t in trials] == [1, 1]  # pruned at the first of 2 evaluations


@pytest.mark.slow
def test_unknown_hub_pruner_exits_2(workdir: Path, pruner_registry: Path) -> None:
    args = [*optimize_args("a2c", "CartPole-v1", n=256, trials=1), "--pruner", "hub:nothing_here"]
    proc = run([*STOCK, *args, "--hub-registry", str(pruner_registry)], workdir,
               env={"ZOO_EXT_HUB_OFFLINE": "1"}, check=False)  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "zoo_ext: error: OptunaHub package 'pruners/nothing_here' is not cached" in proc.stderr
    assert "has: pruners/mypruner" in proc.stderr
    assert not (workdir / "study.log").exists()
