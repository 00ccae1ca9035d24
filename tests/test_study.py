"""The study: its id, fingerprint and name, its budget, failing trials, seeds' pruner steps, one re-evaluation.

The budget loop, the stop rules and the summary are tested in one process in ``tests/study/test_engine.py``;
here, end to end, through the stock command (marked slow).
"""

from __future__ import annotations

import shlex
import signal
import time
from pathlib import Path

import optuna
import pytest
from helpers import LR_SPACE, STOCK, load, run, start, study_args
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from zoo_ext.objectives import RunResult
from zoo_ext.tracking import study_uid
from zoo_ext.trial import step_offset


def test_study_uid_is_shared_by_workers_and_hides_passwords() -> None:
    assert study_uid("study.log", "s") == study_uid("study.log", "s")
    assert study_uid("study.log", "s") != study_uid("study.log", "t") != study_uid("other.log", "t")
    url = "postgresql://bob:s3cr3t@db/optuna"
    assert study_uid(url, "s") == study_uid("postgresql://bob:other@db/optuna", "s")  # password not part of it
    assert study_uid(None, "s") != study_uid(None, "s")


def test_seed_steps_never_overlap_whatever_the_number_of_evaluations() -> None:
    runs = [RunResult(seed=0, curve=[{}] * 6), RunResult(seed=1, curve=[{}] * 6)]
    assert step_offset([], 4) == 0
    assert step_offset(runs[:1], 4) == 6  # a run that overshot its 4 evaluations pushes the next seed on
    assert step_offset(runs, 4) == 12
    assert step_offset([RunResult(seed=0, curve=[{}] * 2)], 4) == 4  # a short (pruned) run keeps the grid


def _lr_args(*, trials: int = 1) -> list[str]:
    return [*study_args("study.log", "s", n=256, total=trials), "--no-mlflow"]


@pytest.mark.slow
def test_resume_with_other_settings_is_refused_before_any_env(space_dir: Path) -> None:
    run([*STOCK, *_lr_args()], space_dir)
    runs = sorted((space_dir / "logs").rglob("*"))
    (space_dir / "lr.yml").write_text(LR_SPACE.replace("high: 0.001", "high: 0.002"))
    proc = run([*STOCK, *_lr_args(trials=2)], space_dir, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "search_space_hash=" in proc.stderr and "--study-name" in proc.stderr
    assert sorted((space_dir / "logs").rglob("*")) == runs  # stopped before the run's folder and envs
    (space_dir / "lr.yml").write_text(LR_SPACE)
    proc = run([*STOCK, *_lr_args(trials=2), "--objectives", "mean_reward", "n_params"], space_dir, check=False)
    assert proc.returncode == 2
    requested = "(requested ['mean_reward:maximize', 'n_params:minimize'])"
    assert f"objectives=['mean_reward:maximize'] {requested}" in proc.stderr
    proc = run([*STOCK, *_lr_args(trials=2), "--n-seeds", "2"], space_dir, check=False)
    assert proc.returncode == 2 and "n_seeds=1 (requested 2)" in proc.stderr
    assert len(load(space_dir).trials) == 1  # nothing was run by the refused commands
    proc = run([*STOCK, *_lr_args(trials=2), "--sampler", "tpe"], space_dir)  # another sampler: allowed
    assert "it was made with 'random'" in proc.stderr
    assert [t.state for t in load(space_dir).trials] == [TrialState.COMPLETE] * 2


@pytest.mark.slow
def test_stock_made_study_is_joined(space_dir: Path) -> None:
    args = ["--algo", "a2c", "--env", "CartPole-v1", "-optimize", "-n", "256", "--n-trials", "1", "--n-evaluations",
            "1", "--eval-episodes", "2", "--seed", "1", "--storage", "study.log", "--study-name", "s",
            "--sampler", "random", "--pruner", "none", "--no-optim-plots"]  # fmt: skip
    run([*STOCK, *args], space_dir, env={"ZOO_EXT_DISABLE": "1"})
    run([*STOCK, *args[:8], "2", *args[9:], "--search-space", "lr.yml"], space_dir)
    study = load(space_dir)
    assert len(study.trials) == 2 and "zoo_ext_fingerprint" not in study.user_attrs


@pytest.mark.slow
def test_the_same_command_resumes_the_same_study_and_n_trials_is_its_total(workdir: Path) -> None:
    args = ["--algo", "a2c", "--env", "CartPole-v1", "-optimize", "-n", "256", "--n-evaluations", "1",
            "--eval-episodes", "2", "--sampler", "random", "--pruner", "none", "--seed", "4", "--n-workers", "2",
            "--no-optim-plots", "--no-mlflow", "-params", "n_envs:2"]  # fmt: skip
    first = run([*STOCK, *args, "--n-trials", "2"], workdir)
    journals = list((workdir / "logs" / "a2c").glob("*.log"))
    assert len(journals) == 1
    name = journals[0].stem
    assert f"Study {name!r} in {journals[0].relative_to(workdir)}" in first.stdout
    second = run([*STOCK, *args, "--n-trials", "3"], workdir)  # the same command, with a larger total
    assert list((workdir / "logs" / "a2c").glob("*.log")) == journals
    assert "2 of 3 trials counted so far" in second.stderr
    storage = JournalStorage(JournalFileBackend(str(journals[0])))
    assert [t.number for t in optuna.load_study(storage=storage, study_name=name).trials] == [0, 1, 2]  # not 3 more
    run([*STOCK, *args, "--n-trials", "3"], workdir)  # budget already spent: nothing to do
    assert len(optuna.load_study(storage=storage, study_name=name).trials) == 3


FLAKY_SPACE = """
import optuna


def space(trial, n_actions, n_envs, additional_args):
    lr = trial.suggest_float("learning_rate", 1e-4, 1e-3, log=True)
    if trial.number == 1:
        raise ValueError("lr and batch do not fit")
    if trial.number == 2:
        raise optuna.TrialPruned("invalid combination")
    return {"learning_rate": lr}
"""


@pytest.mark.slow
def test_a_space_that_raises_fails_the_trial_not_the_study(workdir: Path) -> None:
    (workdir / "flaky.py").write_text(FLAKY_SPACE)
    args = [
        "--algo",
        "a2c",
        "--env",
        "CartPole-v1",
        "-optimize",
        "-n",
        "256",
        "--n-trials",
        "3",
        "--n-evaluations",
        "1",
        "--eval-episodes",
        "2",
        "--sampler",
        "random",
        "--pruner",
        "none",
        "--seed",
        "2",
        "--storage",
        "study.log",
        "--study-name",
        "s",
        "--search-space",
        "flaky:space",
        "--no-optim-plots",
        "--no-mlflow",
    ]
    proc = run([*STOCK, *args], workdir, env={"PYTHONPATH": str(workdir)})
    study = load(workdir)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "PRUNED", "COMPLETE"], states  # FAIL does not count towards the 3
    assert study.trials[1].user_attrs["fail_reason"] == (
        "search space 'flaky:space' raised ValueError: lr and batch do not fit"
    )
    assert "1 of 16" in proc.stderr  # the probe warned about its one failing sample and went on


