"""Benchmark zoo_ext against stock rl_zoo3 on this machine: overhead, small study, throughput, search, cold start.

Every study is a real ``python -m rl_zoo3.train -optimize`` run in a subprocess, with zoo_ext on
or off (``ZOO_EXT_DISABLE=1``), in one invocation, so the ratios compare like with like:

* overhead: the same seeded random-sampler study (same trials, same budgets) with and without
  zoo_ext, MLflow logging on; runs alternate stock/zoo_ext/zoo_ext/stock to cancel drift;
* small study: whole-command wall time and peak memory of a new 3-trial study, MLflow on a new store;
* throughput: completed trials per hour, ``--n-workers 2`` vs stock ``--n-jobs 2`` and ``--n-jobs 1``,
  every mode training the same enqueued PPO configuration;
* search efficiency: PPO on Pendulum-v1, equal trial count and steps per trial, several study seeds;
  each study's best trial is re-trained on fresh seeds and evaluated (``--trial-id``), and the env
  steps until the first evaluation at or above the threshold are counted in trial order;
* cold: tuning with no tuned table, stock TPE + median against the ``cold`` preset at equal env
  steps (PPO Pendulum-v1 and A2C CartPole-v1, several study seeds), each best re-trained on fresh
  seeds: IQM with a bootstrap 95% CI and P(zoo_ext > stock); and a racing line, ``--n-seeds 3``
  with and without ``--seed-racing`` at equal trial count;
* leaderboard: every method (stock TPE + median, random search on the ``cold`` space, ``--preset
  cold``, the preset with 3 raced seeds, OptunaHub's DEHB when it loads offline) on every problem
  (PPO FrozenLake-v1, A2C CartPole-v1, PPO Pendulum-v1, SAC Pendulum-v1) at equal env steps per
  study, several study seeds, each best re-trained on fresh seeds: IQM with a bootstrap 95% CI,
  P(improvement) over stock, env steps, wall time, a markdown table and ``leaderboard.png``;
* pbt: population-based training (``--scheduler pbt`` and ``pb2``, population 8) against the ``cold``
  preset's TPE at equal env steps (A2C CartPole-v1, PPO Pendulum-v1, several study seeds), each
  study's best re-trained on fresh seeds (a population's best member through its exported
  schedule and stock ``-conf``): IQM with a bootstrap 95% CI, P(> the preset); and the wall time of
  one population with ``--n-workers 2`` against one worker, runs alternated;
* multi_env: one config tuned on A2C CartPole-v1 and Acrobot-v1 together (``--tune-envs``, the ``cold``
  preset) against tuning on one env and transferring to the other, at equal env steps per study
  (several study seeds), each best re-trained on fresh seeds on every env: normalised IQM with a
  bootstrap 95% CI, each env's IQM, P(multi-env better), env steps, wall time.

Usage::

    python scripts/benchmark.py --quick              # a few minutes: smoke test (run in CI)
    python scripts/benchmark.py --out bench-results  # full mode, about 5 h on 2 cores
    python scripts/benchmark.py --sections cold --out bench-cold --resume  # go on with a stopped run
    python scripts/benchmark.py --sections leaderboard --problems a2c-CartPole-v1 --hub-registry REGISTRY

Results are printed and written to ``<out>/results.json``; the full mode's go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

TRAIN = [sys.executable, "-m", "rl_zoo3.train"]
#: zoo_ext's recommended configuration for the search-efficiency section (see docs/benchmarks.md).
RECOMMENDED = ["--search-space", "conditional", "--warm-start", "--sampler", "tpe", "--pruner", "median",
               "--n-startup-trials", "5"]  # fmt: skip
STOCK_SEARCH = ["--sampler", "tpe", "--pruner", "median"]
#: The cold section's zoo_ext side: the ``cold`` preset, 10 evaluations per trial (finer pruning).
COLD = ["--preset", "cold", "--n-evaluations", "10"]
#: The throughput section's trial: a mid-cost PPO configuration in the params of rl_zoo3's PPO space.
THROUGHPUT_PPO = {"batch_size_pow": 6, "n_steps_pow": 10, "one_minus_gamma": 0.02, "one_minus_gae_lambda": 0.05,
                  "learning_rate": 0.001, "ent_coef": 1e-8, "clip_range": 0.2, "n_epochs": 10, "max_grad_norm": 0.5,
                  "net_arch": "small", "activation_fn": "tanh"}  # fmt: skip


@dataclass(frozen=True)
class Problem:
    """One tuning problem of the cold section: algorithm, env, steps per trial, and stock's trial count."""

    algo: str
    env_id: str
    steps: int
    trials: int


@dataclass(frozen=True)
class Budget:
    """Sizes of one benchmark mode."""

    overhead_problem: tuple[str, str]
    overhead_steps: int
    overhead_trials: int
    overhead_rounds: int
    throughput_steps: int
    throughput_trials: int
    search_steps: int
    search_trials: int
    study_seeds: tuple[int, ...]
    retrain_seeds: int
    eval_episodes: int
    threshold: float = -250.0
    small_study_pairs: int = 5
    #: The cold section's problems (stock runs ``trials`` trials; zoo_ext gets the same env steps) and racing line.
    cold_problems: tuple[Problem, ...] = (
        Problem("ppo", "Pendulum-v1", 100_000, 8),
        Problem("a2c", "CartPole-v1", 50_000, 8),
    )
    racing_problem: Problem = Problem("a2c", "CartPole-v1", 30_000, 6)
    #: The leaderboard's problems, cheapest first: 3 env families (classic control discrete and continuous, toy
    #: text), PPO, A2C and SAC. The cold preset was chosen on A2C CartPole-v1 and PPO Pendulum-v1 only (section
    #: ``cold``); FrozenLake-v1 and SAC Pendulum-v1 only measure it.
    leaderboard_problems: tuple[Problem, ...] = (
        Problem("ppo", "FrozenLake-v1", 50_000, 6),
        Problem("a2c", "CartPole-v1", 20_000, 6),
        Problem("ppo", "Pendulum-v1", 50_000, 6),
        Problem("sac", "Pendulum-v1", 5_000, 6),
    )
    #: The pbt section's problems: ``steps`` env steps per member, ``trials`` members (the preset's TPE gets
    #: ``trials`` trials of ``steps``: the same env steps).
    pbt_problems: tuple[Problem, ...] = (
        Problem("a2c", "CartPole-v1", 20_000, 8),
        Problem("ppo", "Pendulum-v1", 50_000, 8),
    )
    #: The multi_env section: ``-n`` per env and run, and the multi-env study's trials, whose env steps
    #: (``trials x envs x -n``) every study of the section gets as ``--budget-steps``.
    multi_env_steps: int = 20_000
    multi_env_trials: int = 10


QUICK = Budget(("a2c", "CartPole-v1"), 2048, 2, 1, 1024, 2, 2048, 2, (1,), 2, 2, small_study_pairs=1,
               cold_problems=(Problem("a2c", "CartPole-v1", 2048, 2),),
               racing_problem=Problem("a2c", "CartPole-v1", 1024, 2),
               leaderboard_problems=(Problem("a2c", "CartPole-v1", 1024, 2),),
               pbt_problems=(Problem("a2c", "CartPole-v1", 1024, 3),), multi_env_steps=1024,
               multi_env_trials=2)  # fmt: skip
FULL = Budget(("ppo", "Pendulum-v1"), 20_000, 5, 2, 32_000, 10, 100_000, 8, (1, 2, 3), 5, 10)


