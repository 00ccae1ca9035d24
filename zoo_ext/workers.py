"""Process workers on one machine: ``--n-workers N`` runs N copies of the command on one study.

SB3 training holds the GIL, so stock ``--n-jobs`` threads do not add throughput; processes do.
The launching process creates the study (and the MLflow store and parent run) once, starts
N - 1 more workers and runs trials itself as worker 0. A worker is the same command line with a
shared storage (a journal file in the log folder when ``--storage`` is not given), its own
sampler seed, ``--max-total-trials`` set to the study's total budget, and torch threads split
between workers. Ctrl-C stops every worker; the study stays resumable.

Workers are forked from the launcher (:func:`fork_workers`) as soon as it knows it launches, with
torch, SB3, rl_zoo3 and the parsed command already loaded: no interpreter start and no imports,
which cost seconds on the cores trial 0 runs on. Each waits until the launcher has created the
study and its MLflow parent run, then runs the zoo's ``train()`` with the worker flags appended,
exactly as the worker command would. Fork is only safe before a model is built: torch's OpenMP
pool (GNU libgomp) does not survive ``fork()``, and a child using more than one thread after
its parent ran a parallel region hangs. So the launcher forks before it builds any model, and
only while it runs no other thread; where it cannot (another platform, a thread running), the
workers are started as new processes running the worker command. A forked worker ends by
``os._exit`` after its own exit handlers (not the launcher's it inherited), skipping the
interpreter's teardown (seconds with torch loaded) that the launcher would otherwise wait for.
SIGINT and SIGTERM become an exception by :mod:`zoo_ext.signals` (re-exported here).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, NoReturn, Protocol

from zoo_ext.signals import Interrupted, signals_interrupt
from zoo_ext.signals import _importing as _importing

__all__ = [
    "WORKER_ENV",
    "ForkedWorker",
    "Interrupted",
    "Process",
    "Workers",
    "fork_workers",
    "is_worker",
    "signals_interrupt",
    "worker_command",
    "worker_flags",
]

_logger = logging.getLogger(__name__)

#: Set in a worker's environment (to its index), so it runs trials only.
WORKER_ENV = "ZOO_EXT_WORKER"


def is_worker() -> bool:
    """Return True inside a worker process started by :class:`Workers`."""
    return WORKER_ENV in os.environ


def worker_flags(*, storage: str, study_name: str, seed: int, max_total_trials: int, threads: int) -> list[str]:
    """Return the stock flags appended to a worker's command line (argparse: the last one wins).

    Only stock flags are appended, so this also works when zoo_ext was activated by
    ``--gym-packages``; a worker knows it is one from ``ZOO_EXT_WORKER`` and starts no workers itself.
    """
    return [
        "--storage", storage,
        "--study-name", study_name,
        "--seed", str(seed),
        "--max-total-trials", str(max_total_trials),
        "--num-threads", str(threads),
        "--n-jobs", "1",
    ]  # fmt: skip


def worker_command(argv: Sequence[str], flags: Sequence[str]) -> list[str]:
    """Return the command line of a worker: this interpreter running ``argv`` (``sys.orig_argv``) plus ``flags``."""
    return [sys.executable, *argv[1:], *flags]


class Process(Protocol):
    """What :class:`Workers` needs of a worker process: a :class:`subprocess.Popen` or a :class:`ForkedWorker`."""

    pid: int
    stdout: IO[bytes] | None
    stderr: IO[bytes] | None

    def poll(self) -> int | None: ...

    def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...


def fork_workers(n: int, main: Callable[[], object], *, preload: Sequence[str] = ()) -> list[ForkedWorker]:
    """Fork ``n`` workers now that will run ``main()`` (the zoo's ``train``) once started; [] where fork is unsafe.

    Call it before building any model (torch's OpenMP pool must not have run, see the module's
    docstring). It forks only on Linux and while this process runs no other Python thread;
    otherwise it returns [] and :class:`Workers` starts the worker commands as new processes.
    A forked worker imports the ``preload`` modules while it waits for :meth:`ForkedWorker.start`
    (in parallel with this process creating the study); if this process exits first, it exits too.
    """
    if n <= 0:
        return []
    if not sys.platform.startswith("linux") or threading.active_count() > 1:
        _logger.debug("workers will start as new processes: fork is unsafe here (platform or running threads)")
        return []
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()  # nothing buffered is written twice
    forked: list[ForkedWorker] = []
    for index in range(1, n + 1):
        try:
            forked.append(ForkedWorker(index, main, preload=preload, siblings=forked))
        except OSError as exc:  # e.g. out of memory or processes: the rest start as new processes
            _logger.warning("cannot fork worker %d (%s): it will start as a new process", index, exc)
            break
    return forked


class ForkedWorker:
    """A worker process forked from this one (:func:`fork_workers`), waiting for its flags; a ``Popen``-like handle.

    The child ignores SIGINT until started (Ctrl-C reaches the whole process group: the launcher
    decides) and exits quietly when this process closes its end of the pipe without starting it.
    """

    def __init__(
        self,
        index: int,
        main: Callable[[], object],
        *,
        preload: Sequence[str] = (),
        siblings: Sequence[ForkedWorker] = (),
    ) -> None:
        self.returncode: int | None = None
        self._lock = threading.Lock()
        self.stdout: IO[bytes] | None = None
        self.stderr: IO[bytes] | None = None
        gate_r, gate_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        theirs = [fd for sibling in siblings for fd in sibling._fds()]
        # Frozen objects are never collected in the child: it cannot finalize (close, delete) what the launcher
        # still uses, such as a database connection, and copies fewer shared pages. Unfrozen here after the fork.
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:
            gc.unfreeze()
            for fd in (gate_r, gate_w, out_r, out_w, err_r, err_w):
                os.close(fd)
            raise
        if pid == 0:
            _serve(index, main, gate_r, (out_w, err_w), preload=preload, close=[gate_w, out_r, err_r, *theirs])
        gc.unfreeze()
        self.pid = pid
        for fd in (gate_r, out_w, err_w):
            os.close(fd)
        self._gate, self._out, self._err = gate_w, out_r, err_r

    def _fds(self) -> list[int]:
        return [fd for fd in (self._gate, self._out, self._err) if fd >= 0]

    def start(self, flags: Sequence[str], *, pipe_output: bool = False) -> None:
        """Let the worker run ``main()`` with ``flags`` appended to its arguments (output piped if ``pipe_output``)."""
        message = json.dumps({"flags": list(flags), "pipe_output": pipe_output}).encode()
        try:
            os.write(self._gate, message)  # a few hundred bytes: one write, far below the pipe's buffer
        except BrokenPipeError:
            _logger.warning("worker process %d exited before it was started", self.pid)
        os.close(self._gate)
        self._gate = -1
        if pipe_output:
            self.stdout, self.stderr = os.fdopen(self._out, "rb"), os.fdopen(self._err, "rb")
        else:
            os.close(self._out)
            os.close(self._err)
        self._out = self._err = -1

    def poll(self) -> int | None:
        """Return the exit status if the worker ended (negative: the signal that ended it), else None.

        Safe from several threads (the pool's reaper and the launcher): one of them reads the status.
        """
        with self._lock:
            if self.returncode is None:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode

    def wait(self) -> int:
        """Wait for the worker to end; return its exit status as :meth:`poll` does."""
        while (code := self.poll()) is None:
            time.sleep(0.05)
        return code

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the worker unless it already ended."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


def _serve(
    index: int,
    main: Callable[[], object],
    gate: int,
    outputs: tuple[int, int],
    *,
    preload: Sequence[str],
    close: Sequence[int],
) -> NoReturn:
    """The forked child: wait for the launcher's flags, run ``main()`` as worker ``index``, exit with its status."""
    code = 1
    try:
        for fd in close:  # the launcher's ends: so each pipe ends when the launcher closes it
            os.close(fd)
        atexit._clear()  # the launcher's exit handlers are its own (they may delete what it still uses)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for name in preload:
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - only a head start: the worker imports it again when it needs it
                _logger.debug("preloading %s failed: %s", name, exc)
        with open(gate, "rb") as pipe:
            message = pipe.read()
        if message:  # else the launcher stopped before starting this worker: exit quietly
            code = _start(index, main, json.loads(message), outputs)
        else:
            code = 0
    except BaseException:  # noqa: BLE001 - the child must reach os._exit, never return into the launcher's frames
        sys.excepthook(*sys.exc_info())
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _start(index: int, main: Callable[[], object], request: dict[str, Any], outputs: tuple[int, int]) -> int:
    """Become worker ``index`` as the worker command would (environment, signals, arguments); run ``main()``."""
    if request["pipe_output"]:
        for fd, target in zip(outputs, (1, 2), strict=True):
            os.dup2(fd, target)
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, io.TextIOWrapper):
                stream.reconfigure(line_buffering=True, write_through=True)
        os.environ["PYTHONUNBUFFERED"] = "1"
    for fd in outputs:
        os.close(fd)
    os.environ[WORKER_ENV] = str(index)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    flags = request["flags"]
    sys.orig_argv = worker_command(sys.orig_argv, flags)
    sys.argv = [*sys.argv, *flags]
    return _run(main)


def _run(main: Callable[[], object]) -> int:
    """Run ``main()``; return the exit status the interpreter would give (``SystemExit``, uncaught error: 1)."""
    try:
        main()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Exception:  # noqa: BLE001 - reported like an uncaught error
        sys.excepthook(*sys.exc_info())
        return 1
    finally:
        for thread in threading.enumerate():  # as at interpreter exit: non-daemon threads end first
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()  # this worker's own handlers, e.g. flushing queued MLflow updates
    return 0


class Workers:
    """Worker processes running this command with ``flags`` each, as a context manager that waits for them on exit.

    Example::

        with Workers(flags, forked=fork_workers(len(flags), train), on_death=recover) as pool:
            if not run_my_own_trials():
                pool.interrupt()
        print(pool.exit_codes)

    Forked workers are started; without them (or for the ones missing) the worker command
    (``argv``, default ``sys.orig_argv``, plus the flags) runs as a new process. Ctrl-C or SIGTERM
    while waiting, or :meth:`interrupt`, passes the signal on to every worker still running: each
    records its running trial and stops, so the study stays resumable. A reaper thread collects
    each worker's exit status as it ends (no zombie is left to look alive) and calls
    ``on_death(index, status)`` for one that ended with an error or a signal nobody sent it (``kill -9``),
    so its running trial can be failed and retried at once.
    """

    def __init__(
        self,
        flags: Sequence[Sequence[str]],
        *,
        forked: Sequence[ForkedWorker] = (),
        argv: Sequence[str] | None = None,
        pipe_output: bool = False,
        on_death: Callable[[int, int], object] | None = None,
    ) -> None:
        self.flags = [list(worker) for worker in flags]
        self.forked = list(forked)
        self.argv = list(sys.orig_argv if argv is None else argv)
        #: Pipe each worker's stdout and stderr (unbuffered) instead of sharing this process's, for a relay to read.
        self.pipe_output = pipe_output
        self.on_death = on_death
        self.processes: list[Process] = []
        self.exit_codes: list[int] = []
        self._interrupted = False
        self._closed = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="zoo_ext-reaper", daemon=True)

    def __enter__(self) -> Workers:
        for index, flags in enumerate(self.flags, start=1):
            if index <= len(self.forked):
                worker = self.forked[index - 1]
                worker.start(flags, pipe_output=self.pipe_output)
                self.processes.append(worker)
                continue
            env = {**os.environ, WORKER_ENV: str(index)}
            pipe = subprocess.PIPE if self.pipe_output else None
            if self.pipe_output:
                env["PYTHONUNBUFFERED"] = "1"
            command = worker_command(self.argv, flags)
            self.processes.append(subprocess.Popen(command, env=env, stdout=pipe, stderr=pipe))
        if self.processes:
            pids = ", ".join(str(process.pid) for process in self.processes)
            how = "forked" if self.forked else "started"
            _logger.info("%s %d worker processes: %s", how, len(self.processes), pids)
            self._reaper.start()
        return self

    def _reap(self) -> None:
        """Collect each worker's exit status as it ends; report one that died (see :class:`Workers`)."""
        running = dict(enumerate(self.processes, start=1))
        while running:
            closing = self._closed.wait(0.2)  # after the pool's last wait: one more pass reports the last deaths
            for index, process in list(running.items()):
                status = process.poll()
                if status is None:
                    continue
                del running[index]
                if status == 0 or self._interrupted:
                    continue
                _logger.warning("worker %d (pid %d) %s while the study ran", index, process.pid, _ended(status))
                if self.on_death is not None:
                    try:
                        self.on_death(index, status)
                    except Exception as exc:  # noqa: BLE001 - the launcher's own loop recovers the trial later
                        _logger.warning("could not recover the trial of worker %d: %s", index, exc)
            if closing:
                return

    def interrupt(self, signal_name: str = "SIGINT") -> None:
        """Send ``signal_name`` (the signal this process received) to every worker still running."""
        self._interrupted = True
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
        finally:
            self._closed.set()
            if self._reaper.is_alive():
                self._reaper.join()


def _ended(status: int) -> str:
    """Return how a process with exit ``status`` ended (negative: the signal), for a log line."""
    if status >= 0:
        return f"exited with status {status}"
    try:
        return f"was killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"was killed by signal {-status}"
