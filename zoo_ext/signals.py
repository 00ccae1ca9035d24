"""SIGINT and SIGTERM as an exception in the main thread, so a stopped trial is recorded instead of lost.

Example::

    from zoo_ext.signals import Interrupted, signals_interrupt

    with signals_interrupt():
        try:
            study.optimize(objective)
        except Interrupted as stop:
            print(f"stopped by {stop.signal_name}")
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Interrupted", "signals_interrupt"]

_logger = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM (or SIGINT) inside :func:`signals_interrupt`; names the signal."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def _importing(frame: Any) -> bool:
    """Return True if ``frame`` (the main thread's, when a signal arrives) is inside importlib's machinery."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Turn the first SIGINT or SIGTERM into :class:`Interrupted` while the block runs; ignore later ones.

    SIGTERM (a scheduler's pre-emption, ``kill``) would otherwise end the process on the spot,
    leaving its trial RUNNING and its MLflow run open; as an interrupt, the trial is recorded as
    failed with the signal as reason and its MLflow run closed as KILLED. Later signals are
    ignored so that this recording is not itself interrupted (SIGKILL still ends the process).
    A signal landing where its exception would be lost (inside an import, or a finalizer whose
    exception Python prints and drops) is delivered again 50 ms later.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    stopping = False

    def deliver_again(signum: int) -> None:
        threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()

    def interrupt(signum: int, frame: object) -> None:
        nonlocal stopping
        name = signal.Signals(signum).name
        if stopping:  # e.g. Ctrl-C reaching a worker directly and again through its launcher
            _logger.warning("%s: already stopping, recording the running trial", name)
            return
        if _importing(frame):
            # Raised inside importlib, the exception can leave the global import lock held: every other
            # thread (MLflow's, the progress line's) would then wait forever on its next import. Deliver it again.
            deliver_again(signum)
            return
        stopping = True
        raise Interrupted(name)

    previous_unraisable = sys.unraisablehook

    def unraisable(record: sys.UnraisableHookArgs) -> None:
        # Raised inside a finalizer (``__del__``, a weakref callback, run by the garbage collector
        # anywhere), the exception is printed and dropped: the process would carry on, ignoring
        # every later signal. Deliver it again, to land outside the finalizer.
        nonlocal stopping
        if isinstance(record.exc_value, Interrupted) and stopping:
            stopping = False
            _logger.warning("%s arrived inside a finalizer; delivering it again", record.exc_value.signal_name)
            deliver_again(signal.Signals[record.exc_value.signal_name])
            return
        previous_unraisable(record)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        sys.unraisablehook = previous_unraisable
        # Once interrupted the process is stopping: the handler stays, so a signal arriving while it
        # writes its summary and exits (Ctrl-C reaches a worker from the terminal and its launcher)
        # is ignored, and the process ends with its own exit status, 130 or 143.
        if not stopping:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
