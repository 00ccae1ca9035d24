"""A live progress line on the terminal: trials (or env steps) done of the budget, trial states, best value, ETA.

One line per command, drawn with :mod:`rich` on stderr, only when stderr is a terminal and
``--no-progress`` is not given: pipes and CI logs get no progress text and no carriage returns.
The line reads the study's storage, so with ``--n-workers`` the launcher shows the whole
study (every worker's trials) and the workers show none; their output is relayed above it.
Log lines and prints are written above the line, never through it. Drawing is best effort: an
error is logged once and the line is switched off; a trial never fails because of it::

    trials ━━━━━━━━━━━━━━━╺━━━━━━━━━━━━━━ 5/10 · best -153.2 · ETA 0:04:12 · 3 complete, 1 pruned, 1 failed, 1 running
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from zoo_ext import storage
from zoo_ext.statistics import best_of

__all__ = ["LiveProgress", "Piped", "Relay", "Snapshot", "StudyProgress", "describe", "live", "shown"]

_logger = logging.getLogger(__name__)

#: The bar's width in characters on a wide terminal, and the least worth drawing: narrower terminals get the text only.
_BAR_WIDTH = 30
_MIN_BAR_WIDTH = 6


@dataclass(frozen=True)
class Snapshot:
    """What the progress line shows at one moment."""

    #: ``"trials"`` (done: complete and pruned trials) or ``"env steps"`` (done: steps trained, ``--budget-steps``).
    unit: str
    done: int
    total: int
    complete: int
    pruned: int
    failed: int
    running: int
    #: The best first objective of the complete trials, in the study's first direction (None: no complete trial).
    best: float | None
    #: Seconds until ``done`` reaches ``total`` at the rate seen since the line started (None: no rate yet).
    eta: float | None


def describe(snap: Snapshot) -> str:
    """Return the text of the progress line for ``snap`` (without the bar), e.g. ``trials 5/10 · best -153.2 · ...``."""
    return f"{snap.unit} {_details(snap)}"


def _details(snap: Snapshot) -> str:
    done = f"{snap.done:,}/{snap.total:,}" if snap.unit == "env steps" else f"{snap.done}/{snap.total}"
    states = f"{snap.complete} complete, {snap.pruned} pruned, {snap.failed} failed"
    if snap.running:
        states += f", {snap.running} running"
    best = "best -" if snap.best is None else f"best {snap.best:.6g}"
    eta = "ETA -:--:--" if snap.eta is None else f"ETA {datetime.timedelta(seconds=round(snap.eta))}"
    return f"{done} · {best} · {eta} · {states}"  # the states last: a narrow terminal crops them first


class StudyProgress:
    """Reads a study's progress from its storage; the ETA comes from the rate seen since the first read.

    ``total_trials`` is the study's trial budget (``--n-trials`` or ``--max-total-trials``);
    with ``budget_steps`` > 0 the budget is env steps instead, counted as the stop rule counts them
    (:func:`zoo_ext.storage.env_steps`, running trials included).
    """

    def __init__(
        self,
        study: optuna.Study,
        *,
        total_trials: int,
        budget_steps: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.study = study
        self.total_trials = total_trials
        self.budget_steps = budget_steps
        self.clock = clock
        self._start: tuple[float, int] | None = None

    def snapshot(self) -> Snapshot:
        """Return the study's progress now (one read of its trials)."""
        trials = self.study.get_trials(deepcopy=False)
        counts = {state: 0 for state in TrialState}
        for trial in trials:
            if not (trial.state == TrialState.FAIL and storage.was_not_run(trial)):  # never ran: not a failure
                counts[trial.state] += 1
        complete, pruned = counts[TrialState.COMPLETE], counts[TrialState.PRUNED]
        if self.budget_steps > 0:
            unit, total = "env steps", self.budget_steps
            done = storage.env_steps(trials)
        else:
            unit, total, done = "trials", self.total_trials, complete + pruned
        return Snapshot(
            unit=unit,
            done=done,
            total=total,
            complete=complete,
            pruned=pruned,
            failed=counts[TrialState.FAIL],
            running=counts[TrialState.RUNNING],
            best=_best(trials, self.study.directions[0]),
            eta=self._eta(done, total),
        )

    def _eta(self, done: int, total: int) -> float | None:
        now = self.clock()
        if self._start is None:
            self._start = (now, done)
        since, done_then = self._start
        if done >= total:
            return 0.0
        if done <= done_then or now <= since:
            return None
        return (total - done) * (now - since) / (done - done_then)


