"""The errors zoo_ext raises for what a user can fix: one hierarchy under :class:`ZooExtError`.

The engine and the modules below it raise them and never end the process; only the command-line
layers (``zoo_ext.integration`` for ``python -m rl_zoo3.train``, ``zoo_ext.cli`` for
``python -m zoo_ext``) turn a :class:`ZooExtError` into ``zoo_ext: error: <message>`` and exit
status 2. Each concrete error also derives from the built-in exception it always was
(``ValueError``, ``LookupError``, ...), so code catching those keeps working.

Example::

    from zoo_ext.errors import ZooExtError

    try:
        options.resolve(args, block, algo="ppo")
    except ZooExtError as exc:
        print(f"cannot run: {exc}")
"""

from __future__ import annotations

__all__ = ["BadInputError", "IncompatibleStudyError", "StorageUnavailableError", "TrackingError", "ZooExtError"]


class ZooExtError(Exception):
    """Something the user can fix: the message says what, and the command exits with status 2."""


class BadInputError(ZooExtError):
    """A flag, YAML block, search space, sampler, pruner, objective or path that cannot work."""


class IncompatibleStudyError(ZooExtError):
    """An existing study (or trial) this command may not resume, read or export: unknown, made otherwise, unfinished."""


class StorageUnavailableError(ZooExtError):
    """A ``--storage`` that cannot be opened or reached (its password never in the message)."""


class TrackingError(ZooExtError):
    """MLflow unavailable to a command whose whole job is tracking (``mlflow-sync``)."""
