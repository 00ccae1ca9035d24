"""Bad names exit with status 2 before any environment is built, listing the valid choices."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import STOCK, free_port, optimize_args, run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--search-space", "zo"], "'zo' for --algo ppo. Did you mean 'zoo'? Valid choices: arch, conditional, zoo"),
        (["--sampler", "tpee"], "unknown sampler 'tpee'. Did you mean 'tpe'? Valid choices: auto, bruteforce, cmaes"),
        (["--pruner", "hyperbnd"], "unknown pruner 'hyperbnd'. Did you mean 'hyperband'? Valid choices: halving"),
        (["--sampler", "optuna.samplers:NoSuchSampler"], "module 'optuna.samplers' has no attribute 'NoSuchSampler'"),
        (["--search-space", "no_such_pkg.spaces:f"], "cannot import module 'no_such_pkg.spaces'"),
        (["--pruner", "threshold"], "the threshold pruner needs --pruner-kwargs lower:VALUE and/or upper:VALUE"),
        (["--sampler", "tpe", "--sampler-kwargs", "bogus:1"], "'tpe' cannot be built with ['bogus']"),
        (["--sampler", "hub:nothing_here"], "OptunaHub package 'samplers/nothing_here' is not cached"),
    ],
)
def test_bad_input_exits_2_before_training(workdir: Path, flags: list[str], expected: str) -> None:
    args = optimize_args("ppo", "CartPole-v1", n=128, trials=1)
    proc = run([*STOCK, *args, *flags], workdir, check=False, env={"ZOO_EXT_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert expected in proc.stderr
    assert not (workdir / "study.log").exists()


def test_bad_yaml_block_key(workdir: Path) -> None:
    conf = workdir / "conf.yml"
    conf.write_text("CartPole-v1:\n  n_timesteps: 1000\n  policy: MlpPolicy\n  zoo_ext: {sampelr: random}\n")
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=1), "--conf-file", str(conf)]
    proc = run([*STOCK, *args], workdir, check=False)
    assert proc.returncode == 2
    assert "unknown key(s) 'sampelr' in the 'zoo_ext' block. Valid keys: " in proc.stderr
    valid = proc.stderr.split("Valid keys: ")[1].split(", ")
    assert {"sampler", "search_space", "pruner"} <= {key.strip() for key in valid}
    assert not (workdir / "logs").exists()


def test_unreachable_database_exits_2_without_the_password(workdir: Path) -> None:
    storage = f"postgresql://zoo:s3cr3t-Pw@127.0.0.1:{free_port()}/optuna"  # nothing listens there
    args = [*optimize_args("ppo", "CartPole-v1", n=128, trials=1), "--storage", storage]
    proc = run([*STOCK, *args], workdir, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"cannot open storage postgresql://zoo:***@127.0.0.1:{storage.split(':')[3]}" in proc.stderr
    assert "s3cr3t-Pw" not in proc.stdout + proc.stderr
