"""Optuna storages from rl_zoo3-style ``--storage`` values, and password redaction."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

__all__ = ["load_study", "open_storage", "redact"]

# scheme://user:password@host → scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s]+)(?P<tail>@)")


def redact(text: str) -> str:
    """Return ``text`` with the password of every ``scheme://user:password@host`` URL replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\g<head>***\g<tail>", text)


def open_storage(storage: str | None) -> str | BaseStorage | None:
    """Return what ``optuna.create_study(storage=...)`` needs for a ``--storage`` value.

    Like rl_zoo3, a path ending in ``.log`` is an Optuna journal file (its folder is created);
    anything else is an RDB URL.
    """
    if storage is None or not storage.endswith(".log"):
        return storage
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(storage))


def load_study(storage: str, study_name: str) -> optuna.Study:
    """Return the existing study ``study_name`` from a ``--storage`` value."""
    import optuna

    return optuna.load_study(storage=open_storage(storage) or storage, study_name=study_name)
