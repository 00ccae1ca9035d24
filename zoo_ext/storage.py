"""Optuna storages from rl_zoo3-style ``--storage`` values, crash recovery, and password redaction.

``--storage`` takes what rl_zoo3 takes, plus a gRPC proxy:

* ``path.log``: an Optuna journal file (one machine, several processes, no server);
* ``sqlite:///…``, ``postgresql://user@host/db``, ``mysql+pymysql://…``: an RDB storage, with
  heartbeats: a trial whose worker died is failed after the grace period and retried;
* ``grpc://host:port``: Optuna's gRPC proxy (``python -m zoo_ext storage-proxy``) in front of one
  database, for very many workers.

PostgreSQL credentials need not be on the command line: libpq reads ``PGPASSWORD`` and
``~/.pgpass`` (or ``PGPASSFILE``) when the URL has no password.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import socket
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from zoo_ext.errors import IncompatibleStudyError

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

__all__ = [
    "ENV_STEPS_ATTR",
    "StudyError",
    "env_steps",
    "exists",
    "fail_dead_local_trials",
    "finished_trial",
    "load_existing_study",
    "open_storage",
    "quiet_optuna",
    "redact",
    "redact_all",
    "retry_trial",
    "worker_identity",
]

# scheme://user:password@host → scheme://user:***@host; ?password=… / &password=… → password=***
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s]+)(?P<tail>@)")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)(?P<secret>[^&\s]+)", re.IGNORECASE)
#: Attempts at opening a database storage (table creation races between workers, a database restarting).
_CONNECT_ATTEMPTS = 4
#: Trial user attribute naming the process that runs it (host, pid, process start time).
WORKER_ATTR = "worker"
#: Trial user attribute: the env steps the trial trained (all its seeds), written at every evaluation.
ENV_STEPS_ATTR = "env_steps"


@contextlib.contextmanager
def experimental() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning for the heartbeat and gRPC APIs zoo_ext relies on."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield


@contextlib.contextmanager
def quiet_optuna(level: int | None = None) -> Iterator[None]:
    """Lower Optuna's log level (default WARNING) while the block runs.

    For the studies zoo_ext makes for itself (the probe's, a claim, in-memory copies): they log no
    "A new study created" line among the user's output.
    """
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING if level is None else level)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def redact(text: str) -> str:
    """Return ``text`` with the password of every URL (user info or ``password=`` query) replaced by ``***``."""
    return _QUERY_PASSWORD.sub(r"\g<head>***", _URL_PASSWORD.sub(r"\g<head>***\g<tail>", text))


def redact_all(value: Any) -> Any:
    """Return ``value`` with :func:`redact` applied to every string in it (nested dicts, lists, tuples)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: redact_all(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_all(item) for item in value)
    return value


def is_database(storage: str | None) -> bool:
    """Return True if ``storage`` is an RDB URL (the storages with heartbeats)."""
    return storage is not None and not storage.endswith(".log") and not storage.startswith("grpc://")


def has_heartbeats(storage: str | None, heartbeat_interval: int) -> bool:
    """Return True if trials in ``storage`` send heartbeats (a database, with a positive interval)."""
    return is_database(storage) and heartbeat_interval > 0


@overload
def open_storage(
    storage: str, *, heartbeat_interval: int = ..., grace_period: int = ..., retries: int = ...
) -> BaseStorage: ...
@overload
def open_storage(
    storage: None, *, heartbeat_interval: int = ..., grace_period: int = ..., retries: int = ...
) -> None: ...
def open_storage(
    storage: str | None, *, heartbeat_interval: int = 0, grace_period: int = 0, retries: int = 0
) -> BaseStorage | None:
    """Return what ``optuna.create_study(storage=...)`` needs for a ``--storage`` value.

    Like rl_zoo3, a path ending in ``.log`` is an Optuna journal file (its folder is created).
    ``grpc://host:port`` connects to an Optuna gRPC storage proxy. Anything else is an RDB URL,
    opened with a few retries (workers starting together race to create the tables); with
    ``heartbeat_interval`` > 0 its running trials send heartbeats, and a trial silent for
    ``grace_period`` seconds (default twice the interval) is failed and retried ``retries`` times.
    """
    if storage is None:
        return None
    if storage.endswith(".log"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        Path(storage).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(storage))
    if storage.startswith("grpc://"):
        from optuna.storages import GrpcStorageProxy

        host, _, port = storage.removeprefix("grpc://").rstrip("/").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a gRPC storage is grpc://HOST:PORT, got {storage!r}")
        with experimental():
            return GrpcStorageProxy(host=host, port=int(port))
    from optuna.storages import RDBStorage
    from sqlalchemy.exc import SQLAlchemyError

    heartbeat: dict[str, Any] = {}
    if heartbeat_interval > 0:
        heartbeat = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period or None,
            "heartbeat_stale_trial_callback": functools.partial(retry_trial, max_retry=retries) if retries else None,
        }
    attempt = 1
    while True:
        try:
            with experimental():
                return RDBStorage(storage, **heartbeat)
        except SQLAlchemyError:
            # Workers starting together on an empty database race to create Optuna's tables.
            if attempt == _CONNECT_ATTEMPTS:
                raise
            attempt += 1
            time.sleep(0.5 + random.random())


