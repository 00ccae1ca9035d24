"""Process workers on one machine: ``--n-workers N`` runs N copies of the command on one study.

SB3 training holds the GIL, so stock ``--n-jobs`` threads do not add throughput; processes do.
The launching process creates the study (and the MLflow store and parent run) once, then starts
N workers: the same command line with a shared storage (a journal file in the log folder when
``--storage`` is not given), its own sampler seed, ``--max-total-trials`` set to the study's
total budget, and torch threads split between workers. Ctrl-C stops every worker; the study
stays resumable.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["WORKER_ENV", "is_worker", "run_workers", "worker_command"]

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


def run_workers(commands: Sequence[Sequence[str]], *, cwd: Path | None = None) -> list[int]:
    """Run the worker commands until all end; on Ctrl-C interrupt them all. Return their exit codes."""
    processes = []
    for index, command in enumerate(commands):
        env = {**os.environ, WORKER_ENV: str(index)}
        processes.append(subprocess.Popen(list(command), cwd=cwd, env=env))
    _logger.info("started %d worker processes: %s", len(processes), ", ".join(str(p.pid) for p in processes))
    try:
        return [process.wait() for process in processes]
    except KeyboardInterrupt:
        _logger.warning("Interrupted: stopping %d workers", len(processes))
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        return [process.wait() for process in processes]