@pytest.mark.slow
def test_trials_that_keep_failing_stop_every_worker(workdir: Path) -> None:
    args = ["--algo", "a2c", "--env", "CartPole-v1", "-optimize", "-n", "256", "--n-trials", "4", "--n-evaluations",
            "1", "--eval-episodes", "2", "--sampler", "random", "--pruner", "none", "--seed", "2", "--n-workers", "2",
            "--storage", "study.log", "--study-name", "s", "--max-consecutive-failures", "3", "--no-optim-plots",
            "--no-mlflow", "--eval-env-kwargs", "bogus:1"]  # fmt: skip
    proc = run([*STOCK, *args], workdir, check=False, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "3 trials failed in a row" in proc.stderr and "bogus" in proc.stderr
    study = load(workdir)
    assert {t.state for t in study.trials} == {TrialState.FAIL} and 3 <= len(study.trials) <= 5


@pytest.mark.slow
def test_seeds_of_a_trial_report_on_distinct_steps(workdir: Path) -> None:
    # n_steps 200 with -n 256: each run trains 400 steps and evaluates 6 times, not --n-evaluations 4.
    args = ["--algo", "ppo", "--env", "CartPole-v1", "-optimize", "-n", "256", "--n-trials", "1", "--n-evaluations",
            "4", "--eval-episodes", "1", "--n-seeds", "2", "--sampler", "random", "--pruner", "median", "--seed", "2",
            "--storage", "study.log", "--study-name", "s", "--search-space", "lr.yml", "--no-optim-plots",
            "--no-mlflow", "-params", "n_envs:1", "n_steps:200", "batch_size:50"]  # fmt: skip
    (workdir / "lr.yml").write_text(LR_SPACE.replace("algos: [a2c]", "algos: [ppo]"))
    run([*STOCK, *args], workdir)
    (trial,) = load(workdir).trials
    per_seed = [len(curve) for curve in trial.user_attrs["evaluations_per_seed"]]
    assert per_seed == [6, 6]
    assert sorted(trial.intermediate_values) == list(range(1, 13))  # 12 distinct steps, none overwritten


GAMMA_SPACE = """\
algos: [a2c]
params:
  one_minus_gamma: {type: float, low: 0.01, high: 0.05, log: true, to: gamma, transform: one_minus}
"""


@pytest.mark.slow
def test_vecnormalize_discounts_with_the_trials_gamma(workdir: Path) -> None:
    (workdir / "gamma.yml").write_text(GAMMA_SPACE)
    # rl_zoo3's a2c Pendulum-v1 entry: normalize: True, gamma: 0.9
    args = ["--algo", "a2c", "--env", "Pendulum-v1", "-optimize", "-n", "128", "--n-trials", "2", "--n-evaluations",
            "1", "--eval-episodes", "1", "--sampler", "random", "--pruner", "none", "--seed", "2", "--storage",
            "study.log", "--study-name", "s", "--search-space", "gamma.yml", "--no-optim-plots", "--no-mlflow",
            "-params", "n_envs:1"]  # fmt: skip
    run([*STOCK, *args], workdir)
    for trial in load(workdir).trials:
        gamma = trial.user_attrs["hyperparams"]["gamma"]
        assert 0.95 <= gamma <= 0.99 and trial.user_attrs["normalize_gamma"] == gamma


@pytest.mark.slow
def test_processes_started_together_warm_start_and_reevaluate_once(workdir: Path) -> None:
    args = ["--algo", "a2c", "--env", "CartPole-v1", "-optimize", "-n", "256", "--n-trials", "3", "--n-evaluations",
            "1", "--eval-episodes", "2", "--sampler", "random", "--pruner", "none", "--seed", "2", "--storage",
            "study.log", "--study-name", "s", "--search-space", "conditional", "--warm-start", "--reevaluate-top", "1",
            "--eval-seeds", "1", "--no-optim-plots", "--no-mlflow", "-params", "n_envs:2"]  # fmt: skip
    procs = [start([*STOCK, *args], workdir) for _ in range(2)]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    study = load(workdir)
    assert len([t for t in study.trials if t.user_attrs.get("warm_start")]) == 1
    assert len(study.user_attrs["test_scores"]) == 2 and "baseline" in study.user_attrs["test_scores"]  # 1 trial
    reevaluated = sum("re-evaluated on 1 fresh seeds" in err for _, err in outputs)
    assert reevaluated == 1, [err[-1500:] for _, err in outputs]
    assert optuna.get_all_study_names(JournalStorage(JournalFileBackend(str(workdir / "study.log")))) == ["s"]


@pytest.mark.slow
def test_launch_workers_passes_sigterm_on_and_exits_143(space_dir: Path) -> None:
    script = Path(__file__).parents[1] / "scripts" / "launch_workers.sh"
    args = [*study_args("study.log", "l", n=40_000, total=4), "--no-mlflow"]
    proc = start(["bash", str(script), "2", *args], space_dir, env={"PYTHON": STOCK[0], "WORKER_LOG_DIR": "."})
    storage = JournalStorage(JournalFileBackend(str(space_dir / "study.log")))
    deadline = time.monotonic() + 120
    while not _training(storage, "l"):
        assert time.monotonic() < deadline, "no worker started a trial"
        time.sleep(0.5)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=180)
    assert proc.returncode == 143
    study = optuna.load_study(storage=storage, study_name="l")
    stopped = study.get_trials(states=(TrialState.FAIL,))
    assert stopped and all(t.user_attrs["fail_reason"] == "interrupted by SIGTERM" for t in stopped)
    assert not study.get_trials(states=(TrialState.RUNNING,))


