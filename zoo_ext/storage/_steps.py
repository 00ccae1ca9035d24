"""Env steps trained by a study's trials: what ``--budget-steps`` counts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from zoo_ext.attrs import TrialAttr

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["env_steps"]


def env_steps(trials: Iterable[FrozenTrial]) -> int:
    """Return the env steps ``trials`` trained (their ``env_steps``): what ``--budget-steps`` counts."""
    return sum(int(t.user_attrs.get(TrialAttr.ENV_STEPS, 0)) for t in trials)