class Runner:
    """Runs ``rl_zoo3.train`` in subprocesses under ``root``, zoo_ext on or off."""

    def __init__(
        self, root: Path, mlflow_uri: str, *, problems: tuple[str, ...] = (), hub_registry: str | None = None
    ) -> None:
        self.root = root
        self.mlflow_uri = mlflow_uri
        #: The leaderboard problems to run (``algo-env``); empty: all.
        self.problems = problems
        #: A local OptunaHub registry folder (for DEHB offline).
        self.hub_registry = hub_registry

    def __call__(self, folder: str, args: list[str], *, stock: bool) -> float:
        """Run one command in ``root/folder``; return its wall time in seconds (raise if it fails).

        A command that succeeded in an earlier run of ``--resume`` is not run again: its time is reused.
        """
        cwd = self.root / folder
        done = cwd / "succeeded"
        if done.exists():
            return float(done.read_text())
        cwd.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.mlflow_uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
        env.pop("ZOO_EXT_DISABLE", None)
        if stock:
            env["ZOO_EXT_DISABLE"] = "1"
        start = time.perf_counter()
        proc = subprocess.run([*TRAIN, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        (cwd / "stdout.txt").write_text(proc.stdout)
        (cwd / "stderr.txt").write_text(proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(args)} in {cwd} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        done.write_text(str(seconds))
        return seconds


def load_study(path: Path, name: str) -> optuna.Study:
    """Return study ``name`` from the journal file ``path``."""
    backend = JournalFileBackend(str(path))
    return optuna.load_study(storage=optuna.storages.JournalStorage(backend), study_name=name)


def study_args(algo: str, env_id: str, steps: int, trials: int, name: str, *extra: str) -> list[str]:
    """Return the ``-optimize`` flags of a study stored in ``<name>.log`` of the run folder."""
    return ["--algo", algo, "--env", env_id, "-optimize", "-n", str(steps), "--n-trials", str(trials),
            "--storage", f"{name}.log", "--study-name", name, "--no-optim-plots", *extra]  # fmt: skip


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def overhead(run: Runner, budget: Budget) -> dict[str, Any]:
    """Median per-trial wall time of the same seeded random study, zoo_ext vs stock (paired by trial)."""
    algo, env_id = budget.overhead_problem
    print(f"== overhead: {algo} {env_id}, random sampler (seed 7), {budget.overhead_trials} trials x "
          f"{budget.overhead_steps} steps, {budget.overhead_rounds} round(s) of stock/zoo_ext, MLflow on")  # fmt: skip
    times: dict[str, list[float]] = {"stock": [], "zoo_ext": []}
    commands: dict[str, list[float]] = {"stock": [], "zoo_ext": []}
    params: dict[str, list[dict[str, Any]]] = {"stock": [], "zoo_ext": []}
    args = study_args(algo, env_id, budget.overhead_steps, budget.overhead_trials, "overhead",
                      "--sampler", "random", "--pruner", "none", "--seed", "7", "--num-threads", "1",
                      "--n-evaluations", "2", "--eval-episodes", "5")  # fmt: skip
    for round_ in range(budget.overhead_rounds):
        order = ("stock", "zoo_ext") if round_ % 2 == 0 else ("zoo_ext", "stock")
        for mode in order:
            folder = f"overhead/{mode}-{round_}"
            commands[mode].append(run(folder, args, stock=mode == "stock"))
            trials = sorted(load_study(run.root / folder / "overhead.log", "overhead").trials, key=lambda t: t.number)
            times[mode] += [t.duration.total_seconds() for t in trials if t.duration is not None]
            params[mode] += [t.params for t in trials]
    pairs = [ratio(z, s) for z, s in zip(times["zoo_ext"], times["stock"], strict=True)]
    result: dict[str, Any] = {
        "same_trials": params["stock"] == params["zoo_ext"],
        "median_trial_seconds": {mode: statistics.median(values) for mode, values in times.items()},
        "median_trial_ratio": statistics.median(pairs),
        "median_command_ratio": ratio(statistics.median(commands["zoo_ext"]), statistics.median(commands["stock"])),
    }
    med = result["median_trial_seconds"]
    print(f"same trials (params) in both: {'yes' if result['same_trials'] else 'NO'}")
    print(f"median trial time: stock {med['stock']:.2f} s, zoo_ext {med['zoo_ext']:.2f} s")
    print(f"overhead ratio (median of paired per-trial ratios): {result['median_trial_ratio']:.3f}x (target <= 1.02x)")
    print(f"whole-command ratio (start-up and reports included): {result['median_command_ratio']:.3f}x")
    return result


#: The small study's name and sampler seed (its 3 random trials are cheap PPO configurations: batch 256, 1024, 16).
SMALL_STUDY, SMALL_SEED = "small", 13


def _tree_rss(pid: int) -> int:
    """Return the summed resident memory (bytes) of process ``pid`` and its live descendants (0 once it is gone).

    A child still sharing its parent's address space (``vfork``, before ``exec``: Python's
    ``subprocess`` does this, e.g. for the ``uname -p`` that MLflow's import runs) is counted once,
    as it uses no memory of its own.
    """
    total, stack = 0, [(pid, (0, 0))]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        current, parent = stack.pop()
        try:
            # /proc/PID/stat after the command's closing parenthesis: field 23 is vsize, 24 rss (pages).
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            vsize_rss = (int(fields[20]), int(fields[21]))
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [(int(child), vsize_rss) for child in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
        if vsize_rss != parent:
            total += vsize_rss[1] * page
    return total


def measured_run(folder: Path, args: list[str], *, stock: bool) -> dict[str, float]:
    """Run ``rl_zoo3.train args`` in a new ``folder``, MLflow on a new SQLite store there; return time and memory.

    ``seconds``: the whole command's wall time. ``tree_peak_mib``: the largest summed RSS of the
    command's process tree (the process and every descendant alive at that moment, see
    :func:`_tree_rss`), sampled from /proc every 20 ms. ``process_peak_mib``: the largest peak RSS
    of any one process of the tree (the kernel's exact ``ru_maxrss`` of ``wait4``, as
    ``/usr/bin/time`` prints it).
    """
    folder.mkdir(parents=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("ZOO_EXT_DISABLE", None)
    if stock:
        env["ZOO_EXT_DISABLE"] = "1"
    with (folder / "stdout.txt").open("w") as out, (folder / "stderr.txt").open("w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([*TRAIN, *args], cwd=folder, env=env, stdout=out, stderr=err)
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.02)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(args)} in {folder} exited {proc.returncode}:\n"
                           f"{(folder / 'stderr.txt').read_text()[-3000:]}")  # fmt: skip
    return {"seconds": seconds, "tree_peak_mib": peak / 2**20, "process_peak_mib": usage.ru_maxrss / 1024}


def small_study(run: Runner, budget: Budget) -> dict[str, Any]:
    """Whole-command wall time and peak memory of a small new study with MLflow on: stock, zoo_ext, zoo_ext's mirror.

    PPO on Pendulum-v1, 3 seeded random trials of 8,192 steps (the same parameters in all), a new
    journal study and a new MLflow SQLite store in a new folder for every run (stock rl_zoo3 logs
    nothing to it; zoo_ext creates it). ``zoo_ext`` tracks inside the training process, ``mirror``
    through ``--mlflow-mirror`` (a child process; the tree's peak memory counts it). Each round runs
    the three modes in a rotated order to cancel drift; the medians over the rounds are compared.
    """
    n, steps, pairs = 3, 8192, budget.small_study_pairs
    modes = ("stock", "zoo_ext", "mirror")
    print(f"== small study: ppo Pendulum-v1, {n} trials x {steps} steps, MLflow on a new local store per run, "
          f"{pairs} round(s) of stock/zoo_ext/mirror")  # fmt: skip
    args = study_args("ppo", "Pendulum-v1", steps, n, SMALL_STUDY, "--sampler", "random", "--pruner", "none",
                      "--seed", str(SMALL_SEED), "--num-threads", "1")  # fmt: skip
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for pair in range(pairs):
        for mode in modes[pair % 3 :] + modes[: pair % 3]:
            extra = ["--mlflow-mirror"] if mode == "mirror" else []
            folder = run.root / "small_study" / f"{mode}-{pair}"
            runs[mode].append(measured_run(folder, [*args, *extra], stock=mode == "stock"))
    median = {mode: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for mode, rows in runs.items()}
    stock, zoo, mirror = median["stock"], median["zoo_ext"], median["mirror"]
    result = {
        "runs": runs,
        "median": median,
        "command_ratio": ratio(zoo["seconds"], stock["seconds"]),
        "tree_peak_difference_mib": zoo["tree_peak_mib"] - stock["tree_peak_mib"],
        "process_peak_difference_mib": zoo["process_peak_mib"] - stock["process_peak_mib"],
        "mirror_command_ratio": ratio(mirror["seconds"], stock["seconds"]),
        "mirror_tree_peak_difference_mib": mirror["tree_peak_mib"] - stock["tree_peak_mib"],
    }
    print(f"median whole-command time: stock {stock['seconds']:.1f} s, zoo_ext {zoo['seconds']:.1f} s, "
          f"mirror {mirror['seconds']:.1f} s")  # fmt: skip
    print(f"small-study whole-command ratio: {result['command_ratio']:.3f}x (target <= 1.08x); with "
          f"--mlflow-mirror {result['mirror_command_ratio']:.3f}x (target <= 1.05x)")  # fmt: skip
    print(f"median peak memory of the process tree: stock {stock['tree_peak_mib']:.0f} MiB, zoo_ext "
          f"{zoo['tree_peak_mib']:.0f} MiB, difference {result['tree_peak_difference_mib']:+.0f} MiB "
          f"(target <= +60 MiB); mirror {mirror['tree_peak_mib']:.0f} MiB, difference "
          f"{result['mirror_tree_peak_difference_mib']:+.0f} MiB (target <= +40 MiB)")  # fmt: skip
    print(f"median peak RSS of the largest process: stock {stock['process_peak_mib']:.0f} MiB, "
          f"zoo_ext {zoo['process_peak_mib']:.0f} MiB, mirror {mirror['process_peak_mib']:.0f} MiB, "
          f"difference {result['process_peak_difference_mib']:+.0f} MiB")  # fmt: skip
    return result


def throughput(run: Runner, budget: Budget) -> dict[str, Any]:
    """Trials per hour of ``--n-workers 2`` vs stock ``--n-jobs 1`` and ``--n-jobs 2``, the very same trials.

    Each mode's study is created beforehand with the same PPO configuration enqueued
    ``throughput_trials`` times, so every mode trains identical trials (stock and zoo_ext both
    run enqueued trials first): the ratio measures parallelism, not luck in sampled costs.
    """
    n = budget.throughput_trials
    print(f"== throughput: ppo Pendulum-v1, one fixed configuration x {n} trials of {budget.throughput_steps} steps")
    base = study_args("ppo", "Pendulum-v1", budget.throughput_steps, n, "throughput",
                      "--sampler", "random", "--pruner", "none", "--seed", "11", "--n-evaluations", "2")  # fmt: skip
    modes = {
        "stock --n-jobs 1": (["--n-jobs", "1"], True),
        "stock --n-jobs 2": (["--n-jobs", "2"], True),
        "zoo_ext --n-workers 2": (["--n-workers", "2"], False),
    }
    per_hour: dict[str, float] = {}
    for label, (extra, stock) in modes.items():
        folder = "throughput/" + label.replace(" ", "_").replace("-", "")
        path = run.root / folder / "throughput.log"
        path.parent.mkdir(parents=True)
        backend = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        study = optuna.create_study(storage=backend, study_name="throughput", direction="maximize")
        for _ in range(n):
            study.enqueue_trial(THROUGHPUT_PPO)
        seconds = run(folder, [*base, *extra], stock=stock)
        trials = load_study(path, "throughput").get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        assert all(t.params == THROUGHPUT_PPO for t in trials), "a mode trained other trials than the enqueued ones"
        per_hour[label] = len(trials) / seconds * 3600
        print(f"{label:24s} {len(trials)} trials in {seconds:7.1f} s = {per_hour[label]:7.1f} trials/hour")
    workers = per_hour["zoo_ext --n-workers 2"]
    result = {
        "trials_per_hour": per_hour,
        "vs_n_jobs_1": ratio(workers, per_hour["stock --n-jobs 1"]),
        "vs_n_jobs_2": ratio(workers, per_hour["stock --n-jobs 2"]),
    }
    print(f"zoo_ext --n-workers 2 vs stock --n-jobs 1: {result['vs_n_jobs_1']:.2f}x (target >= 1.8x)")
    print(f"zoo_ext --n-workers 2 vs stock --n-jobs 2: {result['vs_n_jobs_2']:.2f}x (target >= 2.5x)")
    return result


def steps_to_threshold(trials: list[FrozenTrial], steps: int, n_evaluations: int, threshold: float) -> int | None:
    """Return the env steps spent, in trial order, until an evaluation first reaches ``threshold``."""
    per_eval = steps // n_evaluations
    spent = 0
    for trial in sorted(trials, key=lambda t: t.number):
        values = [trial.intermediate_values[step] for step in sorted(trial.intermediate_values)]
        for index, value in enumerate(values):
            if value >= threshold:
                return spent + (index + 1) * per_eval
        spent += len(values) * per_eval
    return None


def env_steps(trials: list[FrozenTrial], steps: int, n_evaluations: int) -> int:
    """Return the env steps the trials used (a pruned trial stops at its last evaluation)."""
    return sum(len(t.intermediate_values) for t in trials) * (steps // n_evaluations)


def retrain(
    run: Runner, folder: str, study_name: str, trial: int, seed: int, problem: Problem, episodes: int, suffix: str = ""
) -> float:
    """Re-train trial ``trial`` of a study with ``seed``; return its final mean evaluation return.

    ``suffix`` ends the re-training's folder name (one trial re-trained on several envs).
    """
    out = f"{folder}/retrain-{trial}-{seed}{suffix}"
    args = ["--algo", problem.algo, "--env", problem.env_id, "-n", str(problem.steps), "--num-threads", "1",
            "--storage", str(run.root / folder / f"{study_name}.log"), "--study-name", study_name,
            "--trial-id", str(trial), "--seed", str(seed), "--eval-freq", str(problem.steps),
            "--eval-episodes", str(episodes), "-f", "logs"]  # fmt: skip
    run(out, args, stock=False)
    (npz,) = (run.root / out / "logs").rglob("evaluations.npz")
    return float(np.load(npz)["results"][-1].mean())


def search(run: Runner, budget: Budget) -> dict[str, Any]:
    """Best configuration found (re-trained) and steps to the threshold, stock TPE vs zoo_ext's recommendation."""
    n_eval = 5
    print(f"== search efficiency: ppo Pendulum-v1, {budget.search_trials} trials x {budget.search_steps} steps "
          f"per study, study seeds {list(budget.study_seeds)}, best trial re-trained on {budget.retrain_seeds} "
          f"fresh seeds x {budget.eval_episodes} episodes, threshold {budget.threshold:g}")  # fmt: skip
    print(f"stock:   {shlex.join(STOCK_SEARCH)} (rl_zoo3's space)")
    print(f"zoo_ext: {shlex.join(RECOMMENDED)}")
    configs = {"stock": (STOCK_SEARCH, True), "zoo_ext": (RECOMMENDED, False)}
    jobs = []
    for seed in budget.study_seeds:
        for label, (extra, stock) in configs.items():
            args = study_args("ppo", "Pendulum-v1", budget.search_steps, budget.search_trials, "search",
                              *extra, "--seed", str(seed), "--num-threads", "1", "--n-evaluations", str(n_eval),
                              "--eval-episodes", str(budget.eval_episodes))  # fmt: skip
            jobs.append((label, seed, f"search/{label}-{seed}", args, stock))
    fresh = [100_000 + i for i in range(budget.retrain_seeds)]
    rows: dict[str, list[dict[str, Any]]] = {label: [] for label in configs}
    retrains = []
    with ThreadPoolExecutor(2) as pool:  # a study's re-trainings queue up as soon as it ends: no idle core
        studies = {pool.submit(run, folder, args, stock=stock): (label, seed, folder)
                   for label, seed, folder, args, stock in jobs}  # fmt: skip
        for done in as_completed(studies):
            done.result()
            label, seed, folder = studies[done]
            study = load_study(run.root / folder / "search.log", "search")
            trials = study.get_trials(deepcopy=False)
            finished = [t for t in trials if t.state == TrialState.COMPLETE]
            best = max(finished, key=lambda t: t.value or -np.inf)
            reached = steps_to_threshold(trials, budget.search_steps, n_eval, budget.threshold)
            states = [t.state.name for t in trials]
            row: dict[str, Any] = {"study_seed": seed, "best_trial": best.number, "best_trial_value": best.value,
                   "steps_to_threshold": reached, "env_steps_used": env_steps(trials, budget.search_steps, n_eval),
                   "states": {name: states.count(name) for name in sorted(set(states))}}  # fmt: skip
            rows[label].append(row)
            problem = Problem("ppo", "Pendulum-v1", budget.search_steps, budget.search_trials)
            retrains += [
                (row, pool.submit(retrain, run, folder, "search", best.number, s, problem, budget.eval_episodes))
                for s in fresh
            ]
        scores = [future.result() for _, future in retrains]
    for label_rows in rows.values():
        label_rows.sort(key=lambda row: row["study_seed"])
    for (row, _), score in zip(retrains, scores, strict=True):
        row.setdefault("retrain_returns", []).append(score)
    summary: dict[str, Any] = {}
    for label, label_rows in rows.items():
        for row in label_rows:
            row["retrain_median"] = statistics.median(row["retrain_returns"])
            steps = row["steps_to_threshold"]
            print(f"{label:8s} seed {row['study_seed']}: best trial {row['best_trial']} ({row['best_trial_value']:.1f})"
                  f" re-trained median {row['retrain_median']:.1f}, steps to {budget.threshold:g}: "
                  f"{steps if steps is not None else 'not reached'}, env steps used {row['env_steps_used']}, "
                  f"{row['states']}")  # fmt: skip
        never = budget.search_trials * budget.search_steps + 1  # not reached counts as more than the budget
        summary[label] = {
            "median_retrain_return": statistics.median(r["retrain_median"] for r in label_rows),
            "median_steps_to_threshold": statistics.median(r["steps_to_threshold"] or never for r in label_rows),
        }
    stock, zoo = summary["stock"], summary["zoo_ext"]
    result = {
        "rows": rows,
        "summary": summary,
        "steps_ratio": ratio(zoo["median_steps_to_threshold"], stock["median_steps_to_threshold"]),
        "return_difference": zoo["median_retrain_return"] - stock["median_retrain_return"],
    }
    budget_steps = budget.search_trials * budget.search_steps

    def show(steps: float) -> str:
        return f"{steps:.0f}" if steps <= budget_steps else f"> {budget_steps} (not reached)"

    print(f"median re-trained return of the best found: stock {stock['median_retrain_return']:.1f}, "
          f"zoo_ext {zoo['median_retrain_return']:.1f} (difference {result['return_difference']:+.1f}; "
          "target: not worse)")  # fmt: skip
    print(f"median env steps to {budget.threshold:g}: stock {show(stock['median_steps_to_threshold'])}, "
          f"zoo_ext {show(zoo['median_steps_to_threshold'])}: ratio {result['steps_ratio']:.2f}x "
          "(target <= 0.5x)")  # fmt: skip
    return result


def stock_env_steps(trials: list[FrozenTrial], steps: int) -> int:
    """Return the env steps of a stock study: ``steps`` per complete trial, a pruned one's share of its evaluations."""
    full = max((len(t.intermediate_values) for t in trials if t.state == TrialState.COMPLETE), default=1)
    return sum(
        steps if t.state == TrialState.COMPLETE else steps * len(t.intermediate_values) // max(full, 1) for t in trials
    )


def cold(run: Runner, budget: Budget) -> dict[str, Any]:
    """Tuning from scratch: stock TPE + median vs the ``cold`` preset at equal env steps, re-trained on fresh seeds.

    No warm start on either side. Stock runs ``trials`` trials of ``steps``; zoo_ext runs the cold
    preset under ``--budget-steps`` sized so that its last trial cannot take it past the same env
    steps. Each study's best trial is re-trained on ``retrain_seeds`` fresh seeds. The racing line
    runs ``--n-seeds 3`` with and without ``--seed-racing`` (both with the cold preset) at equal
    trial count.
    """
    from zoo_ext import statistics as stats
    from zoo_ext import storage

    fresh = [100_000 + i for i in range(budget.retrain_seeds)]
    print(f"== cold: no warm start, study seeds {list(budget.study_seeds)}, best trial re-trained on "
          f"{len(fresh)} fresh seeds x {budget.eval_episodes} episodes")  # fmt: skip
    jobs: list[tuple[str, str, int, Problem, list[str], bool]] = []
    for problem in budget.cold_problems:
        cap = problem.trials * problem.steps - problem.steps + 1  # the last trial starts below this: <= the budget
        sides = {"stock": ([*STOCK_SEARCH, "--n-evaluations", "5"], True, problem.trials),
                 "zoo_ext": ([*COLD, "--budget-steps", str(cap)], False, 10 * problem.trials)}  # fmt: skip
        for seed in budget.study_seeds:
            for label, (extra, stock, n_trials) in sides.items():
                args = study_args(problem.algo, problem.env_id, problem.steps, n_trials, "cold", *extra,
                                  "--seed", str(seed), "--num-threads", "1",
                                  "--eval-episodes", str(budget.eval_episodes))  # fmt: skip
                jobs.append((f"{problem.algo}-{problem.env_id}", label, seed, problem, args, stock))
    racing = budget.racing_problem
    for seed in budget.study_seeds:
        for label, extra in (("racing", ["--seed-racing"]), ("no racing", [])):
            args = study_args(racing.algo, racing.env_id, racing.steps, racing.trials, "cold", *COLD,
                              "--n-seeds", "3", *extra, "--seed", str(seed), "--num-threads", "1",
                              "--eval-episodes", str(budget.eval_episodes))  # fmt: skip
            jobs.append(("racing", label, seed, racing, args, False))
    rows: list[dict[str, Any]] = []
    retrains: list[tuple[dict[str, Any], Any]] = []
    with ThreadPoolExecutor(2) as pool:  # the longest studies (first problem) are queued first
        studies = {}
        for part, label, seed, problem, args, stock in jobs:
            folder = f"cold/{part}/{label.replace(' ', '-')}-{seed}"
            studies[pool.submit(run, folder, args, stock=stock)] = (part, label, seed, problem, folder)
        for done in as_completed(studies):
            done.result()
            part, label, seed, problem, folder = studies[done]
            trials = load_study(run.root / folder / "cold.log", "cold").get_trials(deepcopy=False)
            best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value or -np.inf)
            states = [t.state.name for t in trials]
            used = storage.env_steps(trials)
            if label == "stock":  # stock records no env steps: a pruned trial ran its share of the evaluations
                used = stock_env_steps(trials, problem.steps)
            row: dict[str, Any] = {"part": part, "side": label, "study_seed": seed, "best_trial": best.number,
                   "best_trial_value": best.value, "env_steps_used": used,
                   "states": {name: states.count(name) for name in sorted(set(states))}}  # fmt: skip
            rows.append(row)
            print(f"  (done: {part} {label} seed {seed}, best {best.value:.1f}, {used} env steps)", flush=True)
            retrains += [
                (row, pool.submit(retrain, run, folder, "cold", best.number, s, problem, budget.eval_episodes))
                for s in fresh
            ]
        for row, future in retrains:
            row.setdefault("retrain_returns", []).append(future.result())
    rows.sort(key=lambda row: (row["part"], row["side"], row["study_seed"]))
    result: dict[str, Any] = {"rows": rows}
    for part in dict.fromkeys(row["part"] for row in rows):
        part_rows = [row for row in rows if row["part"] == part]
        labels = ["no racing", "racing"] if part == "racing" else ["stock", "zoo_ext"]
        print(f"-- {part}: " + ("--n-seeds 3 with vs without --seed-racing, equal trial count" if part == "racing"
              else f"stock {shlex.join(STOCK_SEARCH)} vs zoo_ext {shlex.join(COLD)} + --budget-steps"))  # fmt: skip
        summary: dict[str, Any] = {}
        for side in labels:
            side_rows = [row for row in part_rows if row["side"] == side]
            for row in side_rows:
                row["retrain_median"] = stats.median(row["retrain_returns"])
                print(f"{side:9s} seed {row['study_seed']}: best trial {row['best_trial']} "
                      f"({row['best_trial_value']:.1f}) re-trained median {row['retrain_median']:.1f}, "
                      f"env steps used {row['env_steps_used']}, {row['states']}")  # fmt: skip
            scores = [score for row in side_rows for score in row["retrain_returns"]]
            summary[side] = {**stats.describe(scores, seed=0), "scores": scores,
                             "env_steps": sum(row["env_steps_used"] for row in side_rows)}  # fmt: skip
            ci = summary[side]["ci95"] or [float("nan")] * 2
            print(f"{side:9s} IQM {summary[side]['iqm']:.1f} [95% CI {ci[0]:.1f}, {ci[1]:.1f}] over "
                  f"{len(scores)} re-trainings, env steps used {summary[side]['env_steps']}")  # fmt: skip
        first, second = (summary[side] for side in labels)
        if part == "racing":
            share = ratio(second["env_steps"], first["env_steps"])
            overlap = first["ci95"] and second["ci95"] and first["ci95"][0] <= second["ci95"][1] \
                and second["ci95"][0] <= first["ci95"][1]  # fmt: skip
            summary["env_steps_share"] = share
            print(f"racing used {share:.0%} of the env steps without racing; test IQM CIs overlap: "
                  f"{'yes' if overlap else 'no'} (target: <= 60% with overlapping CIs)")  # fmt: skip
        else:
            p_better = stats.probability_of_improvement(second["scores"], first["scores"])
            above = bool(first["ci95"] and second["ci95"] and second["ci95"][0] > first["ci95"][1])
            summary["p_improvement"] = p_better
            print(f"P(zoo_ext > stock) = {p_better:.2f}; zoo_ext's IQM CI entirely above stock's: "
                  f"{'yes' if above else 'no'}")  # fmt: skip
            if part == "ppo-Pendulum-v1":
                medians = [row["retrain_median"] for row in part_rows if row["side"] == "zoo_ext"]
                print(f"zoo_ext re-trained median >= -250 in every study seed: "
                      f"{'yes' if min(medians) >= -250 else 'no'} (worst {min(medians):.1f})")  # fmt: skip
        result[part] = summary
    return result


@dataclass(frozen=True)
class Method:
    """One tuning method of the leaderboard: its flags, whether zoo_ext is off, and training seeds per trial."""

    label: str
    args: tuple[str, ...]
    stock: bool = False
    seeds: int = 1


#: The leaderboard's methods. zoo_ext's get ``--budget-steps`` sized like the cold section's (never more env
#: steps than stock's nominal ``trials x -n``); DEHB is added when its OptunaHub package loads offline.
LEADERBOARD_METHODS = (
    Method("stock TPE+median", (*STOCK_SEARCH, "--n-evaluations", "5"), stock=True),
    Method(
        "random, cold space",
        ("--search-space", "cold", "--sampler", "random", "--pruner", "none", "--n-evaluations", "5"),
    ),
    Method("preset cold", tuple(COLD)),
    Method("preset cold, 3 seeds raced", (*COLD, "--n-seeds", "3", "--seed-racing"), seeds=3),
)
DEHB = Method("DEHB, cold space", ("--search-space", "cold", "--sampler", "hub:dehb:DEHBSampler",
              "--pruner", "hub:samplers/dehb:DEHBPruner", "--pruner-kwargs", "min_resource:1", "max_resource:10",
              "reduction_factor:3", "--n-evaluations", "10"))  # fmt: skip


def dehb_method(hub_registry: str | None) -> tuple[Method | None, str]:
    """Return the DEHB method if OptunaHub's ``samplers/dehb`` loads offline (cache or ``--hub-registry``), and why."""
    from zoo_ext.hub import HubError, load_hub_package

    offline = os.environ.get("ZOO_EXT_HUB_OFFLINE")
    os.environ["ZOO_EXT_HUB_OFFLINE"] = "1"
    try:
        load_hub_package("samplers/dehb", hub_registry=hub_registry)
    except (HubError, ImportError) as exc:
        return None, f"DEHB left out: {exc}"
    finally:
        if offline is None:
            del os.environ["ZOO_EXT_HUB_OFFLINE"]
        else:
            os.environ["ZOO_EXT_HUB_OFFLINE"] = offline
    registry = ("--hub-registry", hub_registry) if hub_registry else ()
    method = Method(DEHB.label, (*DEHB.args, *registry))
    return method, f"DEHB included (OptunaHub samplers/dehb from {hub_registry or 'the optunahub cache'})"


def score(trial: FrozenTrial) -> float:
    """Return a trial's value, or for a pruned trial its last intermediate value (-inf without one)."""
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        return trial.value
    steps = trial.intermediate_values
    return steps[max(steps)] if steps else -np.inf


def best_trial(trials: list[FrozenTrial]) -> FrozenTrial:
    """Return the best complete trial, else (a multi-fidelity study that completed none) the best pruned one."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return max(complete or [t for t in trials if t.state == TrialState.PRUNED], key=score)


def space_for(args: tuple[str, ...], algo: str) -> list[str]:
    """Return a method's flags for ``algo``: ``cold`` space if it has one, else ``conditional`` (as the preset)."""
    from zoo_ext.spaces import cold

    flags = list(args)
    if "--search-space" in flags and algo not in cold.ALGOS:
        at = flags.index("--search-space") + 1
        flags[at] = "conditional" if flags[at] == "cold" else flags[at]
    return flags


def ceiling_ratio(trials: list[FrozenTrial], steps: int) -> float:
    """Return the largest env steps per training seed of ``trials`` over ``-n`` (the ceiling: at most 2)."""
    ratios = [
        t.user_attrs["env_steps"]
        / max(1, int(t.user_attrs.get("seeds_run", len(t.user_attrs.get("seeds", [1])))))
        / steps
        for t in trials
        if "env_steps" in t.user_attrs
    ]
    return max(ratios, default=0.0)


def leaderboard(run: Runner, budget: Budget) -> dict[str, Any]:
    """Every method on every problem at equal env steps per study, each study's best re-trained on fresh seeds.

    Per (problem, method): the IQM of the re-trained scores (study seeds x fresh seeds) with its 95%
    bootstrap CI, P(improvement) over stock TPE + median, the env steps used (stock's: nominal,
    ``-n`` per complete trial, as stock records none) and the studies' wall time. Writes
    ``leaderboard.png`` (IQM with CI bars against env steps, one marker per method) to the run folder.
    """
    from zoo_ext import statistics as stats
    from zoo_ext import storage

    problems = [p for p in budget.leaderboard_problems if not run.problems or f"{p.algo}-{p.env_id}" in run.problems]
    dehb, why = dehb_method(run.hub_registry)
    methods = [*LEADERBOARD_METHODS, *([dehb] if dehb else [])]
    fresh = [100_000 + i for i in range(budget.retrain_seeds)]
    print(f"== leaderboard: {len(problems)} problems x {len(methods)} methods, study seeds {list(budget.study_seeds)}, "
          f"best trial re-trained on {len(fresh)} fresh seeds x {budget.eval_episodes} episodes; {why}")  # fmt: skip
    for method in methods:
        print(f"  {method.label}: {shlex.join(method.args)}")
    jobs = []
    for problem in problems:
        for seed in budget.study_seeds:
            for method in methods:
                n_trials = problem.trials if method.stock else 10 * problem.trials
                extra = space_for(method.args, problem.algo)
                if not method.stock:  # the last trial starts while a whole trial fits: <= stock's env steps
                    extra += ["--budget-steps", str(max(1, (problem.trials - method.seeds) * problem.steps + 1))]
                args = study_args(problem.algo, problem.env_id, problem.steps, n_trials, "lb", *extra,
                                  "--seed", str(seed), "--num-threads", "1",
                                  "--eval-episodes", str(budget.eval_episodes))  # fmt: skip
                jobs.append((problem, method, seed, args))
    rows: list[dict[str, Any]] = []
    retrains: list[tuple[dict[str, Any], Any]] = []
    with ThreadPoolExecutor(2) as pool:  # cheapest problems first; a study's re-trainings queue when it ends
        studies = {}
        for problem, method, seed, args in jobs:
            slug = method.label.replace(" ", "-").replace(",", "").replace("+", "-")
            folder = f"leaderboard/{problem.algo}-{problem.env_id}/{slug}-{seed}"
            studies[pool.submit(run, folder, args, stock=method.stock)] = (problem, method, seed, folder)
        for done in as_completed(studies):
            wall = done.result()
            problem, method, seed, folder = studies[done]
            trials = load_study(run.root / folder / "lb.log", "lb").get_trials(deepcopy=False)
            best = best_trial(trials)
            states = [t.state.name for t in trials]
            used = stock_env_steps(trials, problem.steps) if method.stock else storage.env_steps(trials)
            row: dict[str, Any] = {
                "problem": f"{problem.algo}-{problem.env_id}", "method": method.label, "study_seed": seed,
                "best_trial": best.number, "best_trial_value": score(best), "best_trial_state": best.state.name,
                "env_steps_used": used, "wall_time": wall,
                "ceiling_ratio": None if method.stock else ceiling_ratio(trials, problem.steps),
                "states": {name: states.count(name) for name in sorted(set(states))},
            }  # fmt: skip
            rows.append(row)
            print(f"  (done: {row['problem']} {method.label} seed {seed}: best {score(best):.1f}, {used} env steps, "
                  f"{wall:.0f} s)", flush=True)  # fmt: skip
            retrains += [
                (row, pool.submit(retrain, run, folder, "lb", best.number, s, problem, budget.eval_episodes))
                for s in fresh
            ]
        for row, future in retrains:
            row.setdefault("retrain_returns", []).append(future.result())
    result: dict[str, Any] = {"dehb": why, "rows": rows, "problems": {}}
    lines = ["| problem | method | re-trained IQM [95% CI] | P(> stock) | env steps | wall time |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for problem in problems:
        part = f"{problem.algo}-{problem.env_id}"
        summary: dict[str, Any] = {}
        print(f"-- {part}: {problem.trials} x {problem.steps} env steps per study")
        for method in methods:
            method_rows = [r for r in rows if r["problem"] == part and r["method"] == method.label]
            scores = [score for r in method_rows for score in r["retrain_returns"]]
            ratios = [r["ceiling_ratio"] for r in method_rows if r["ceiling_ratio"] is not None]
            summary[method.label] = {**stats.describe(scores, seed=0), "scores": scores,
                                     "env_steps": sum(r["env_steps_used"] for r in method_rows),
                                     "wall_time": sum(r["wall_time"] for r in method_rows),
                                     "ceiling_ratio": max(ratios) if ratios else None}  # fmt: skip
        baseline = summary[LEADERBOARD_METHODS[0].label]
        for method in methods:
            entry = summary[method.label]
            entry["p_improvement"] = stats.probability_of_improvement(entry["scores"], baseline["scores"])
            low, high = entry["ci95"] or [float("nan")] * 2
            above = bool(entry["ci95"] and baseline["ci95"] and low > baseline["ci95"][1])
            ceiling = "" if entry["ceiling_ratio"] is None else f", ceiling held: {entry['ceiling_ratio'] <= 2}"
            print(f"{method.label:28s} IQM {entry['iqm']:9.2f} [95% CI {low:.2f}, {high:.2f}] over "
                  f"{len(entry['scores'])} re-trainings, P(> stock) {entry['p_improvement']:.2f}, CI above stock's: "
                  f"{'yes' if above else 'no'}, env steps {entry['env_steps']}, wall {entry['wall_time']:.0f} s"
                  f"{ceiling}")  # fmt: skip
            lines.append(
                f"| {part} | {method.label} | {entry['iqm']:.2f} [{low:.2f}, {high:.2f}] | "
                f"{entry['p_improvement']:.2f} | {entry['env_steps']:,} | {entry['wall_time']:.0f} s |"
            )
        result["problems"][part] = summary
    print("\n".join(lines))
    result["table"] = lines
    plot_leaderboard(result["problems"], run.root / "leaderboard.png", len(budget.study_seeds))
    print(f"plot: {run.root / 'leaderboard.png'}")
    return result


#: The pbt section's methods: the preset's TPE, and populations whose first generation it samples.
PBT_METHODS = (
    Method("preset cold (TPE)", tuple(COLD)),
    Method("PBT", ("--preset", "cold", "--scheduler", "pbt")),
    Method("PB2", ("--preset", "cold", "--scheduler", "pb2")),
)


def population_args(problem: Problem, method: Method, seed: int, episodes: int, *extra: str) -> list[str]:
    """Return a pbt-section study's flags: a population of ``trials`` members, 5 segments each, or the preset's TPE."""
    common = ["--seed", str(seed), "--num-threads", "1", "--eval-episodes", str(episodes), *extra]
    if "--scheduler" not in method.args:
        budget_steps = str((problem.trials - 1) * problem.steps + 1)
        return study_args(problem.algo, problem.env_id, problem.steps, 10 * problem.trials, "lb", *method.args,
                          "--budget-steps", budget_steps, *common)  # fmt: skip
    interval = str(-(-problem.steps // 5))  # 5 segments per member
    return ["--algo", problem.algo, "--env", problem.env_id, "-optimize", "-n", str(problem.steps),
            "--storage", "lb.log", "--study-name", "lb", "--no-optim-plots", *method.args,
            "--population", str(problem.trials), "--perturb-interval", interval, *common]  # fmt: skip


def retrain_schedule(run: Runner, folder: str, seed: int, problem: Problem, episodes: int) -> float:
    """Re-train a population's best member from scratch with ``seed`` (its exported schedule, stock ``-conf``)."""
    conf = run.root / folder / "best.yml"
    if not conf.exists():
        export = [sys.executable, "-m", "zoo_ext", "export", "--storage", str(run.root / folder / "lb.log"),
                  "--study-name", "lb", "-o", str(conf)]  # fmt: skip
        subprocess.run(export, check=True, capture_output=True, text=True)
    import yaml

    steps = int(yaml.safe_load(conf.read_text())[problem.env_id]["n_timesteps"])
    out = f"{folder}/retrain-{seed}"
    args = ["--algo", problem.algo, "--env", problem.env_id, "-conf", str(conf), "--num-threads", "1",
            "--seed", str(seed), "--eval-freq", str(steps), "--eval-episodes", str(episodes), "-f", "logs"]  # fmt: skip
    run(out, args, stock=False)
    (npz,) = (run.root / out / "logs").rglob("evaluations.npz")
    return float(np.load(npz)["results"][-1].mean())


def population_section(run: Runner, budget: Budget) -> dict[str, Any]:
    """PBT and PB2 against the cold preset's TPE at equal env steps, re-trained on fresh seeds; workers' wall time.

    Per (problem, method): the IQM of the re-trained scores (study seeds x fresh seeds) with its
    95% bootstrap CI, P(improvement) over the preset, env steps and wall time of the studies. A
    population's best member is its furthest generation's best segment, re-trained from scratch
    with its schedule. Then one population (the first problem, PBT) runs with one worker and with
    ``--n-workers 2``, alternated (1, 2, 2, 1), alone on the machine: the ratio of their wall times.
    """
    from zoo_ext import statistics as stats
    from zoo_ext import storage
    from zoo_ext.pbt import best_segment

    problems = budget.pbt_problems
    fresh = [100_000 + i for i in range(budget.retrain_seeds)]
    print(f"== pbt: {len(problems)} problems x {len(PBT_METHODS)} methods, study seeds {list(budget.study_seeds)}, "
          f"best re-trained on {len(fresh)} fresh seeds x {budget.eval_episodes} episodes")  # fmt: skip
    rows: list[dict[str, Any]] = []
    retrains: list[tuple[dict[str, Any], Any]] = []
    with ThreadPoolExecutor(2) as pool:
        studies = {}
        for problem in problems:
            for seed in budget.study_seeds:
                for method in PBT_METHODS:
                    slug = method.label.split(" ")[0]
                    folder = f"pbt/{problem.algo}-{problem.env_id}/{slug}-{seed}"
                    args = population_args(problem, method, seed, budget.eval_episodes)
                    studies[pool.submit(run, folder, args, stock=False)] = (problem, method, seed, folder)
        for done in as_completed(studies):
            wall = done.result()
            problem, method, seed, folder = studies[done]
            study = load_study(run.root / folder / "lb.log", "lb")
            trials = study.get_trials(deepcopy=False)
            population = "--scheduler" in method.args
            best = study.trials[best_segment(study)] if population else best_trial(trials)
            row: dict[str, Any] = {
                "problem": f"{problem.algo}-{problem.env_id}", "method": method.label, "study_seed": seed,
                "best_trial": best.number, "best_trial_value": score(best), "env_steps_used": storage.env_steps(trials),
                "wall_time": wall,
            }  # fmt: skip
            rows.append(row)
            print(f"  (done: {row['problem']} {method.label} seed {seed}: best {score(best):.1f}, "
                  f"{row['env_steps_used']} env steps, {wall:.0f} s)", flush=True)  # fmt: skip
            for s in fresh:
                if population:
                    future = pool.submit(retrain_schedule, run, folder, s, problem, budget.eval_episodes)
                else:
                    future = pool.submit(retrain, run, folder, "lb", best.number, s, problem, budget.eval_episodes)
                retrains.append((row, future))
        for row, future in retrains:
            row.setdefault("retrain_returns", []).append(future.result())
    result: dict[str, Any] = {"rows": rows, "problems": {}}
    lines = ["| problem | method | re-trained IQM [95% CI] | P(> preset) | env steps | wall time |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for problem in problems:
        part = f"{problem.algo}-{problem.env_id}"
        print(f"-- {part}: {problem.trials} members (or trials) x {problem.steps} env steps per study")
        summary: dict[str, Any] = {}
        for method in PBT_METHODS:
            method_rows = [r for r in rows if r["problem"] == part and r["method"] == method.label]
            scores = [s for r in method_rows for s in r["retrain_returns"]]
            summary[method.label] = {**stats.describe(scores, seed=0), "scores": scores,
                                     "env_steps": sum(r["env_steps_used"] for r in method_rows),
                                     "wall_time": sum(r["wall_time"] for r in method_rows)}  # fmt: skip
        baseline = summary[PBT_METHODS[0].label]
        for method in PBT_METHODS:
            entry = summary[method.label]
            entry["p_improvement"] = stats.probability_of_improvement(entry["scores"], baseline["scores"])
            low, high = entry["ci95"] or [float("nan")] * 2
            print(f"{method.label:20s} IQM {entry['iqm']:9.2f} [95% CI {low:.2f}, {high:.2f}] over "
                  f"{len(entry['scores'])} re-trainings, P(> preset) {entry['p_improvement']:.2f}, "
                  f"env steps {entry['env_steps']}, wall {entry['wall_time']:.0f} s")  # fmt: skip
            cells = [part, method.label, f"{entry['iqm']:.2f} [{low:.2f}, {high:.2f}]", f"{entry['p_improvement']:.2f}",
                     f"{entry['env_steps']:,}", f"{entry['wall_time']:.0f} s"]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        result["problems"][part] = summary
    print("\n".join(lines))
    result["table"] = lines
    result["workers"] = population_workers(run, budget)
    return result


def population_workers(run: Runner, budget: Budget) -> dict[str, Any]:
    """Return the wall times of one population with 1 and 2 worker processes (alternated 1, 2, 2, 1) and their ratio."""
    problem, method = budget.pbt_problems[0], PBT_METHODS[1]
    walls: dict[int, list[float]] = {1: [], 2: []}
    for i, workers in enumerate((1, 2, 2, 1)):
        args = population_args(problem, method, 1, budget.eval_episodes, "--n-workers", str(workers), "--no-mlflow")
        walls[workers].append(run(f"pbt/workers/{workers}-{i}", args, stock=False))
    one, two = statistics.median(walls[1]), statistics.median(walls[2])
    print(f"population of {problem.trials} ({problem.algo} {problem.env_id}, {problem.steps} env steps each): "
          f"--n-workers 2 {two:.0f} s vs 1 worker {one:.0f} s: {ratio(two, one):.2f}x (target <= 0.6x)")  # fmt: skip
    return {"one": one, "two": two, "ratio": ratio(two, one), "runs": walls}


#: The multi_env section's algorithm, and its envs with the fixed returns that score 0 and 1 on each (every
#: method's re-trainings are normalised with them); the first env is the multi-env study's ``--env``.
MULTI_ENV_ALGO = "a2c"
MULTI_ENV_SCORES = {"CartPole-v1": (0.0, 500.0), "Acrobot-v1": (-500.0, 0.0)}


def multi_env(run: Runner, budget: Budget) -> dict[str, Any]:
    """One config tuned on several envs (``--tune-envs``) against tuning on one env and transferring it.

    A2C, ``--preset cold`` (10 evaluations) for every method: a multi-env study (``--env CartPole-v1
    --tune-envs Acrobot-v1``, the fixed ``--env-scores``, ``--env-aggregate iqm``, the default) and a
    study on each env alone. Every study gets ``--budget-steps`` of ``multi_env_trials`` multi-env
    trials (``trials x 2 x -n``: twice the trials on one env; the trial running when it is spent
    finishes). Each study's best trial is re-trained on ``retrain_seeds`` fresh seeds on every env
    (``--trial-id --env``: a single-env study's config transferred onto the other env's rl_zoo3
    config), scored by its final evaluation's return normalised with the fixed ranges. Per method:
    the IQM with a 95% bootstrap CI over (env, study seed, fresh seed), each env's IQM,
    P(multi-env better) over all envs and on the env the method did not tune on, env steps and
    the studies' wall time. A study seed samples the same first (random) trials in every method.

    Full mode, estimated at about 35 min on 2 idle cores: 9 studies of 400,000 env steps and 90
    re-trainings of 20,000 (5.4M env steps at 2,000-3,500 A2C env steps/s per core, Acrobot-v1 the
    slower), up to 10 x 10 evaluation episodes of at most 500 steps per run, and about 4 s of
    start-up per re-training. The quick mode took 92 s with the 2 cores shared with another run.
    """
    from zoo_ext import statistics as stats
    from zoo_ext import storage
    from zoo_ext.envs import normalize

    envs = tuple(MULTI_ENV_SCORES)
    methods = {"multi-env": envs, **{f"{env} only": (env,) for env in envs}}
    steps, fresh = budget.multi_env_steps, [100_000 + i for i in range(budget.retrain_seeds)]
    budget_steps = budget.multi_env_trials * len(envs) * steps
    ranges = [f"{env}:{lo:g}:{hi:g}" for env, (lo, hi) in MULTI_ENV_SCORES.items()]
    print(f"== multi_env: {MULTI_ENV_ALGO} on {' + '.join(envs)} (--tune-envs) vs one env and transfer, "
          f"{shlex.join(COLD)}, --budget-steps {budget_steps} (-n {steps}) per study, study seeds "
          f"{list(budget.study_seeds)}, best trial re-trained on {len(fresh)} fresh seeds x {budget.eval_episodes} "
          f"episodes on every env, normalised with {' '.join(ranges)}")  # fmt: skip
    rows: list[dict[str, Any]] = []
    retrains: list[tuple[dict[str, Any], str, Any]] = []
    with ThreadPoolExecutor(2) as pool:  # a study's re-trainings queue as soon as it ends
        studies = {}
        for seed in budget.study_seeds:
            for label, tuned in methods.items():
                extra = ["--tune-envs", *tuned[1:], "--env-scores", *ranges] if len(tuned) > 1 else []
                args = study_args(MULTI_ENV_ALGO, tuned[0], steps, 20 * budget.multi_env_trials, "me", *COLD,
                                  *extra, "--budget-steps", str(budget_steps), "--seed", str(seed), "--num-threads",
                                  "1", "--eval-episodes", str(budget.eval_episodes))  # fmt: skip
                folder = f"multi_env/{label.replace(' ', '-')}-{seed}"
                studies[pool.submit(run, folder, args, stock=False)] = (label, seed, folder)
        for done in as_completed(studies):
            wall = done.result()
            label, seed, folder = studies[done]
            trials = load_study(run.root / folder / "me.log", "me").get_trials(deepcopy=False)
            best = best_trial(trials)
            states = [t.state.name for t in trials]
            row: dict[str, Any] = {
                "method": label, "tuned_on": list(methods[label]), "study_seed": seed, "best_trial": best.number,
                "best_trial_value": score(best), "best_trial_state": best.state.name,
                "env_steps_used": storage.env_steps(trials), "wall_time": wall,
                "states": {name: states.count(name) for name in sorted(set(states))},
                "retrain": {env: {"raw": [], "normalized": []} for env in envs},
            }  # fmt: skip
            rows.append(row)
            print(f"  (done: {label} seed {seed}: best {score(best):.2f}, {row['env_steps_used']} env steps, "
                  f"{row['states']}, {wall:.0f} s)", flush=True)  # fmt: skip
            for env in envs:
                problem = Problem(MULTI_ENV_ALGO, env, steps, budget.multi_env_trials)
                retrains += [
                    (row, env, pool.submit(retrain, run, folder, "me", best.number, s, problem,
                                           budget.eval_episodes, f"-{env}"))
                    for s in fresh
                ]  # fmt: skip
        for row, env, future in retrains:
            raw = future.result()
            row["retrain"][env]["raw"].append(raw)
            row["retrain"][env]["normalized"].append(normalize(raw, *MULTI_ENV_SCORES[env]))
    rows.sort(key=lambda r: (list(methods).index(r["method"]), r["study_seed"]))
    summary: dict[str, Any] = {}
    for label, tuned in methods.items():
        method_rows = [r for r in rows if r["method"] == label]
        per_env = {}
        for env in envs:
            normalized = [s for r in method_rows for s in r["retrain"][env]["normalized"]]
            raw = [s for r in method_rows for s in r["retrain"][env]["raw"]]
            per_env[env] = {**stats.describe(normalized, seed=0), "scores": normalized, "raw_iqm": stats.iqm(raw)}
        scores = [s for env in envs for s in per_env[env]["scores"]]
        summary[label] = {**stats.describe(scores, seed=0), "scores": scores, "tuned_on": list(tuned),
                          "per_env": per_env, "env_steps": sum(r["env_steps_used"] for r in method_rows),
                          "wall_time": sum(r["wall_time"] for r in method_rows)}  # fmt: skip
    multi = summary["multi-env"]

    def interval(entry: dict[str, Any]) -> str:
        low, high = entry["ci95"] or [float("nan")] * 2
        return f"{entry['iqm']:.3f} [{low:.3f}, {high:.3f}]"

    lines = ["| method | normalised IQM [95% CI], all envs | " + " | ".join(f"{env} IQM (raw)" for env in envs)
             + " | P(multi-env >) | P(multi-env >), transfer env | env steps | wall time |",
             "|---|---|" + "---|" * len(envs) + "---|---|---|---|"]  # fmt: skip
    for label, tuned in methods.items():
        entry, others = summary[label], [env for env in envs if env not in tuned]
        cells = ["-", "-"]
        if others:  # a single-env method: P(multi-env better) over every env and on the envs it was transferred to
            entry["p_multi_env_better"] = stats.probability_of_improvement(multi["scores"], entry["scores"])
            entry["p_multi_env_better_transferred"] = stats.probability_of_improvement(
                [s for env in others for s in multi["per_env"][env]["scores"]],
                [s for env in others for s in entry["per_env"][env]["scores"]],
            )
            cells = [f"{entry['p_multi_env_better']:.2f}", f"{entry['p_multi_env_better_transferred']:.2f}"]
        iqms = [f"{e['iqm']:.3f} ({e['raw_iqm']:.1f})" for e in (entry["per_env"][env] for env in envs)]
        cells = [label, interval(entry), *iqms, *cells, f"{entry['env_steps']:,}", f"{entry['wall_time']:.0f} s"]
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    transfers = [(tuned[0], summary[label]) for label, tuned in methods.items() if len(tuned) == 1]
    verdict = (f"multi_env: multi-env IQM {interval(multi)} vs transfer "
               + ", ".join(f"from {env} {interval(entry)}" for env, entry in transfers) + "; P(multi-env better) "
               + ", ".join(f"{entry['p_multi_env_better']:.2f}" for _, entry in transfers))  # fmt: skip
    print(verdict)
    fixed = {env: {"lo": lo, "hi": hi} for env, (lo, hi) in MULTI_ENV_SCORES.items()}
    return {"env_scores": fixed, "budget_steps": budget_steps, "rows": rows, "methods": summary, "table": lines,
            "verdict": verdict}  # fmt: skip


def plot_leaderboard(problems: dict[str, dict[str, Any]], path: Path, n_studies: int) -> None:
    """Draw per problem the re-trained IQM with its 95% CI against the mean env steps per study, a marker per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(problems), figsize=(4.2 * len(problems), 3.8), squeeze=False)
    markers = "osD^vP"
    for ax, (part, summary) in zip(axes[0], problems.items(), strict=True):
        for marker, (label, entry) in zip(markers, summary.items(), strict=False):
            low, high = entry["ci95"] or (entry["iqm"], entry["iqm"])
            x = entry["env_steps"] / n_studies
            ax.errorbar(x, entry["iqm"], yerr=[[entry["iqm"] - low], [high - entry["iqm"]]], fmt=marker,
                        capsize=4, label=label)  # fmt: skip
        ax.set_title(part)
        ax.set_xlabel("env steps per study")
        ax.set_ylabel("re-trained return (IQM, 95% CI)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> dict[str, Any]:
    """Return a description of this machine and the package versions."""
    from importlib.metadata import version

    packages = ("rl_zoo3", "stable-baselines3", "torch", "optuna", "mlflow", "gymnasium")
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "packages": {name: version(name) for name in packages},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny budgets: finishes in minutes (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("benchmark-results"), help="work and results folder")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep --out and skip the commands that succeeded there (delete a failed command's folder first)",
    )
    parser.add_argument("--problems", nargs="+", default=(), help="leaderboard problems to run, as ALGO-ENV")
    parser.add_argument("--hub-registry", default=None, help="a local OptunaHub registry folder (DEHB offline)")
    sections = {"overhead": overhead, "small_study": small_study, "throughput": throughput, "search": search,
                "cold": cold, "leaderboard": leaderboard, "pbt": population_section,
                "multi_env": multi_env}  # fmt: skip
    parser.add_argument("--sections", nargs="+", default=list(sections), choices=list(sections), help="default: all")
    args = parser.parse_args(argv)
    budget = QUICK if args.quick else FULL
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = args.out.resolve()
    if not args.resume:
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    from mlflow import MlflowClient

    mlflow_uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(mlflow_uri).search_experiments()  # create the store before any timing
    run = Runner(root, mlflow_uri, problems=tuple(args.problems), hub_registry=args.hub_registry)
    info = machine()
    print(f"zoo_ext benchmark ({'quick' if args.quick else 'full'} mode): {shlex.join(sys.argv)}")
    print(f"machine: {info['cpus']} CPUs, {info['processor']}, {info['platform']}, Python {info['python']}")
    print("packages: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))
    results: dict[str, Any] = {"mode": "quick" if args.quick else "full", "budget": asdict(budget), "machine": info}
    for name in args.sections:
        start = time.perf_counter()
        results[name] = sections[name](run, budget)
        print(f"({name}: {time.perf_counter() - start:.0f} s)\n", flush=True)
        (root / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
