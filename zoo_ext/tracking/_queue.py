"""Background mode: one daemon thread sending a study's MLflow updates in order while its trials train.

Importing mlflow, opening (maybe creating) the store, the parent run and every trial's logging
run on that thread keep MLflow off the study's critical path. :meth:`Worker.flush` (through
``Tracker.flush``, at the study's end and at exit) waits for what is queued; if the thread died,
the caller runs what is left itself. An update that never ran (the process was killed) leaves a
finished trial without a complete run, which ``mlflow-sync`` creates later.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from zoo_ext.tracking._connection import first_line

_logger = logging.getLogger("zoo_ext.tracking")

#: Seconds ``Tracker.flush`` waits at most for the background thread (each MLflow call has its own timeouts).
FLUSH_TIMEOUT = 600.0

_P = ParamSpec("_P")
_Q = ParamSpec("_Q")


class Submitter(Protocol):
    """What :func:`queued` methods belong to: an object that runs a call now or queues it (``Tracker``)."""

    def submit(self, fn: Callable[_Q, object], *args: _Q.args, **kwargs: _Q.kwargs) -> None:
        """Run ``fn(*args, **kwargs)`` now or later, in the order submitted."""


_S = TypeVar("_S", bound=Submitter)


class Worker:
    """One daemon thread running queued jobs in order; a job's exception is a warning and the next job runs."""

    def __init__(self, name: str) -> None:
        self.queue: queue.Queue[Callable[[], object]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, job: Callable[[], object]) -> None:
        """Queue ``job`` after the jobs already queued."""
        self.queue.put(job)

    def _run(self) -> None:
        while True:
            self._run_one(self.queue.get())

    def _run_one(self, job: Callable[[], object]) -> None:
        try:
            job()
        except Exception as exc:  # noqa: BLE001 - one failed update must not stop the others
            _logger.warning("MLflow: a tracking update failed (%s); tracking goes on", first_line(exc))
        finally:
            self.queue.task_done()

    def flush(self, timeout: float) -> int:
        """Wait until every queued job ran (running them here if the thread died); return how many are left."""
        deadline = time.monotonic() + timeout
        with self.queue.all_tasks_done:
            while self.queue.unfinished_tasks and self.thread.is_alive() and time.monotonic() < deadline:
                self.queue.all_tasks_done.wait(0.1)
        if not self.thread.is_alive():
            while time.monotonic() < deadline:
                try:
                    job = self.queue.get_nowait()
                except queue.Empty:
                    break
                self._run_one(job)
        return self.queue.unfinished_tasks


class UpdateQueue:
    """Runs MLflow updates now, or (background mode, a thread ``name``) queued in order on a daemon :class:`Worker`."""

    def __init__(self, name: str | None) -> None:
        self.worker = Worker(name) if name is not None else None

    def _now(self) -> bool:
        return self.worker is None or threading.current_thread() is self.worker.thread

    def submit(self, fn: Callable[_Q, object], *args: _Q.args, **kwargs: _Q.kwargs) -> None:
        """Run ``fn(*args, **kwargs)``: now, or queued on the background thread (from any other thread)."""
        if self._now():
            fn(*args, **kwargs)
        else:
            assert self.worker is not None
            self.worker.submit(functools.partial(fn, *args, **kwargs))

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> int:
        """Wait until every queued update ran; return how many could not (0 without a thread, or on it)."""
        return 0 if self._now() or self.worker is None else self.worker.flush(timeout)


def queued(method: Callable[Concatenate[_S, _P], None]) -> Callable[Concatenate[_S, _P], None]:
    """Return ``method`` made to run through its object's ``submit``: on the background thread when there is one."""

    @functools.wraps(method)
    def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        self.submit(method, self, *args, **kwargs)

    return wrapper