def _best(trials: Iterable[FrozenTrial], direction: StudyDirection) -> float | None:
    values = [t.values[0] for t in trials if t.state == TrialState.COMPLETE and t.values]
    if not values:
        return None
    return best_of(values, direction)


def shown(no_progress: bool, stream: IO[str] | None = None) -> bool:
    """Return True if the progress line is drawn: ``stream`` (default stderr) is a terminal, ``--no-progress`` off.

    A dumb terminal (``TERM=dumb``) cannot redraw a line, so it gets none either.
    """
    stream = sys.stderr if stream is None else stream
    if no_progress:
        return False
    try:
        return stream.isatty() and not Console(file=stream).is_dumb_terminal
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


class LiveProgress:
    """The progress line of a study, redrawn from its storage every ``interval`` seconds by a daemon thread.

    A context manager: entering draws the line and sends log records and prints above it
    (rich's stdout/stderr redirection, plus the stream of every logging handler writing to the
    terminal), leaving removes the redirection and leaves the last state on screen. Any error
    while reading or drawing is logged once as a warning and switches the line off.
    """

    def __init__(self, progress: StudyProgress, *, console: Console | None = None, interval: float = 1.0) -> None:
        self.progress = progress
        # soft_wrap: a long log line printed above the line is left to the terminal to wrap, not broken by rich
        self.console = console if console is not None else Console(file=sys.stderr, soft_wrap=True)
        self.interval = interval
        self.active = False
        self._bar_column = BarColumn(bar_width=_BAR_WIDTH)
        self._bar = Progress(
            TextColumn("{task.description}"),
            self._bar_column,
            TextColumn("{task.fields[details]}"),
            console=self.console,
            auto_refresh=False,
            redirect_stdout=_same_terminal(sys.stdout, self.console.file),
            redirect_stderr=True,
        )
        self._columns = self._bar.columns
        self._text_only = (TextColumn("{task.description} {task.fields[details]}"),)
        self._task: TaskID | None = None
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="zoo_ext-progress", daemon=True)

    def __enter__(self) -> LiveProgress:
        try:
            terminal = self.console.file
            self._bar.start()
            self.active = True
            self._redirect_handlers(terminal)
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - the line is best effort
            self._fail(exc)
        if self.active:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.active:
            try:
                self.refresh()
            finally:
                self._close()

    def refresh(self) -> None:
        """Read the study and redraw the line now; on an error, log it once and switch the line off."""
        with self._lock:
            if not self.active:
                return
            try:
                snap = self.progress.snapshot()
                if self._task is None:
                    self._task = self._bar.add_task(snap.unit, total=None, details="")
                total, done = max(snap.total, 1), min(snap.done, snap.total)
                self._bar.update(self._task, total=total, completed=done, details=_details(snap))
                self._fit(describe(snap))
                self._bar.refresh()
            except Exception as exc:  # noqa: BLE001 - the line is best effort
                self._fail(exc)

    def _fit(self, text: str) -> None:
        """Give the bar what the text leaves of the terminal's width, at most :data:`_BAR_WIDTH`; none if too narrow."""
        room = self.console.width - len(text) - 2
        self._bar_column.bar_width = min(room, _BAR_WIDTH)
        self._bar.columns = self._columns if room >= _MIN_BAR_WIDTH else self._text_only

    def _loop(self) -> None:
        while not self._stop.wait(self.interval) and self.active:
            self.refresh()

    def _fail(self, exc: BaseException) -> None:
        self._close()
        _logger.warning("progress line switched off after an error: %s", storage.redact(f"{type(exc).__name__}: {exc}"))

    def _close(self) -> None:
        with self._lock:
            self.active = False
            for handler, stream in self._handlers:
                with contextlib.suppress(Exception):  # flushing the proxy may fail on a broken terminal
                    handler.setStream(stream)
            self._handlers.clear()
            with contextlib.suppress(Exception):
                self._bar.stop()

    def _redirect_handlers(self, terminal: IO[str]) -> None:
        """Point every logging handler that writes to the terminal at rich's proxy, which prints above the line."""
        proxy = sys.stderr
        if proxy is terminal:  # rich did not redirect (not a terminal after all)
            return
        loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        for logger in loggers:
            for handler in getattr(logger, "handlers", ()):
                if isinstance(handler, logging.StreamHandler) and _same_terminal(handler.stream, terminal):
                    self._handlers.append((handler, handler.setStream(proxy)))


