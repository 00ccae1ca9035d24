"""Worker processes: ``--n-workers``, the shared budget, and workers that are interrupted or killed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from helpers import (
    ROOT,
    STOCK,
    mlflow_runs,
    mlflow_store,
    run,
    signal_mid_trial,
    start,
    study_args,
    wait_for_running_trial,
)
from mlflow import MlflowClient
from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from zoo_ext.workers import Interrupted, Workers, _importing, fork_workers, signals_interrupt


@pytest.mark.slow
def test_two_workers_run_the_budget_once(workdir: Path) -> None:
    uri = mlflow_store(workdir)
    # Trials long enough (about 2 s) that the forked worker joins before the launcher ran them all, also under load.
    args = ["--algo", "ppo", "--env", "CartPole-v1", "-optimize", "-n", "2048", "--n-trials", "4", "--n-evaluations",
            "1", "--eval-episodes", "2", "--sampler", "random", "--pruner", "none", "--seed", "5", "--study-name", "w",
            "--n-workers", "2", "--mlflow-tracking-uri", uri, "--no-optim-plots",
            "-params", "n_envs:1", "n_steps:32"]  # fmt: skip
    proc = run([*STOCK, *args], workdir)
    assert "Running 2 worker processes on study 'w'" in proc.stdout
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(workdir / "logs" / "ppo" / "w.log"))
    )
    study = optuna.load_study(storage=storage, study_name="w")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4  # workers' own sampler seeds
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ppo-CartPole-v1").experiment_id])
    parents = [r for r in runs if r.data.tags.get("zoo_ext.role") == "study"]
    children = sorted(
        int(r.data.tags["optuna.trial_number"]) for r in runs if r.data.tags.get("zoo_ext.role") == "trial"
    )
    assert len(parents) == 1 and children == [0, 1, 2, 3]
    assert "Number of finished trials:  4" in proc.stdout  # the launcher's summary, once
    # The second worker was forked from the launcher (imports done), not started anew, and ran trials.
    (forked,) = re.findall(r"forked 1 worker processes: (\d+)", proc.stderr)
    ran = {t.user_attrs["worker"]["pid"] for t in study.trials}
    assert int(forked) in ran and len(ran) == 2, (forked, ran)


FORK_SCRIPT = """
import atexit, json, os, sys
from pathlib import Path
import torch  # what the launcher imported: the forked workers must not import it again
from zoo_ext import workers

out = Path(sys.argv[1])
launcher = os.getpid()
atexit.register(lambda: (out / "launcher-exit").open("a").write(f"{os.getpid()}\\n"))

def main():
    index = os.environ["ZOO_EXT_WORKER"]
    atexit.register(lambda: (out / f"worker-exit-{index}").write_text(str(os.getpid())))
    state = {"ppid": os.getppid(), "argv": sys.argv[-2:], "orig_argv": sys.orig_argv[-2:],
             "wave": "wave" in sys.modules}
    print(json.dumps(state), flush=True)
    raise SystemExit(10 + int(index))

forked = workers.fork_workers(2, main, preload=["wave"])
assert "wave" not in sys.modules  # imported by the workers while they waited, not here
if sys.argv[2] == "start":
    with workers.Workers([["--seed", "1"], ["--seed", "2"]], forked=forked, pipe_output=True) as pool:
        lines = [json.loads(p.stdout.readline()) for p in pool.processes]
    print(json.dumps({"launcher": launcher, "pids": [p.pid for p in pool.processes], "codes": pool.exit_codes,
                      "lines": lines}))
else:  # the launcher fails before starting them (a bad flag): they must exit without running
    print(json.dumps({"pids": [w.pid for w in forked]}))
