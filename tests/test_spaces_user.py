"""User search spaces: by decorator, entry point and dotted path; bad spaces fail before training."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pytest
from helpers import STOCK, load, optimize_args, run
from stable_baselines3 import PPO

from zoo_ext.spaces._probe import InvalidSearchSpaceError, probe_space

SPACES = textwrap.dedent(
    '''
    import math

    import optuna
    from zoo_ext import register_search_space


    @register_search_space("ppo", "lr-only")
    def lr_only(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict:
        """PPO: learning rate and n_steps only."""
        return {
            "learning_rate": trial.suggest_float("lr", 1e-4, 1e-3, log=True),
            "n_steps": trial.suggest_categorical("n_steps", [32, 64]),
        }


    def gamma_only(trial, n_actions, n_envs, additional_args):
        """Gamma only (for the entry point and dotted-path tests)."""
        return {"gamma": 1 - trial.suggest_float("one_minus_gamma_x", 0.001, 0.1, log=True), "n_steps": 64}


    def bad_key(trial, n_actions, n_envs, additional_args):
        return {"learning_rate": trial.suggest_float("lr", 1e-4, 1e-3), "not_a_ppo_kwarg": 1}


    def nan_first(trial, n_actions, n_envs, additional_args):
        """Trial 0 trains with a NaN learning rate and diverges."""
        lr = trial.suggest_float("lr", 1e-4, 1e-3)
        return {"learning_rate": math.nan if trial.number == 0 else lr, "n_steps": 64}
    '''
)


@pytest.fixture
def user_site(workdir: Path) -> Path:
    """A folder on PYTHONPATH with the user's module and a tiny installed distribution."""
    site = workdir / "site"
    site.mkdir()
    (site / "myspaces.py").write_text(SPACES)
    dist = site / "myspaces_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myspaces-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[zoo_ext.search_spaces]\nppo.gamma-ep = myspaces:gamma_only\n")
    return site


def _env(site: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(site)}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "extra", "params"),
    [
        ("decorator", ["--search-space", "lr-only", "--gym-packages", "myspaces"], {"lr", "n_steps"}),
        ("entry point", ["--search-space", "gamma-ep"], {"one_minus_gamma_x"}),
        ("dotted path", ["--search-space", "myspaces:gamma_only"], {"one_minus_gamma_x"}),
    ],
)
def test_user_space_is_the_one_sampled(
    workdir: Path, user_site: Path, how: str, extra: list[str], params: set[str]
) -> None:
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=2), "--sampler", "random", "--pruner", "none"]
    run([*STOCK, *args, *extra, "-params", "n_envs:1"], workdir, env=_env(user_site))
    study = load(workdir)
    assert [set(t.params) for t in study.trials] == [params, params]
    name = extra[1]
    assert all(t.user_attrs["search_space"] == name for t in study.trials)


@pytest.mark.slow
def test_list_shows_entry_point_and_registered_spaces(workdir: Path, user_site: Path) -> None:
    out = run([sys.executable, "-m", "zoo_ext", "list", "--algo", "ppo"], workdir, env=_env(user_site)).stdout
    assert "gamma-ep [ppo]" in out and "entry point myspaces:gamma_only (myspaces-plugin)" in out
    assert "Gamma only (for the entry point and dotted-path tests)." in out
    assert "zoo [ppo]" in out and "tpe" in out and "wilcoxon" in out


@pytest.mark.slow
def test_space_with_unknown_key_fails_before_training(workdir: Path, user_site: Path) -> None:
    args = optimize_args("ppo", "CartPole-v1", n=128, trials=1)
    proc = run([*STOCK, *args, "--search-space", "myspaces:bad_key"], workdir, env=_env(user_site), check=False)
    assert proc.returncode == 2
    assert "'not_a_ppo_kwarg', which PPO does not accept" in proc.stderr
    assert not (workdir / "study.log").exists()


@pytest.mark.slow
def test_diverging_trial_is_recorded_not_fatal(workdir: Path, user_site: Path) -> None:
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=2), "--sampler", "random", "--pruner", "none"]
    run([*STOCK, *args, "--search-space", "myspaces:nan_first", "-params", "n_envs:1"], workdir, env=_env(user_site))
    first, *rest = load(workdir).trials
    assert first.state.name == "FAIL"
    assert first.user_attrs["fail_reason"].startswith(("training failed", "diverged"))
    assert rest and all(t.state.name == "COMPLETE" for t in rest)


# --- the probe: some failing samples are a warning, all failing samples an error -------------------------


def _space(fail: Any) -> Any:
    """Return a space raising ``fail(trial)`` (an exception, or None for a good sample)."""

    def space(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
        lr = trial.suggest_float("lr", 1e-4, 1e-3, log=True)
        error = fail(trial)
        if error is not None:
            raise error
        return {"learning_rate": lr}

    return space


def _probe(space: Any) -> Any:
    return probe_space(space, "x", PPO, 2, 1, {})


def test_probe_warns_when_some_samples_raise(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="zoo_ext.spaces._probe")
    info = _probe(_space(lambda t: ValueError(f"bad sample {t.number}") if t.number in (2, 5, 9) else None))
    assert info.describe() == "1 parameter (0 categorical, unconditional)"
    assert [r.getMessage() for r in caplog.records] == [
        "search space 'x' raised on 3 of 16 probe samples (19%); first error: ValueError: bad sample 2"
    ]


def test_probe_counts_trial_pruned_as_rejected_not_as_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="zoo_ext.spaces._probe")
    _probe(_space(lambda t: optuna.TrialPruned("invalid combination") if t.number % 2 else None))
    assert not caplog.records
    with pytest.raises(InvalidSearchSpaceError, match=r"rejected every probe sample \(16 of 16 raised optuna"):
        _probe(_space(lambda t: optuna.TrialPruned()))


def test_probe_fails_when_every_sample_raises() -> None:
    with pytest.raises(InvalidSearchSpaceError) as info:
        _probe(_space(lambda t: optuna.TrialPruned() if t.number < 4 else KeyError("k")))
    assert str(info.value) == (
        "search space 'x' raised on every probe sample (12 of 16; 4 rejected); first error: KeyError: 'k'"
    )


def test_probe_still_fails_on_one_bad_key_or_a_non_dict() -> None:
    def bad_key_once(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict:
        return {"learning_rate": 1e-3, **({"not_a_ppo_kwarg": 1} if trial.number == 7 else {})}

    with pytest.raises(InvalidSearchSpaceError, match="'not_a_ppo_kwarg', which PPO does not accept"):
        _probe(bad_key_once)
    with pytest.raises(InvalidSearchSpaceError, match="must return a dict of keyword arguments, got list"):
        _probe(lambda trial, n_actions, n_envs, additional_args: [])


ACTIVATION_SPACE = """\
algos: [ppo]
params:
  learning_rate: {type: float, low: 0.0001, high: 0.001, log: true}
  activation_fn: {type: categorical, choices: [tanh, relu], to: policy_kwargs.activation_fn}
"""


@pytest.mark.slow
def test_yaml_choice_the_constructor_cannot_use_exits_before_training(workdir: Path) -> None:
    (workdir / "acts.yml").write_text(ACTIVATION_SPACE)
    proc = run([*STOCK, *optimize_args("ppo", "CartPole-v1"), "--search-space", "acts.yml"], workdir, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "choice 'tanh' of 'activation_fn' cannot be used to build the model" in proc.stderr
    assert not (workdir / "study.log").exists()  # stopped before the study was created
