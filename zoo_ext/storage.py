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
import os
import random
import re
import socket
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

__all__ = ["fail_dead_local_trials", "load_study", "open_storage", "redact", "redact_all", "worker_identity"]

# scheme://user:password@host → scheme://user:***@host; ?password=… / &password=… → password=***
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s]+)(?P<tail>@)")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)(?P<secret>[^&\s]+)", re.IGNORECASE)
#: Attempts at opening a database storage (table creation races between workers, a database restarting).
_CONNECT_ATTEMPTS = 4
#: Trial user attribute naming the process that runs it (host, pid, process start time).
WORKER_ATTR = "worker"


@contextlib.contextmanager
def experimental() -> Iterator[None]:
    """Silence Optuna's ExperimentalWarning for the heartbeat and gRPC APIs zoo_ext relies on."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield


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
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from sqlalchemy.exc import SQLAlchemyError

    heartbeat: dict[str, Any] = {}
    if heartbeat_interval > 0:
        heartbeat = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period or None,
            "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=retries) if retries else None,
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


def load_study(storage: str, study_name: str) -> optuna.Study:
    """Return the existing study ``study_name`` from a ``--storage`` value."""
    import optuna

    return optuna.load_study(storage=open_storage(storage), study_name=study_name)


def _start_time(pid: int) -> str | None:
    """Return the start time of process ``pid`` (Linux ``/proc``), or None if unknown or gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_identity() -> dict[str, Any]:
    """Return this process's identity (host, pid, start time), recorded on each trial it runs."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid())}


def _is_dead_local(worker: Any) -> bool:
    """Return True if ``worker`` (a :func:`worker_identity`) ran on this host and its process is gone."""
    if not isinstance(worker, Mapping) or worker.get("host") != socket.gethostname():
        return False
    pid = worker.get("pid")
    if not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return False
    started = _start_time(pid)
    if started is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return worker.get("started") is not None and started != worker.get("started")  # the pid was reused


def fail_dead_local_trials(study: optuna.Study, retries: int) -> list[FrozenTrial]:
    """Fail the RUNNING trials of ``study`` whose worker process on this host is gone; return them.

    Journal storages have no heartbeats: without this, a trial whose worker was killed stays
    RUNNING forever and counts towards ``--max-total-trials``. Its parameters are enqueued again
    (``retries`` times at most), as Optuna's heartbeat retry does for database storages.
    """
    from optuna.storages import RetryHeartbeatStaleTrialCallback
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
            if retries:
                with experimental():
                    RetryHeartbeatStaleTrialCallback(max_retry=retries)(study, frozen)
    return failed
