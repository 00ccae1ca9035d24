"""Load test of ``zoo_ext.mlflow.track``: many worker processes on one PostgreSQL study, some killed midway.

Starts a throw-away PostgreSQL server (Debian's ``initdb``/``pg_ctl``, as the ``postgres`` user when
run as root; the password reaches every process through ``PGPASSWORD``, never a URL) and, for each
tracked mode, an MLflow tracking server on 127.0.0.1 with a PostgreSQL backend. Then, for each mode,
on a fresh study database (and a fresh MLflow database): ``--workers`` processes load one study
(``RDBStorage`` with heartbeats), wait at a start line, and optimize a plain objective (one float,
5 x (sleep 0.05 s, ``trial.report``), median pruning, a few trials raise) until the study holds
``--trials`` trials (``MaxTrialsCallback(states=None)``); once it holds 40 % of them, ``--kill``
workers get SIGKILL and nothing replaces them (the survivors fail their stale trials through the
heartbeats and finish the budget). Modes, timed from the start line to the last worker's exit:

* ``untracked``: plain ``study.optimize``;
* ``zoo_ext``: ``with track(study, objective, ...) as tracked: study.optimize(tracked, ...)``;
* ``mlflow_callback``: optuna-integration's ``MLflowCallback`` (left out, saying why, if not installed).

For the ``zoo_ext`` mode the MLflow runs are checked against the study, once the workers ended and
again after ``python -m zoo_ext mlflow-sync`` (run once, as a user would): missing (a finished trial
without a run), duplicated (a trial number with more than one run), wrong status (COMPLETE ->
FINISHED, PRUNED -> KILLED, FAIL -> FAILED), RUNNING forever (a run still RUNNING for a finished
trial after the study ended), and the parent run's ``best_value`` against ``study.best_value``.

Usage::

    python scripts/load_test.py                 # 16 workers x 2,000 trials, 2 killed
    python scripts/load_test.py --quick         # 4 workers x 100 trials, 1 killed (CI)
    python scripts/load_test.py --out load-results --workers 8 --trials 500

Prints the results and writes ``<out>/results.json`` and the server and worker logs to ``<out>``.
Exits 1 if a check fails after the sync (or a worker or the sync fails).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MODES = ("untracked", "zoo_ext", "mlflow_callback")
#: The objective: STEPS reports, each after STEP_SECONDS of sleep (about 0.25 s a trial).
STEPS = 5
STEP_SECONDS = 0.05
#: A trial whose x is above this raises ValueError (caught: the trial FAILs), about 1.5 % of them.
FAIL_ABOVE = 9.7
#: Run status expected for each finished trial state.
EXPECTED_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
#: Tags of zoo_ext's runs.
ROLE_TAG = "zoo_ext.role"
NUMBER_TAG = "optuna.trial_number"
SYNCED_TAG = "zoo_ext.synced"
PG_USER = "zoo"


# ---------------------------------------------------------------------------------------------- worker


class _BadRegion(ValueError):
    """Raised by the objective for a few values of x: the trial FAILs (Optuna catches it)."""


def objective(trial: Any) -> float:
    """Suggest x; report 5 times, 0.05 s apart (pruned by the median pruner); fail above FAIL_ABOVE."""
    import optuna

    trial.set_user_attr("pid", os.getpid())
    x = trial.suggest_float("x", -10.0, 10.0)
    for step in range(STEPS):
        time.sleep(STEP_SECONDS)
        trial.report((x - 2.0) ** 2 + 1.0 / (step + 1), step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    if x > FAIL_ABOVE:
        raise _BadRegion(f"x={x:.3f} is in the failing region")
    return (x - 2.0) ** 2


def worker(args: argparse.Namespace) -> int:
    """One worker process: load the study, wait for the start line, optimize until the study holds the budget."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Expected, once per process: heartbeats are experimental, MLflowCallback deprecated (optuna-integration 4.9).
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="MLflowCallback has been deprecated", category=FutureWarning)
    storage = RDBStorage(args.storage, heartbeat_interval=args.heartbeat, grace_period=args.grace)
    study = optuna.load_study(
        study_name=args.study_name,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(seed=args.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    )
    callbacks: list[Any] = [optuna.study.MaxTrialsCallback(args.total, states=None)]
    if args.worker == "mlflow_callback":
        from optuna_integration.mlflow import MLflowCallback

        callbacks.append(MLflowCallback(tracking_uri=args.tracking_uri, metric_name="value"))
    if args.worker == "zoo_ext":  # imported before the start line, as the callback's module is
        import mlflow.entities  # what track needs: MlflowClient, entities
        import mlflow.tracking  # noqa: F401

        from zoo_ext.mlflow import track
    Path(args.ready).touch()
    while not Path(args.go).exists():
        time.sleep(0.02)
    if args.worker == "zoo_ext":
        with track(study, objective, experiment=args.experiment, tracking_uri=args.tracking_uri) as tracked:
            study.optimize(tracked, callbacks=callbacks, catch=(_BadRegion,))
    else:
        study.optimize(objective, callbacks=callbacks, catch=(_BadRegion,))
    return 0


# ------------------------------------------------------------------------------------------ servers


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pg_bin(name: str) -> str:
    """Return the path of a PostgreSQL program (Debian keeps the server's off PATH)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    path = found[-1] if found else shutil.which(name)
    if path is None:
        raise SystemExit(f"load_test: PostgreSQL's {name} not found: install Debian's postgresql")
    return path


class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1; role ``zoo`` whose password is in ``PGPASSWORD``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.started = False

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(os.environ["PGPASSWORD"])
        if self.as_user:  # initdb refuses to run as root
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        subprocess.run([*self.as_user, pg_bin("initdb"), "-D", str(self.root / "data"), "-U", PG_USER,
                        "-A", "scram-sha-256", f"--pwfile={pwfile}", "--no-sync"], check=True,
                       capture_output=True)  # fmt: skip
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=400")  # fmt: skip
        subprocess.run([*self.as_user, pg_bin("pg_ctl"), "-D", str(self.root / "data"), "-l",
                        str(self.root / "server.log"), "-o", options, "-w", "start"], check=True,
                       capture_output=True)  # fmt: skip
        self.started = True

    def stop(self) -> None:
        if self.started:
            subprocess.run([*self.as_user, pg_bin("pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "stop"],
                           check=False, capture_output=True)  # fmt: skip
            self.started = False

    def cpu(self) -> float:
        """Return the CPU seconds the server's processes used so far (the postmaster, its backends)."""
        pid = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        return _tree_cpu(pid)

    def database(self, name: str) -> str:
        """Create database ``name``; return its URL (no password: libpq reads ``PGPASSWORD``)."""
        subprocess.run([pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, name],
                       check=True, capture_output=True)  # fmt: skip
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{name}"


def _stop_group(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """Stop ``proc`` and its children (its own process group): SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def mlflow_server(
    backend: str, artifacts: Path, log: Path, workers: int, timeout: float = 600
) -> Iterator[tuple[str, int]]:
    """Run ``mlflow server`` on 127.0.0.1 with ``backend``; yield its URL and pid once it answers; stop it on exit."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers",
           str(workers), "--backend-store-uri", backend, "--artifacts-destination", str(artifacts)]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        server = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=5):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"mlflow server did not start (log: {log})") from None
                    time.sleep(0.5)
            yield url, server.pid
        finally:
            _stop_group(server)


