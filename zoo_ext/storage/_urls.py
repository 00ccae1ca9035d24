"""``--storage`` values: opening them as Optuna storages, telling their kinds apart, redacting their passwords."""

from __future__ import annotations

import functools
import random
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from zoo_ext.storage._failures import retry_trial
from zoo_ext.storage._quiet import experimental

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

__all__ = ["exists", "has_heartbeats", "is_database", "open_storage", "redact", "redact_all"]

# scheme://user:password@host → scheme://user:***@host; ?password=… / &password=… → password=***
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s]+)(?P<tail>@)")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)(?P<secret>[^&\s]+)", re.IGNORECASE)
#: Attempts at opening a database storage (table creation races between workers, a database restarting).
_CONNECT_ATTEMPTS = 4


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