"""


@pytest.mark.slow
def test_forked_workers_run_with_their_flags_and_exit_handlers(tmp_path: Path) -> None:
    script = tmp_path / "launch.py"
    script.write_text(FORK_SCRIPT)
    proc = run([sys.executable, str(script), str(tmp_path), "start"], tmp_path, timeout=120)
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["codes"] == [11, 12]  # each worker's own exit status
    for index, line in enumerate(result["lines"], start=1):
        flags = ["--seed", str(index)]
        assert line == {"ppid": result["launcher"], "argv": flags, "orig_argv": flags, "wave": True}
        # Its own exit handlers ran, not the launcher's it inherited (which ran once, in the launcher).
        assert (tmp_path / f"worker-exit-{index}").read_text() == str(result["pids"][index - 1])
    assert (tmp_path / "launcher-exit").read_text() == f"{result['launcher']}\n"


@pytest.mark.slow
def test_forked_workers_exit_when_the_launcher_stops_before_starting_them(tmp_path: Path) -> None:
    script = tmp_path / "launch.py"
    script.write_text(FORK_SCRIPT)
    proc = run([sys.executable, str(script), str(tmp_path), "stop"], tmp_path, timeout=120)
    pids = json.loads(proc.stdout.splitlines()[-1])["pids"]
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "a forked worker outlived its launcher"
        time.sleep(0.2)
    assert not list(tmp_path.glob("worker-exit-*")), "a worker ran although it was never started"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_are_new_processes_when_a_thread_runs() -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert fork_workers(1, pytest.fail) == []  # forking beside a running thread is unsafe
    finally:
        stop.set()
        thread.join()
    argv = [sys.executable, "-c", "import os, sys; sys.exit(int(sys.argv[1]) + int(os.environ['ZOO_EXT_WORKER']))"]
    with Workers([["7"], ["8"]], argv=argv) as pool:
        pass
    assert pool.exit_codes == [8, 10]


def journal(folder: Path, name: str = "study.log") -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(folder / name)))


@pytest.mark.slow
def test_resume_fails_and_retries_the_trial_of_a_killed_worker(space_dir: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": mlflow_store(space_dir)}
    cmd = [*STOCK, *study_args("study.log", "j", n=20_000, total=3)]
    worker, killed, _ = signal_mid_trial(cmd, space_dir, journal(space_dir), "j", signal.SIGKILL, env=env)
    proc = run([*STOCK, *study_args("study.log", "j", n=512, total=3)], space_dir, env=env)
    assert f"trial {killed.number} failed: worker process {worker.pid}" in proc.stderr
    study = optuna.load_study(storage=journal(space_dir), study_name="j")
    failed = study.trials[killed.number]
    assert failed.state == TrialState.FAIL and "died while running this trial" in failed.user_attrs["fail_reason"]
    (retry,) = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert retry.params == failed.params and retry.state == TrialState.COMPLETE
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    _, children = mlflow_runs(env["MLFLOW_TRACKING_URI"])
    status = {int(r.data.tags["optuna.trial_number"]): r.info.status for r in children}
    assert status[killed.number] == "FAILED" and "RUNNING" not in status.values()


@pytest.mark.slow
def test_sigterm_records_the_running_trial(space_dir: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": mlflow_store(space_dir)}
    cmd = [*STOCK, *study_args("study.log", "t", n=20_000, total=3)]
    worker, trial, err = signal_mid_trial(cmd, space_dir, journal(space_dir), "t", signal.SIGTERM, env=env)
    assert worker.returncode == 143, err[-3000:]
    assert "Interrupted by SIGTERM: study 't' is saved in study.log; run the same command to resume it" in err
    study = optuna.load_study(storage=journal(space_dir), study_name="t")
    stopped = study.trials[trial.number]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["fail_reason"] == "interrupted by SIGTERM"
    (retry,) = study.get_trials(states=(TrialState.WAITING,))  # queued again with its parameters
    assert retry.params == stopped.params and "fail_reason" not in retry.user_attrs
    parents, children = mlflow_runs(env["MLFLOW_TRACKING_URI"])
    assert [r.info.status for r in children if r.data.tags["optuna.trial_number"] == str(trial.number)] == ["KILLED"]
    assert [p.info.status for p in parents] == ["KILLED"]


@pytest.mark.slow
def test_ctrl_c_stops_all_workers_and_the_study_resumes(space_dir: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": mlflow_store(space_dir)}
    args = [*study_args("study.log", "c", n=20_000, total=4), "--n-workers", "2"]
    launcher = start([*STOCK, *args], space_dir, env=env, new_session=True)
    storage = journal(space_dir)
    wait_for_running_trial(storage, "c", launcher.pid)
    deadline = time.monotonic() + 120
    while len(optuna.load_study(storage=storage, study_name="c").get_trials(states=(TrialState.RUNNING,))) < 2:
        assert time.monotonic() < deadline, "the second worker started no trial"
        time.sleep(0.5)
    os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    _, err = launcher.communicate(timeout=180)
    assert launcher.returncode == 130, err[-3000:]
    study = optuna.load_study(storage=storage, study_name="c")
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(interrupted) == 2 and all(t.user_attrs["fail_reason"] == "interrupted by SIGINT" for t in interrupted)
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 2  # both queued again
    assert not study.get_trials(states=(TrialState.RUNNING,)), err[-3000:]
    _, children = mlflow_runs(env["MLFLOW_TRACKING_URI"])
    assert "RUNNING" not in {r.info.status for r in children}
    killed = [r for r in children if int(r.data.tags["optuna.trial_number"]) in {t.number for t in interrupted}]
    assert [(r.info.status, r.data.tags["optuna.trial_state"]) for r in killed] == [("KILLED", "FAIL")] * 2
    run([*STOCK, *study_args("study.log", "c", n=512, total=4), "--n-workers", "2"], space_dir, env=env)
    study = optuna.load_study(storage=storage, study_name="c")
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers))) and len(study.get_trials(states=(TrialState.COMPLETE,))) == 4
    retried = {RetryHeartbeatStaleTrialCallback.retried_trial_number(t): t for t in study.trials}
    for trial in interrupted:  # the interrupted trials ran again first, with their parameters
        assert retried[trial.number].params == trial.params and retried[trial.number].state == TrialState.COMPLETE
    parents, children = mlflow_runs(env["MLFLOW_TRACKING_URI"])
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == numbers
    assert "RUNNING" not in {r.info.status for r in children} and [p.info.status for p in parents] == ["FINISHED"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_interrupt_names_the_first_signal_and_ignores_later_ones(sig: signal.Signals) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as caught, signals_interrupt():
        try:
            os.kill(os.getpid(), sig)
            signal.sigtimedwait([], 0.1)  # let the handler run
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # while recording the trial: ignored
            signal.sigtimedwait([], 0.1)
    assert caught.value.signal_name == sig.name and isinstance(caught.value, KeyboardInterrupt)
    os.kill(os.getpid(), signal.SIGTERM)  # after the block too: the process is stopping, later signals are ignored
    signal.sigtimedwait([], 0.1)
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, before if stop == signal.SIGTERM else signal.default_int_handler)
    with signals_interrupt():
        pass
    assert signal.getsignal(signal.SIGTERM) is before  # not interrupted: the handlers are restored


def test_a_signal_inside_a_finalizer_is_delivered_again_later(caplog: pytest.LogCaptureFixture) -> None:
    """An exception raised in ``__del__`` is printed and dropped: the handler must not then ignore the signal."""

    class Finalized:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside the finalizer
            time.sleep(1)

    with pytest.raises(Interrupted, match="SIGTERM"), signals_interrupt():
        Finalized()
        assert "SIGTERM arrived inside a finalizer" in caplog.text
        time.sleep(5)  # the SIGTERM sent again arrives here


def test_a_signal_inside_an_import_is_delivered_again_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Raising inside importlib can leave the import lock held, hanging MLflow's thread: the handler waits."""
    (tmp_path / "frame_probe.py").write_text("import sys\nFRAME = sys._getframe()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import frame_probe  # type: ignore[import-not-found]

    assert _importing(frame_probe.FRAME)
    assert not _importing(sys._getframe())
    with pytest.raises(Interrupted, match="SIGTERM"), signals_interrupt():
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        handler(signal.SIGTERM, frame_probe.FRAME)  # inside an import: no exception now, the signal comes again
        time.sleep(5)  # the re-sent SIGTERM arrives here, outside any import


def test_the_pool_reaps_a_killed_worker_at_once_and_reports_it() -> None:
    deaths: list[tuple[int, int]] = []
    sleeper = [sys.executable, "-c", "import sys, time; time.sleep(float(sys.argv[1]))"]
    with Workers([["60"], ["0"]], argv=sleeper, on_death=lambda *death: deaths.append(death)) as pool:
        victim = pool.processes[0]
        victim.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not deaths:
            assert time.monotonic() < deadline, "the killed worker was not reported"
            time.sleep(0.05)
        assert not Path(f"/proc/{victim.pid}").exists()  # reaped: no zombie left to look alive
    assert deaths == [(1, -signal.SIGKILL)]  # worker 2 exited 0: not a death
    assert pool.exit_codes == [-signal.SIGKILL, 0]


def _other_workers_running_trial(storage: Any, name: str, launcher: int, timeout: float = 180) -> FrozenTrial:
    """Return a RUNNING trial of a worker other than ``launcher`` once it has trained for a moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(KeyError):
            study = optuna.load_study(storage=storage, study_name=name)
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if trial.user_attrs.get("worker", {}).get("pid") not in (None, launcher) and "seed" in trial.user_attrs:
                    time.sleep(1.0)
                    return trial
        time.sleep(0.3)
    raise AssertionError("no worker but the launcher started a trial")


def _assert_retried_and_done(study: optuna.Study, killed: FrozenTrial, uri: str, total: int) -> None:
    """Every trial finished, the killed one failed and its retry completed, MLflow says the same."""
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    failed = study.trials[killed.number]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["fail_reason"] == (
        f"worker process {killed.user_attrs['worker']['pid']} on {killed.user_attrs['worker']['host']} "
        "died while running this trial"
    )
    (retry,) = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert retry.params == failed.params and retry.state == TrialState.COMPLETE
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == total
    parents, children = mlflow_runs(uri)
    status = {int(r.data.tags["optuna.trial_number"]): r.info.status for r in children}
    assert status == {t.number: "FAILED" if t.number == killed.number else "FINISHED" for t in study.trials}
    assert [p.info.status for p in parents] == ["FINISHED"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_killed_forked_worker_is_reaped_and_its_trial_retried_at_once(space_dir: Path, kind: str) -> None:
    env = {"MLFLOW_TRACKING_URI": mlflow_store(space_dir)}
    url = "study.log" if kind == "journal" else f"sqlite:///{space_dir / 'study.db'}"
    storage = journal(space_dir) if kind == "journal" else optuna.storages.RDBStorage(url)
    launcher = start([*STOCK, *study_args(url, "k", n=20_000, total=4), "--n-workers", "2"], space_dir, env=env)
    killed = _other_workers_running_trial(storage, "k", launcher.pid)
    os.kill(killed.user_attrs["worker"]["pid"], signal.SIGKILL)
    _, err = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, err[-3000:]
    assert f"worker 1 (pid {killed.user_attrs['worker']['pid']}) was killed by SIGKILL while the study ran" in err
    assert f"trial {killed.number} failed: worker process" in err
    assert "worker exit codes: [-9]" in err
    _assert_retried_and_done(optuna.load_study(storage=storage, study_name="k"), killed, env["MLFLOW_TRACKING_URI"], 4)


@pytest.mark.slow
def test_launch_workers_sh_finishes_the_budget_after_a_worker_is_killed(space_dir: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": mlflow_store(space_dir), "PYTHON": sys.executable, "WORKER_LOG_DIR": "logs"}
    script = ["bash", str(ROOT / "scripts" / "launch_workers.sh"), "2"]
    launcher = start([*script, *study_args("study.log", "w", n=20_000, total=4)], space_dir, env=env)
    killed = _other_workers_running_trial(journal(space_dir), "w", launcher.pid)
    os.kill(killed.user_attrs["worker"]["pid"], signal.SIGKILL)
    out, err = launcher.communicate(timeout=300)
    logs = "".join(path.read_text() for path in sorted((space_dir / "logs").glob("worker-*.log")))
    assert launcher.returncode == 0, out + err + logs[-3000:]
    assert f"trial {killed.number} failed: worker process" in logs
    _assert_retried_and_done(optuna.load_study(storage=journal(space_dir), study_name="w"), killed,
                             env["MLFLOW_TRACKING_URI"], 4)  # fmt: skip


@pytest.mark.slow
def test_an_interrupted_in_memory_study_says_nothing_is_saved(space_dir: Path) -> None:
    args = study_args("study.log", "m", n=200_000, total=3)
    at = args.index("--storage")
    del args[at : at + 2]  # no --storage: an in-memory study
    proc = start([*STOCK, *args], space_dir)
    deadline = time.monotonic() + 120
    while not list(space_dir.glob("logs/a2c/CartPole-v1_*")) and not proc.poll():
        assert time.monotonic() < deadline, "the study did not start"
        time.sleep(0.3)
    time.sleep(4)  # the first trial trains
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 143, err[-3000:]
    assert "queued again" not in err and "saved in None" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("Interrupted by SIGTERM: study 'm' was in memory (no --storage), nothing is saved; add ")
    hint = shlex.split(last.split("; add ", 1)[1])
    assert hint[:2] == ["--storage", "logs/m.log"] and hint[2:] == "next time to be able to resume it".split()