# -------------------------------------------------------------------------------------------- modes


def _worker_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _finished(study: Any) -> list[Any]:
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]


def run_mode(
    mode: str, pg: Postgres, folder: Path, args: argparse.Namespace, tracking_uri: str | None, mlflow_pid: int | None
) -> dict:
    """Run the workers of ``mode`` on a fresh study; return its timing, CPU time, trial states and killed workers."""
    import optuna
    from optuna.storages import RDBStorage
    from optuna.trial import TrialState

    folder.mkdir(parents=True, exist_ok=True)
    storage_url = pg.database(f"optuna_{mode}")
    study_name = f"load-{mode}"
    optuna.create_study(study_name=study_name, storage=storage_url, direction="minimize")
    experiment = study_name
    if mode == "mlflow_callback" and tracking_uri:
        # Created beforehand: MLflowCallback's own set_experiment races (RESOURCE_ALREADY_EXISTS) in 16 processes.
        from mlflow import MlflowClient

        MlflowClient(tracking_uri).create_experiment(experiment)
    go = folder / "go"
    procs: list[subprocess.Popen[Any]] = []
    logs = []
    try:
        for index in range(args.workers):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--storage", storage_url,
                   "--study-name", study_name, "--total", str(args.trials), "--seed", str(index),
                   "--heartbeat", str(args.heartbeat), "--grace", str(args.grace), "--ready",
                   str(folder / f"ready-{index}"), "--go", str(go), "--experiment", experiment]  # fmt: skip
            if tracking_uri:
                cmd += ["--tracking-uri", tracking_uri]
            log = (folder / f"worker-{index}.log").open("w")
            logs.append(log)
            procs.append(subprocess.Popen(cmd, env=_worker_env(), stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + args.start_timeout
        while not all((folder / f"ready-{i}").exists() for i in range(args.workers)):
            exited = [p.pid for p in procs if p.poll() is not None]
            if exited or time.monotonic() > deadline:
                raise RuntimeError(f"{mode}: workers {exited or 'not ready in time'} (logs in {folder})")
            time.sleep(0.1)
        cpu_before = _children_cpu()
        servers_before = pg.cpu() + (_tree_cpu(mlflow_pid) if mlflow_pid else 0.0)
        go.touch()
        started = time.monotonic()
        watch = RDBStorage(storage_url)
        study_id = watch.get_study_id_from_name(study_name)
        kill_at = math.ceil(args.kill_at * args.trials)
        killed: list[int] = []
        killed_after = None
        running_at_kill: list[int] = []
        deadline = started + args.timeout
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{mode}: workers still running after {args.timeout:g} s (logs in {folder})")
            if args.kill and not killed:
                n = watch.get_n_trials(study_id)
                if n >= kill_at:
                    for proc in procs[-args.kill :]:
                        proc.send_signal(signal.SIGKILL)
                        killed.append(proc.pid)
                    killed_after = n
                    running = watch.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                    running_at_kill = [t.number for t in running]
            time.sleep(0.1)
        seconds = time.monotonic() - started
        cpu = _children_cpu() - cpu_before
        servers = pg.cpu() + (_tree_cpu(mlflow_pid) if mlflow_pid else 0.0) - servers_before
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    failed_late = []
    if any(t.state == TrialState.RUNNING for t in study.trials):
        # No worker started a trial once a killed worker's trial went stale: fail it as the next worker would.
        time.sleep(args.grace + 2 * args.heartbeat)
        storage = RDBStorage(storage_url, heartbeat_interval=args.heartbeat, grace_period=args.grace)
        late = optuna.load_study(study_name=study_name, storage=storage)
        stuck = {t.number for t in late.trials if t.state == TrialState.RUNNING}
        optuna.storages.fail_stale_trials(late)
        study = optuna.load_study(study_name=study_name, storage=storage_url)
        failed_late = sorted(n for n in stuck if study.trials[n].state == TrialState.FAIL)
    finished = _finished(study)
    states: dict[str, int] = {}
    for trial in study.trials:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    # The killed workers' trials in flight: RUNNING at the kill, of a killed pid (or killed before it was recorded).
    in_flight = [n for n in running_at_kill if study.trials[n].user_attrs.get("pid", killed[0]) in killed]
    returncodes = {p.pid: p.returncode for p in procs if p.pid not in killed}
    warnings = _count_log_lines(folder, ("WARNING", "Warning"))
    errors = _count_log_lines(folder, ("Traceback",))
    return {
        "study_name": study_name,
        "storage": storage_url,
        "experiment": experiment,
        "seconds": seconds,
        "finished_trials": len(finished),
        "trials_per_second": len(finished) / seconds,
        "worker_cpu_seconds": cpu,
        "server_cpu_seconds": servers,
        "states": states,
        "best_value": study.best_value if any(t.state.name == "COMPLETE" for t in finished) else None,
        "killed_pids": killed,
        "killed_after_trials": killed_after,
        "killed_in_flight": {
            n: study.trials[n].state.name + ("" if "pid" in study.trials[n].user_attrs else ", objective not started")
            for n in in_flight
        },
        "running_left": [t.number for t in study.trials if t.state == TrialState.RUNNING],
        "failed_after_workers_ended": failed_late,
        "worker_returncodes": returncodes,
        "workers_ok": all(code == 0 for code in returncodes.values()),
        "log_warnings": warnings,
        "log_tracebacks": errors,
    }


def _tree_cpu(root: int) -> float:
    """Return the CPU seconds of process ``root``, its ended children and its live children and process group."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(stat.parent.name)
            fields = stat.read_text().rsplit(")", 1)[1].split()
            ppid, pgrp = int(fields[1]), int(fields[2])
            if pid == root or ppid == root or pgrp == root:
                total += int(fields[11]) + int(fields[12])  # utime, stime
                if pid == root:
                    total += int(fields[13]) + int(fields[14])  # of its children that ended (postgres backends)
    return total / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """Return the CPU seconds (user + system) of this process's ended and waited-for children."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _count_log_lines(folder: Path, needles: tuple[str, ...]) -> int:
    count = 0
    for path in folder.glob("worker-*.log"):
        count += sum(1 for line in path.read_text(errors="replace").splitlines() if any(n in line for n in needles))
    return count


# ------------------------------------------------------------------------------------------- checks


def _all_runs(client: Any, experiment_id: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def check_runs(tracking_uri: str, experiment: str, study: Any, *, zoo_ext: bool = True) -> dict:
    """Count the runs of ``study``'s trials that are missing, duplicated, of a wrong status or RUNNING forever."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = _all_runs(client, exp.experiment_id) if exp is not None else []
    if zoo_ext:
        trial_runs = [r for r in runs if r.data.tags.get(ROLE_TAG) == "trial"]
        parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == "study"]
        numbers = [int(r.data.tags[NUMBER_TAG]) for r in trial_runs]
    else:  # MLflowCallback: one run per trial, named by its number
        trial_runs, parents = [r for r in runs if str(r.info.run_name).isdigit()], []
        numbers = [int(r.info.run_name) for r in trial_runs]
    by_number: dict[int, list[Any]] = {}
    for number, run in zip(numbers, trial_runs, strict=True):
        by_number.setdefault(number, []).append(run)
    finished = {t.number: t for t in _finished(study)}
    missing = sorted(n for n in finished if n not in by_number)
    duplicated = sorted(n for n, rs in by_number.items() if len(rs) > 1)
    wrong, running = [], []
    for number, trial in sorted(finished.items()):
        for run in by_number.get(number, []):
            if run.info.status == "RUNNING":
                running.append(number)
            elif run.info.status != EXPECTED_STATUS[trial.state.name]:
                wrong.append(number)
    unknown = sorted(n for n in by_number if n not in finished)  # runs of trials not finished (or not in the study)
    result: dict[str, Any] = {
        "finished_trials": len(finished),
        "trial_runs": len(trial_runs),
        "missing": missing,
        "duplicated": duplicated,
        "wrong_status": sorted(set(wrong)),
        "running_forever": sorted(set(running)),
        "runs_of_unfinished_trials": unknown,
        "details": {
            str(n): [_describe(r) for r in by_number.get(n, [])]
            + [f"trial {finished[n].state.name}" if n in finished else "trial not finished"]
            for n in sorted(set(duplicated) | set(wrong) | set(running) | set(unknown))
        }
        | {str(n): [f"trial {finished[n].state.name}, no run"] for n in missing},
    }
    if zoo_ext:
        best = parents[0].data.metrics.get("best_value") if len(parents) == 1 else None
        result |= {
            "parent_runs": len(parents),
            "parent_status": [p.info.status for p in parents],
            "parent_best_value": best,
            "study_best_value": study.best_value,
            "best_value_equal": best is not None and best == study.best_value,
        }
    return result


def _describe(run: Any) -> str:
    tags = run.data.tags
    synced = " synced" if SYNCED_TAG in tags else ""
    return f"run {run.info.run_id[:8]} {run.info.status}{synced} state-tag {tags.get('optuna.trial_state')}"


def counts_ok(checks: dict) -> bool:
    """True if nothing is missing, duplicated, of a wrong status or RUNNING forever, and best_value matches."""
    empty = all(not checks[key] for key in ("missing", "duplicated", "wrong_status", "running_forever"))
    return empty and checks["parent_runs"] == 1 and checks["best_value_equal"]


def run_sync(tracking_uri: str, mode_result: dict) -> dict:
    """Run ``python -m zoo_ext mlflow-sync`` once on the study, as a user would."""
    cmd = [sys.executable, "-m", "zoo_ext", "mlflow-sync", "--storage", mode_result["storage"], "--study-name",
           mode_result["study_name"], "--mlflow-tracking-uri", tracking_uri]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(cmd, env=_worker_env(), capture_output=True, text=True, check=False, timeout=600)
    output = (proc.stdout + proc.stderr).strip()
    return {"returncode": proc.returncode, "output": output, "seconds": time.monotonic() - started}


# --------------------------------------------------------------------------------------------- main


def _callback_available() -> str | None:
    """Return why optuna-integration's MLflowCallback is left out, or None if it can run."""
    try:
        from optuna_integration.mlflow import MLflowCallback  # noqa: F401
    except ImportError as exc:
        return f"optuna-integration's MLflowCallback cannot be imported ({exc}); pip install optuna-integration"
    return None


def _fmt_counts(checks: dict, key: str) -> str:
    """Return a count of ``checks``, with the trial numbers (the first 20) when it is a list."""
    value = checks[key]
    if not isinstance(value, list):
        return str(value)
    return f"{len(value)}" + (f" (trials {value[:20]}{' ...' if len(value) > 20 else ''})" if value else "")


def report(results: dict) -> list[str]:
    """Return the printed summary of ``results``."""
    s = results["settings"]
    lines = [
        f"== load test: {s['workers']} workers x {s['trials']} trials on one PostgreSQL study, {s['kill']} "
        f"killed with SIGKILL at {s['kill_at']:.0%} of the trials; heartbeat {s['heartbeat']:g} s, grace "
        f"{s['grace']:g} s; objective {STEPS} x ({STEP_SECONDS:g} s sleep + report), median pruner, "
        f"x > {FAIL_ABOVE:g} fails",
        f"{'mode':<16} {'trials':>6} {'seconds':>8} {'trials/s':>9}  {'CPU ms/trial: workers':>21} "
        f"{'servers':>7}  trial states",
    ]
    for mode, row in results["modes"].items():
        states = ", ".join(f"{k} {v}" for k, v in sorted(row["states"].items()))
        cpu, servers = (1000 * row[key] / max(row["finished_trials"], 1)
                        for key in ("worker_cpu_seconds", "server_cpu_seconds"))  # fmt: skip
        lines.append(f"{mode:<16} {row['finished_trials']:>6} {row['seconds']:>8.1f} {row['trials_per_second']:>9.2f}"
                     f"  {cpu:>21.0f} {servers:>7.0f}  {states}")  # fmt: skip
    for mode, row in results["modes"].items():
        flight = ", ".join(f"{n} (now {state})" for n, state in row["killed_in_flight"].items()) or "none"
        lines.append(f"  {mode}: killed pid(s) {row['killed_pids']} once the study held {row['killed_after_trials']} "
                     f"trials; their trials in flight: {flight}")  # fmt: skip
        if row["running_left"]:
            lines.append(f"  {mode}: trials {row['running_left']} stay RUNNING in Optuna (killed before their first "
                         "heartbeat: Optuna never fails a trial without one)")  # fmt: skip
        if not row["workers_ok"]:
            lines.append(f"  {mode}: a surviving worker failed: exit codes {row['worker_returncodes']}")
        if row["failed_after_workers_ended"]:
            lines.append(f"  {mode}: trials {row['failed_after_workers_ended']} were still RUNNING when the workers "
                         "ended; the load test failed them (fail_stale_trials)")  # fmt: skip
        if row["log_warnings"] or row["log_tracebacks"]:
            lines.append(f"  {mode}: worker logs hold {row['log_warnings']} warning line(s), "
                         f"{row['log_tracebacks']} traceback(s)")  # fmt: skip
    if "mlflow_callback" not in results["modes"]:
        lines.append(f"mlflow_callback left out: {results['mlflow_callback_left_out']}")
    ratios = results["ratios"]
    lines.append("  ".join(f"{k.replace('_vs_', ' / ')}: {v:.3f}" for k, v in ratios.items()) or "no ratio")
    checks = results.get("checks")
    if checks:
        before, after = checks["before_sync"], checks["after_sync"]
        lines.append("== zoo_ext runs in MLflow (PostgreSQL backend), before sync | after `mlflow-sync`:")
        rows = [("finished trials", "finished_trials"), ("trial runs", "trial_runs"), ("missing", "missing"),
                ("duplicated", "duplicated"), ("wrong status", "wrong_status"), ("RUNNING forever", "running_forever"),
                ("runs of unfinished trials", "runs_of_unfinished_trials")]  # fmt: skip
        for label, key in rows:
            lines.append(f"  {label:<26} {_fmt_counts(before, key):<24} | {_fmt_counts(after, key)}")
        for label, c in (("before", before), ("after", after)):
            lines.append(f"  parent run ({label} sync): {c['parent_runs']} run(s), status {c['parent_status']}, "
                         f"best_value {c['parent_best_value']!r} vs study.best_value {c['study_best_value']!r}: "
                         f"{'equal' if c['best_value_equal'] else 'DIFFERENT'}")  # fmt: skip
        for label, c in (("before", before), ("after", after)):
            for number, what in c["details"].items():
                lines.append(f"  {label} sync, trial {number}: {'; '.join(what)}")
        sync = checks["sync"]
        lines.append(f"  mlflow-sync (exit {sync['returncode']}, {sync['seconds']:.1f} s): "
                     f"{sync['output'].splitlines()[-1] if sync['output'] else ''}")  # fmt: skip
    callback = results.get("callback_runs")
    if callback:
        lines.append(
            f"for comparison (not checked), MLflowCallback's runs: {callback['trial_runs']} for "
            f"{callback['finished_trials']} finished trials, missing {len(callback['missing'])}, duplicated "
            f"{len(callback['duplicated'])}, wrong status {len(callback['wrong_status'])}, RUNNING "
            f"{len(callback['running_forever'])}"
        )
    lines.append(
        f"result: {'OK' if results['ok'] else 'FAILED'}" + (f": {results['problems']}" if results["problems"] else "")
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=16, help="worker processes (default 16)")
    parser.add_argument("--trials", type=int, default=2000, help="trials of the study (default 2000)")
    parser.add_argument("--kill", type=int, default=2, help="workers killed with SIGKILL midway (default 2)")
    parser.add_argument("--quick", action="store_true", help="4 workers x 100 trials, 1 killed (CI)")
    parser.add_argument(
        "--out", type=Path, default=Path("load-results"), help="logs and results.json (default ./load-results)"
    )
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="default: all")
    parser.add_argument("--kill-at", type=float, default=0.4, help="kill once the study holds this share of the trials")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="heartbeat interval, s (default 1)")
    parser.add_argument("--grace", type=float, default=3.0, help="heartbeat grace period, s (default 3)")
    parser.add_argument("--mlflow-workers", type=int, default=2, help="MLflow server worker processes (default 2)")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds a mode may take (default 120 + 1 s a trial)"
    )
    parser.add_argument("--start-timeout", type=float, default=600, help="seconds for the workers to get ready")
    # A worker process (started by this script).
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    for name in ("--storage", "--study-name", "--ready", "--go", "--experiment", "--tracking-uri"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.quick:
        args.workers, args.trials, args.kill = 4, 100, 1
    if not 0 <= args.kill < args.workers:
        parser.error("--kill must leave at least one worker")
    if args.timeout is None:
        args.timeout = 120 + 1.0 * args.trials
    return controller(args)


def controller(args: argparse.Namespace) -> int:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PGPASSWORD", "load-" + os.urandom(8).hex())  # libpq reads it: no password in any URL
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    modes = list(args.modes)
    left_out = _callback_available() if "mlflow_callback" in modes else None
    if left_out:
        modes.remove("mlflow_callback")
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "settings": {
            key: getattr(args, key)
            for key in ("workers", "trials", "kill", "kill_at", "heartbeat", "grace", "mlflow_workers")
        },
        "modes": {},
        "mlflow_callback_left_out": left_out,
    }
    problems: list[str] = []
    pg = Postgres(Path(tempfile.mkdtemp(prefix="zoo_ext_load_")))
    try:
        pg.start()
        for mode in modes:
            folder = out / mode
            if mode == "untracked":
                results["modes"][mode] = run_mode(mode, pg, folder, args, None, None)
                continue
            backend = pg.database(f"mlflow_{mode}")
            folder.mkdir(parents=True, exist_ok=True)
            with mlflow_server(backend, pg.root / f"artifacts-{mode}", out / f"mlflow-{mode}.log",
                               args.mlflow_workers) as (uri, server_pid):  # fmt: skip
                row = run_mode(mode, pg, folder, args, uri, server_pid)
                results["modes"][mode] = row
                study = optuna.load_study(study_name=row["study_name"], storage=row["storage"])
                if mode == "zoo_ext":
                    before = check_runs(uri, row["experiment"], study)
                    sync = run_sync(uri, row)
                    study = optuna.load_study(study_name=row["study_name"], storage=row["storage"])
                    after = check_runs(uri, row["experiment"], study)
                    results["checks"] = {"before_sync": before, "sync": sync, "after_sync": after}
                    if sync["returncode"] != 0:
                        problems.append(f"mlflow-sync exited {sync['returncode']}")
                    if not counts_ok(after):
                        problems.append("a zoo_ext check is not 0 (or best_value differs) after the sync")
                else:
                    results["callback_runs"] = check_runs(uri, row["experiment"], study, zoo_ext=False)
    except Exception as exc:  # noqa: BLE001 - reported, servers still stopped, results still written
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        pg.stop()
        if (pg.root / "server.log").exists():
            shutil.copy(pg.root / "server.log", out / "postgresql.log")
        shutil.rmtree(pg.root, ignore_errors=True)
    rows = results["modes"]
    tps = {mode: row["trials_per_second"] for mode, row in rows.items()}
    ratios = {}
    if "zoo_ext" in tps:
        for other in ("untracked", "mlflow_callback"):
            if other in tps:
                ratios[f"zoo_ext_vs_{other}"] = tps["zoo_ext"] / tps[other]
    results["ratios"] = ratios
    problems += [f"{mode}: a surviving worker failed" for mode, row in rows.items() if not row["workers_ok"]]
    if "zoo_ext" in args.modes and "checks" not in results:
        problems.append("the zoo_ext mode was not checked")
    results["problems"] = problems
    results["ok"] = not problems
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print("\n".join(report(results)))
    print(f"results and logs in {out}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