def _same_terminal(stream: Any, terminal: Any) -> bool:
    """Return True if ``stream`` writes to the same terminal as ``terminal`` (both ttys, same device)."""
    try:
        if stream is terminal:
            return True
        if not (stream.isatty() and terminal.isatty()):
            return False
        return os.path.samestat(os.fstat(stream.fileno()), os.fstat(terminal.fileno()))
    except (AttributeError, OSError, ValueError):
        return False


def live(
    study: optuna.Study,
    *,
    total_trials: int,
    budget_steps: int,
    enabled: bool,
) -> contextlib.AbstractContextManager[Any]:
    """Return the progress line of ``study`` as a context manager; a no-op unless ``enabled`` (see :func:`shown`)."""
    if not enabled:
        return contextlib.nullcontext()
    reader = StudyProgress(study, total_trials=total_trials, budget_steps=budget_steps)
    try:
        return LiveProgress(reader)
    except Exception as exc:  # noqa: BLE001 - the line is best effort
        _logger.warning("no progress line: %s", storage.redact(f"{type(exc).__name__}: {exc}"))
        return contextlib.nullcontext()


class Piped(Protocol):
    """A process whose output :class:`Relay` copies: its ``stdout``/``stderr`` pipes (None: not piped)."""

    stdout: IO[bytes] | None
    stderr: IO[bytes] | None


class Relay:
    """Copies the piped stdout and stderr of worker processes, line by line, to ``sys.stdout``/``sys.stderr``.

    While a progress line is drawn those are rich's proxies, so worker output is printed above
    it instead of through it. Each pipe is read to its end even if writing fails, so a worker
    never blocks on a full pipe. A context manager: leaving waits (up to ``timeout`` seconds
    per pipe) for the copies to end, so the workers' last lines come before what follows.
    """

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.threads: list[threading.Thread] = []

    def start(self, processes: Sequence[Piped]) -> None:
        """Start copying the piped output of ``processes`` (a pipe that is None is the shared terminal: skipped)."""
        for process in processes:
            for pipe, name in ((process.stdout, "stdout"), (process.stderr, "stderr")):
                if pipe is not None:
                    thread = threading.Thread(
                        target=_copy, args=(pipe, name), name=f"zoo_ext-relay-{name}", daemon=True
                    )
                    thread.start()
                    self.threads.append(thread)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        for thread in self.threads:
            thread.join(timeout=self.timeout)


_write_lock = threading.Lock()


def _copy(pipe: IO[bytes], name: str) -> None:
    for raw in iter(pipe.readline, b""):
        line = raw.decode(errors="replace")
        with _write_lock, contextlib.suppress(Exception):
            stream = getattr(sys, name)
            stream.write(line if line.endswith("\n") else line + "\n")
            stream.flush()
    pipe.close()