class StudyError(IncompatibleStudyError, ValueError):
    """A ``--storage``/``--study-name`` (and trial) that names nothing usable; the message says why."""


def _existing_file(storage: str) -> Path | None:
    """Return the file a journal or SQLite ``storage`` lives in (None: a server or in-memory storage)."""
    if storage.endswith(".log"):
        return Path(storage)
    if not storage.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(storage).database
    except ArgumentError:  # not a URL: opening it says so
        return None
    if not database or database == ":memory:":
        return None
    return Path(database.removeprefix("file:"))


def exists(storage: str) -> bool:
    """Return False for a journal file or SQLite database that does not exist yet (True for any server URL)."""
    path = _existing_file(storage)
    return path is None or path.is_file()


def _reason(exc: Exception) -> str:
    """Return the first line of what went wrong in ``exc`` (the driver's or gRPC's own message), redacted."""
    details = getattr(exc, "details", None)  # grpc.RpcError: str() is a multi-line dump
    text = str(details() if callable(details) else getattr(exc, "orig", None) or exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__)


def load_existing_study(
    storage: str, study_name: str, *, algo: str | None = None, zoo_ext: bool = False
) -> optuna.Study:
    """Return the existing study ``study_name`` from a ``--storage`` value; raise :class:`StudyError` otherwise.

    ``optuna.load_study`` creates a missing SQLite or journal file; here that is an error, as is an
    unknown name (the message lists the storage's studies), a database that cannot be reached (its
    password redacted), a study made for another ``algo``, or, with ``zoo_ext``, one zoo_ext did not
    create (no recorded env config).
    """
    import difflib

    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    where = redact(storage)
    if not exists(storage):
        path = _existing_file(storage)
        kind = "journal file" if storage.endswith(".log") else "SQLite database"
        raise StudyError(f"--storage {where}: no {kind} {str(path)!r} (check the path; it is not created)")
    # No driver, an unreachable or foreign database (SQLAlchemy), a bad journal or URL, an old schema.
    errors: tuple[type[Exception], ...] = (ImportError, SQLAlchemyError, OSError, ValueError, RuntimeError)
    if storage.startswith("grpc://"):
        import grpc

        errors += (grpc.RpcError,)
    try:
        backend = open_storage(storage)
        names = optuna.get_all_study_names(storage=backend)
    except errors as exc:
        hint = "" if "://" in storage else " (a file is a journal PATH.log or a database sqlite:///PATH)"
        raise StudyError(f"cannot open --storage {where}: {_reason(exc)}{hint}") from None
    if study_name not in names:
        lowered = {name.lower(): name for name in names}  # "PPO-pendulum" is close to "ppo-pendulum"
        close = difflib.get_close_matches(study_name.lower(), list(lowered), n=1)
        hint = f" Did you mean {lowered[close[0]]!r}?" if close else ""
        listing = f"Studies there: {', '.join(sorted(names))}." if names else "It holds no study."
        raise StudyError(f"no study {study_name!r} in --storage {where}.{hint} {listing}")
    study = optuna.load_study(storage=backend, study_name=study_name)
    if zoo_ext and "zoo_config" not in study.user_attrs:
        raise StudyError(f"study {study_name!r} was not created by zoo_ext: it records no env config (zoo_config)")
    tuned = study.user_attrs.get("algo")
    if algo is not None and tuned is not None and tuned != algo:
        raise StudyError(f"study {study_name!r} tuned {tuned}, not {algo}: run with --algo {tuned}")
    return study


def finished_trial(study: optuna.Study, number: int, *, storage: str, force: bool = False) -> FrozenTrial:
    """Return trial ``number`` of ``study`` if it trained (COMPLETE or PRUNED); raise :class:`StudyError` otherwise.

    A FAIL or RUNNING trial did not train to the end; ``force`` accepts it all the same, and the
    message prints the ``export --force`` command (``storage``: the ``--storage`` the study is in).
    """
    from optuna.trial import TrialState

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        numbers = f"its trials are 0 to {max(trials)}" if trials else "it has no trials"
        raise StudyError(f"study {study.study_name!r} has no trial {number}: {numbers}")
    trial = trials[number]
    if trial.state == TrialState.WAITING:
        raise StudyError(f"trial {number} of study {study.study_name!r} is WAITING: it has not started yet")
    if trial.state in (TrialState.FAIL, TrialState.RUNNING) and not force:
        reason = f" ({trial.user_attrs['fail_reason']})" if "fail_reason" in trial.user_attrs else ""
        raise StudyError(
            f"trial {number} of study {study.study_name!r} is {trial.state.name}{reason}: it did not train to the end."
            f" `{_export_command(study.study_name, number, storage)}` writes its hyperparameters all the same"
        )
    return trial


