"""Process workers on one machine: ``--n-workers N`` runs N copies of the command on one study.

SB3 training holds the GIL, so stock ``--n-jobs`` threads do not add throughput; processes do.
The launching process creates the study (and the MLflow store and parent run) once, starts
N - 1 more workers and runs trials itself as worker 0. A worker is the same command line with a
shared storage (a journal file in the log folder when ``--storage`` is not given), its own
sampler seed, ``--max-total-trials`` set to the study's total budget, and torch threads split
between workers. Ctrl-C stops every worker; the study stays resumable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["WORKER_ENV", "Interrupted", "Workers", "is_worker", "signals_interrupt", "worker_command"]

_logger = logging.getLogger(__name__)

#: Set in a worker's environment (to its index), so it runs trials only.
WORKER_ENV = "ZOO_EXT_WORKER"


def is_worker() -> bool:
    """Return True inside a process started by :func:`run_workers`."""
    return WORKER_ENV in os.environ


def worker_command(
    argv: Sequence[str], *, storage: str, study_name: str, seed: int, max_total_trials: int, threads: int
) -> list[str]:
    """Return the command of one worker: ``argv`` with stock-flag overrides appended (argparse: last wins).

    Only stock flags are appended, so this also works when zoo_ext was activated by
    ``--gym-packages``; a worker knows it is one from ``ZOO_EXT_WORKER`` and starts no workers itself.
    """
    return [
        sys.executable,
        *argv[1:],
        "--storage", storage,
        "--study-name", study_name,
        "--seed", str(seed),
        "--max-total-trials", str(max_total_trials),
        "--num-threads", str(threads),
        "--n-jobs", "1",
    ]  # fmt: skip


class Workers:
    """Worker processes running ``commands``, as a context manager that waits for them on exit.

    Example::

        with Workers(commands) as pool:
            if not run_my_own_trials():
                pool.interrupt()
        print(pool.exit_codes)

    Ctrl-C or SIGTERM while waiting, or :meth:`interrupt`, passes the signal on to every worker
    still running: each records its running trial and stops, so the study stays resumable.
    """

    def __init__(self, commands: Sequence[Sequence[str]], *, cwd: Path | None = None) -> None:
        self.commands = [list(command) for command in commands]
        self.cwd = cwd
        self.processes: list[subprocess.Popen[bytes]] = []
        self.exit_codes: list[int] = []

    def __enter__(self) -> Workers:
        for index, command in enumerate(self.commands, start=1):
            env = {**os.environ, WORKER_ENV: str(index)}
            self.processes.append(subprocess.Popen(command, cwd=self.cwd, env=env))
        if self.processes:
            pids = ", ".join(str(process.pid) for process in self.processes)
            _logger.info("started %d worker processes: %s", len(self.processes), pids)
        return self

    def interrupt(self, signal_name: str = "SIGINT") -> None:
        """Send ``signal_name`` (the signal this process received) to every worker still running."""
        running = [process for process in self.processes if process.poll() is None]
        if running:
            _logger.warning("%s: stopping %d workers", signal_name, len(running))
        for process in running:
            process.send_signal(signal.Signals[signal_name])

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self.interrupt(getattr(exc[1], "signal_name", "SIGINT"))
        try:
            self.exit_codes = [process.wait() for process in self.processes]
        except KeyboardInterrupt as interrupt:
            self.interrupt(getattr(interrupt, "signal_name", "SIGINT"))
            self.exit_codes = [process.wait() for process in self.processes]


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM (or SIGINT) inside :func:`signals_interrupt`; names the signal."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Turn the first SIGINT or SIGTERM into :class:`Interrupted` while the block runs; ignore later ones.

    SIGTERM (a scheduler's pre-emption, ``kill``) would otherwise end the process on the spot,
    leaving its trial RUNNING and its MLflow run open; as an interrupt, the trial is recorded as
    failed with the signal as reason and its MLflow run closed as KILLED. Later signals are
    ignored so that this recording is not itself interrupted (SIGKILL still ends the process).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    stopping = False

    def interrupt(signum: int, frame: object) -> None:
        nonlocal stopping
        name = signal.Signals(signum).name
        if stopping:  # e.g. Ctrl-C reaching a worker directly and again through its launcher
            _logger.warning("%s: already stopping, recording the running trial", name)
            return
        stopping = True
        raise Interrupted(name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        # Once interrupted the process is stopping: the handler stays, so a signal arriving while it
        # writes its summary and exits (Ctrl-C reaches a worker from the terminal and its launcher)
        # is ignored, and the process ends with its own exit status, 130 or 143.
        if not stopping:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