def _training(storage: JournalStorage, name: str) -> bool:
    """Return True once a trial of study ``name`` trains (its seed is recorded)."""
    try:
        study = optuna.load_study(storage=storage, study_name=name)
    except KeyError:
        return False
    return any("seed" in t.user_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


@pytest.mark.slow
def test_resume_hint_is_a_copyable_command_naming_the_real_storage(workdir: Path) -> None:
    args = ["--algo", "a2c", "--env", "CartPole-v1", "-optimize", "-n", "256", "--n-trials", "1", "--n-evaluations",
            "1", "--eval-episodes", "2", "--sampler", "random", "--pruner", "none", "--num-threads", "1",
            "--storage", "my runs/study.log", "--study-name", "s 1", "--no-mlflow", "--no-optim-plots"]  # fmt: skip
    out = run([*STOCK, *args], workdir).stdout
    (line,) = [line for line in out.splitlines() if line.startswith("Study 's 1' in ")]
    expected = "(or --storage 'my runs/study.log' --study-name 's 1') to resume it"
    assert line == f"Study 's 1' in my runs/study.log: run the same command {expected}"
    flags = shlex.split(line.split("(or ", 1)[1].removesuffix(") to resume it"))
    assert flags == ["--storage", "my runs/study.log", "--study-name", "s 1"]
    assert (workdir / "my runs" / "study.log").is_file()