def _export_command(study_name: str, number: int, storage: str) -> str:
    """Return the shell-quoted ``export --force`` command of trial ``number`` (the storage's password redacted)."""
    import shlex

    command = ["python", "-m", "zoo_ext", "export", "--storage", redact(storage), "--study-name", study_name]
    return shlex.join([*command, "--trial", str(number), "-o", f"trial_{number}.yml", "--force"])


#: ``/proc/PID/stat`` states of a process that has ended: a zombie (its parent has not read its exit status) or dead.
_ENDED_STATES = frozenset("ZXx")


def _stat(pid: int) -> list[str] | None:
    """Return the fields of ``/proc/PID/stat`` after the command name (state first), or None if unknown or gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields if len(fields) > 19 else None


def _start_time(pid: int) -> str | None:
    """Return the start time of process ``pid`` (Linux ``/proc``), or None if unknown or gone."""
    fields = _stat(pid)
    return fields[19] if fields else None


def worker_identity() -> dict[str, Any]:
    """Return this process's identity (host, pid, start time), recorded on each trial it runs."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid())}


def _is_dead_local(worker: Any) -> bool:
    """Return True if ``worker`` (a :func:`worker_identity`) ran on this host and its process is gone.

    A zombie is gone: it ended, only its parent has not read its exit status yet (a launcher busy
    with its own trial). A pid reused by a later process (another start time) is gone too.
    """
    if not isinstance(worker, Mapping) or worker.get("host") != socket.gethostname():
        return False
    pid = worker.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    fields = _stat(pid)
    if fields is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    if fields[0] in _ENDED_STATES:
        return True
    return worker.get("started") is not None and fields[19] != worker.get("started")


def is_live_local(worker: Any) -> bool:
    """Return True if ``worker`` (a :func:`worker_identity`) is a process of this host that still runs (no zombie)."""
    if not isinstance(worker, Mapping) or worker.get("host") != socket.gethostname():
        return False
    pid, started = worker.get("pid"), worker.get("started")
    if not isinstance(pid, int) or pid == os.getpid() or started is None:
        return False
    fields = _stat(pid)
    return fields is not None and fields[0] not in _ENDED_STATES and fields[19] == started


#: ``fail_reason`` prefix of a trial created after other workers had taken the study's last trials: never run.
NOT_RUN = "not run: "

#: ``fail_reason`` prefixes of trials failed from outside: they say nothing about their configuration.
EXTERNAL_FAILURES = ("interrupted by ", "worker process ", NOT_RUN)


def is_external_failure(trial: FrozenTrial) -> bool:
    """Return True if ``trial`` failed because its run was stopped (signal, dead worker), not by its own error."""
    reason = trial.user_attrs.get("fail_reason")
    return not isinstance(reason, str) or reason.startswith(EXTERNAL_FAILURES)


def was_not_run(trial: FrozenTrial) -> bool:
    """Return True if ``trial`` was failed before it ran because the study's trial budget was already taken."""
    reason = trial.user_attrs.get("fail_reason")
    return isinstance(reason, str) and reason.startswith(NOT_RUN)


def fail_dead_local_trials(study: optuna.Study, retries: int) -> list[FrozenTrial]:
    """Fail the RUNNING trials of ``study`` whose worker process on this host is gone; return them.

    Journal storages have no heartbeats: without this, a trial whose worker was killed stays
    RUNNING forever and counts towards ``--max-total-trials``. Its parameters are enqueued again
    (``retries`` times at most), as Optuna's heartbeat retry does for database storages.
    """
    from optuna.trial import TrialState

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_dead_local(trial.user_attrs.get(WORKER_ATTR)):
            continue
        worker = trial.user_attrs[WORKER_ATTR]
        reason = f"worker process {worker['pid']} on {worker['host']} died while running this trial"
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        if study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            frozen = study._storage.get_trial(trial._trial_id)
            failed.append(frozen)
            retry_trial(study, frozen, max_retry=retries)
    return failed


#: Trial user attributes a retry keeps: the rest (record, seeds, worker, fail_reason) belongs to the failed run.
RETRY_KEPT_ATTRS = ("warm_start",)


def retry_trial(study: optuna.Study, trial: FrozenTrial, *, max_retry: int) -> bool:
    """Queue ``trial``'s parameters again (at most ``max_retry`` times per original); return True if queued.

    Like Optuna's ``RetryHeartbeatStaleTrialCallback`` (same ``failed_trial``/``retry_history``
    system attributes), but the retry does not inherit the failed run's user attributes
    (its ``fail_reason`` would describe a run that is not this one), except ``warm_start``.
    """
    import optuna

    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if max_retry < len(history):
        return False
    study.add_trial(
        optuna.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={key: trial.user_attrs[key] for key in RETRY_KEPT_ATTRS if key in trial.user_attrs},
            system_attrs={**trial.system_attrs, "failed_trial": history[0], "retry_history": history},
        )
    )
    return True


def env_steps(trials: Iterable[optuna.trial.FrozenTrial]) -> int:
    """Return the env steps ``trials`` trained (their ``env_steps``): what ``--budget-steps`` counts."""
    return sum(int(t.user_attrs.get(ENV_STEPS_ATTR, 0)) for t in trials)
