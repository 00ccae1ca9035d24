"""Bad input exits with status 2 before any environment is built, saying what is valid; doubtful input warns once."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import socket
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import ROOT, STOCK, free_port, optimize_args, run, start
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from stable_baselines3 import PPO

from zoo_ext import options
from zoo_ext.samplers import create_sampler
from zoo_ext.spaces import SEARCH_SPACES
from zoo_ext.spaces._probe import InvalidSearchSpaceError, SpaceInfo, probe_space

TINY = ["-params", "n_envs:1", "n_steps:32", "batch_size:32"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--search-space", "zo"], "'zo' for --algo ppo. Did you mean 'zoo'? Valid choices: arch, cold, conditional"),
        (["--sampler", "tpee"], "unknown sampler 'tpee'. Did you mean 'tpe'? Valid choices: auto, bruteforce, cmaes"),
        (["--pruner", "hyperbnd"], "unknown pruner 'hyperbnd'. Did you mean 'hyperband'? Valid choices: halving"),
        (["--sampler", "optuna.samplers:NoSuchSampler"], "module 'optuna.samplers' has no attribute 'NoSuchSampler'"),
        (["--search-space", "no_such_pkg.spaces:f"], "cannot import module 'no_such_pkg.spaces'"),
        (
            ["--pruner", "threshold"],
            "the threshold pruner needs --pruner-kwargs lower:VALUE and/or upper:VALUE. It accepts: lower, upper,"
            " n_warmup_steps, interval_steps",
        ),
        (["--preset", "colt"], "unknown preset 'colt'. Did you mean 'cold'? Valid choices: cold"),
        (["--sampler", "hub:nothing_here"], "OptunaHub package 'samplers/nothing_here' is not cached"),
        (["--sampler", "hub:"], "--sampler 'hub:' names no OptunaHub package: use hub:[CATEGORY/]PACKAGE[:Class]"),
        (["--objectives", "mean_reward", "mean_reward"], "objective(s) 'mean_reward' given more than once"),
        (
            ["--reevaluate-top", "1", "--eval-seeds", "0"],
            "--eval-seeds must be at least 1 (fresh seeds per re-evaluated trial), not 0",
        ),
        (["--n-workers", "0"], "--n-workers must be at least 1 (1: this process only), not 0"),
        (["--n-workers", "-1"], "--n-workers must be at least 1 (1: this process only), not -1"),
        (["-n", "1"], "-n 1 is less than one env step for each of the 8 envs: no trial fits it"),
        (["--n-seeds", "0"], "--n-seeds must be at least 1, not 0"),
        (
            ["--storage", "sqlite:///x.db", "--heartbeat-interval", "10", "--grace-period", "5"],
            "--grace-period (5 s) must be at least --heartbeat-interval (10 s)",
        ),
        (
            ["-f", "/proc/zoo_ext_logs"],
            "-f/--log-folder '/proc/zoo_ext_logs': cannot create the folder '/proc/zoo_ext_logs': No such file or"
            " directory",
        ),
        (
            ["-f", "/dev/null/logs"],
            "-f/--log-folder '/dev/null/logs': cannot create the folder '/dev/null/logs': '/dev/null' is not a folder",
        ),
        (
            ["-params", "learnin_rate:0.1"],
            "PPO takes no keyword argument 'learnin_rate' (from the env's hyperparams or -params). Did you mean"
            " 'learning_rate' for 'learnin_rate'? Valid keys: batch_size, clip_range, clip_range_vf, device,",
        ),
        (
            ["--sampler", "bruteforce"],
            "the space has continuous parameter(s) (a float without step): ent_coef, learning_rate, max_grad_norm,"
            " one_minus_gae_lambda, one_minus_gamma.",
        ),
        (
            ["--sampler", "tpe", "--sampler-kwargs", "bogus:1"],
            "'tpe' cannot be built with ['bogus']: TPESampler takes no keyword argument 'bogus'. It accepts: ",
        ),
        (
            ["--sampler", "cmaes", "--sampler-kwargs", "sigm0:0.2"],
            "Did you mean 'sigma0' for 'sigm0'? It accepts: x0, sigma0, n_startup_trials, independent_sampler",
        ),
        (
            ["--pruner", "median", "--pruner-kwargs", "n_warmup:2"],
            "Did you mean 'n_warmup_steps' for 'n_warmup'? It accepts: n_startup_trials, n_warmup_steps",
        ),
        (
            ["--scheduler", "pbt", "--pbt-keys", "lr", "tau"],
            "--pbt-keys lr, tau: ppo cannot change them in a live model. Valid keys: learning_rate, ent_coef,",
        ),
        (["--scheduler", "pb2", "--n-seeds", "2"], "--scheduler pb2 trains one model per member: --n-seeds must be 1"),
        (["--scheduler", "pbt", "--perturb-interval", "1"], "no trial fits it; give a larger --perturb-interval"),
        (["--scheduler", "pbt", "--pruner", "median"], "--scheduler pbt replaces pruning (a bad member copies a good"),
        (["--scheduler", "pbs"], "--scheduler must be one of none, pbt, pb2, got 'pbs'"),
        (["--tune-envs", "Acrobat-v1"], "--tune-envs: gymnasium has no env 'Acrobat-v1'; did you mean Acrobot-v1"),
        (["--tune-envs", "Acrobot-v1", "Acrobot-v1"], "--tune-envs lists Acrobot-v1 more than once"),
        (["--tune-envs", "Pendulum-v1", "--algo", "dqn"], "--tune-envs Pendulum-v1: DQN cannot be built on it"),
        (["--tune-envs", "LunarLander-v3"], "--tune-envs LunarLander-v3: cannot set it up (DependencyNotInstalled: "),
        (["--env-scores", "CartPole-v1:0:500"], "--env-scores normalises the scores of several envs: it needs"),
        (
            ["--tune-envs", "Acrobot-v1", "--env-scores", "Pendulum-v1:0:1"],
            "--env-scores names 'Pendulum-v1', which is not tuned on: the envs are CartPole-v1, Acrobot-v1",
        ),
        (["--tune-envs", "Acrobot-v1", "--env-scores", "Acrobot-v1:0"], "'Acrobot-v1:0': write ENV:LO:HI"),
        (["--tune-envs", "Acrobot-v1", "--env-scores", "Acrobot-v1:0:-5"], "HI must be a finite number above LO"),
        (["--tune-envs", "Acrobot-v1", "--scheduler", "pbt"], "--scheduler pbt trains each member on one env"),
        (
            ["--sampler", "cmaes", "--sampler-kwargs", "restart_strategy:ipop"],
            "--sampler-kwargs 'restart_strategy:ipop': values are Python expressions (NameError: name 'ipop' is not"
            " defined); to pass a string, quote it: restart_strategy:\"'ipop'\"",
        ),
    ],
)
def test_bad_input_exits_2_before_training(workdir: Path, flags: list[str], expected: str) -> None:
    args = optimize_args("ppo", "CartPole-v1", n=128, trials=1)
    proc = run([*STOCK, *args, *flags], workdir, check=False, env={"ZOO_EXT_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("zoo_ext: error: ")]
    assert expected in line and "_init_setup_model" not in line
    assert "Trial 0" not in proc.stdout + proc.stderr
    assert not (workdir / "study.log").exists() and not (workdir / "x.db").exists()


@pytest.mark.slow
def test_objective_direction_must_be_maximize_or_minimize(workdir: Path) -> None:
    (workdir / "my_objectives.py").write_text(
        "def score(result, metric):\n    return 0.0\n\n\nscore.direction = 'max'\n"
    )
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=1), "--objectives", "my_objectives:score"]
    proc = run([*STOCK, *args], workdir, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    expected = "objective 'my_objectives:score' has direction 'max': it must be one of maximize, minimize"
    assert f"zoo_ext: error: {expected}" in proc.stderr
    assert "Trial 0" not in proc.stdout + proc.stderr
    assert not (workdir / "study.log").exists()


@pytest.mark.slow
def test_bad_yaml_block_key(workdir: Path) -> None:
    conf = workdir / "conf.yml"
    conf.write_text("CartPole-v1:\n  n_timesteps: 1000\n  policy: MlpPolicy\n  zoo_ext: {sampelr: random}\n")
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=1), "--conf-file", str(conf)]
    proc = run([*STOCK, *args], workdir, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    expected = f"unknown key(s) 'sampelr' in the 'zoo_ext' block of {conf}. Did you mean 'sampler' for 'sampelr'?"
    assert f"zoo_ext: error: {expected} Valid keys: " in proc.stderr
    valid = proc.stderr.split("Valid keys: ")[1].split(", ")
    assert {"sampler", "search_space", "pruner"} <= {key.strip() for key in valid}
    assert not (workdir / "logs").exists()


@pytest.mark.slow
def test_unreachable_database_exits_2_without_the_password(workdir: Path) -> None:
    storage = f"postgresql://zoo:s3cr3t-Pw@127.0.0.1:{free_port()}/optuna"  # nothing listens there
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=1), "--storage", storage]
    proc = run([*STOCK, *args], workdir, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"cannot open storage postgresql://zoo:***@127.0.0.1:{storage.split(':')[3]}" in proc.stderr
    assert "s3cr3t-Pw" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_no_experimental_warning_from_database_storage_or_proxy(workdir: Path) -> None:
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=1), "--storage", "sqlite:///x.db", "--no-mlflow"]
    proc = run([*STOCK, *args, *TINY], workdir)
    (trial,) = optuna.load_study(storage=f"sqlite:///{workdir / 'x.db'}", study_name="s").trials
    assert trial.state.name == "COMPLETE"
    assert "ExperimentalWarning" not in proc.stderr

    port = free_port()
    cmd = [sys.executable, "-m", "zoo_ext", "storage-proxy", "--storage", "sqlite:///p.db"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    proxy = start(cmd, workdir)
    deadline = time.monotonic() + 120
    while proxy.poll() is None and time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.3)
    proxy.send_signal(signal.SIGINT)
    _, err = proxy.communicate(timeout=60)
    assert "Listening" in err, err[-3000:]
    assert "ExperimentalWarning" not in err


def _conditional_space_info() -> SpaceInfo:
    return probe_space(SEARCH_SPACES.get("conditional", "ppo"), "conditional", PPO, 1, 4, {})


def _create(name: str, space: SpaceInfo | None, **kwargs: object) -> optuna.samplers.BaseSampler:
    return create_sampler(
        name, dict(kwargs), seed=0, n_startup_trials=2, directions=["maximize"], space=space, hub_registry=None
    )


@pytest.mark.slow
def test_cmaes_and_gp_warn_once_which_parameters_fall_back_to_random(caplog: pytest.LogCaptureFixture) -> None:
    info = _conditional_space_info()
    categorical = {n for n, d in info.distributions.items() if isinstance(d, CategoricalDistribution)}
    assert {"learning_rate", "learning_rate_initial", "adam_eps", "rmsprop_alpha"} <= set(info.conditional_params)
    assert "one_minus_gamma" not in info.conditional_params and categorical - set(info.conditional_params)
    expected = {"cmaes": set(info.conditional_params) | categorical, "gp": set(info.conditional_params)}
    space = SEARCH_SPACES.get("conditional", "ppo")
    optuna.logging.enable_propagation()
    try:
        for name, fallback in expected.items():
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                _create(name, info)
                sampler = _create(name, info)  # a process joining a study builds its sampler a second time
                study = optuna.create_study(direction="maximize", sampler=sampler)
                study.optimize(lambda trial: len(space(trial, 1, 4, {})) + trial.number, n_trials=5)
            (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert record.name == "zoo_ext.samplers"
            named = set(record.getMessage().split("fall back to random sampling: ")[1].split(" (use")[0].split(", "))
            assert named == fallback
            assert f"{len(fallback)} of {len(info.distributions)} parameters" in record.getMessage()
    finally:
        optuna.logging.disable_propagation()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zoo_ext.samplers"):
        _create("tpe", info)
        _create("cmaes", SpaceInfo(distributions={"x": FloatDistribution(0.0, 1.0)}))
    assert not caplog.records


def test_bruteforce_refuses_continuous_parameters_only() -> None:
    space = SpaceInfo(
        distributions={
            "lr": FloatDistribution(1e-5, 1e-2, log=True),
            "clip": FloatDistribution(0.1, 0.3, step=0.1),
            "n_epochs": IntDistribution(1, 10),
            "tau": FloatDistribution(0.0, 1.0),
        }
    )
    with pytest.raises(InvalidSearchSpaceError, match=re.escape("(a float without step): lr, tau. Give them a step")):
        _create("bruteforce", space)
    del space.distributions["lr"], space.distributions["tau"]
    assert type(_create("bruteforce", space)).__name__ == "BruteForceSampler"


def test_readme_sampler_kwargs_example_reaches_the_sampler() -> None:
    readme = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "sampler_kwargs" in b)
    (config,) = yaml.safe_load(block).values()
    opts = options.resolve(argparse.Namespace(), config[options.YAML_KEY], algo="ppo")
    assert opts.sampler_kwargs
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Optuna 5 ignores restart_strategy with a FutureWarning
        sampler = _create(opts.sampler, None, **opts.sampler_kwargs)
    for key, value in opts.sampler_kwargs.items():
        assert getattr(sampler, f"_{key}") == value
