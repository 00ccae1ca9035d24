"""Which process runs a trial (host, pid, start time), and whether that process on this host is alive or gone."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["is_live_local", "worker_identity"]

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
