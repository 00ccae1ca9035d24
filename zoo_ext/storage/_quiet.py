"""Optuna's warnings and log lines silenced where zoo_ext uses its APIs for itself."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

__all__ = ["experimental", "quiet_optuna"]


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
