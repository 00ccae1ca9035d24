"""Output paths checked before any training: a folder that cannot be created or written in is an option error."""

from __future__ import annotations

import contextlib
import stat
import tempfile
from pathlib import Path

from zoo_ext.options._table import OptionError

__all__ = ["check_writable_folder"]


def check_writable_folder(folder: str | Path, flag: str, *, value: str | None = None) -> None:
    """Raise :class:`OptionError` unless ``folder`` can be created (``mkdir -p``) and a file written in it.

    Tried, not read from permission bits: root writes in a ``chmod 555`` folder anyway, while nobody
    writes under ``/proc``, under a regular file or on a read-only mount. ``value``: the flag's value
    when it names a file in ``folder`` (default: ``folder``). Leaves nothing behind: the folders it
    made are removed again (the run makes them when it writes).
    """
    path = Path(folder)
    subject = f"{flag} {str(folder) if value is None else value!r}"
    missing = [p for p in (path, *path.parents) if _missing(p)]  # deepest first
    try:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocking = next((p for p in (path, *path.parents) if _not_a_folder(p)), None)
            reason = f"{str(blocking)!r} is not a folder" if blocking is not None else exc.strerror
            raise OptionError(f"{subject}: cannot create the folder {str(path)!r}: {reason or exc}") from exc
        try:
            with tempfile.NamedTemporaryFile(dir=path, prefix=".zoo_ext-write-check-"):
                pass
        except OSError as exc:
            raise OptionError(f"{subject}: cannot write in the folder {str(path)!r}: {exc.strerror or exc}") from exc
    finally:
        for made in missing:
            with contextlib.suppress(OSError):
                made.rmdir()


def _missing(path: Path) -> bool:
    """Return True only if ``path`` surely does not exist (a path it cannot look at counts as existing)."""
    try:
        path.stat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def _not_a_folder(path: Path) -> bool:
    """Return True if ``path`` exists and is no folder (a regular file, a device such as /dev/null)."""
    try:
        return not stat.S_ISDIR(path.stat().st_mode)
    except OSError:
        return False
