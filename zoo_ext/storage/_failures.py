"""Failed trials: failing those whose worker died, retrying them, and telling external failures from a config's own."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from zoo_ext.attrs import FailKind, TrialAttr, fail_kind, set_failure
from zoo_ext.storage._liveness import _is_dead_local

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = [
    "NOT_RUN",
    "RETRY_KEPT_ATTRS",
    "fail_dead_local_trials",
    "is_external_failure",
    "retry_trial",
    "was_not_run",
]

#: ``fail_reason`` prefix of a trial created after other workers had taken the study's last trials: never run.
NOT_RUN = "not run: "

#: Trial user attributes a retry keeps: the rest (record, seeds, worker, failure) belongs to the failed run.
#: A population segment keeps its place in the population and the checkpoint it starts from.
RETRY_KEPT_ATTRS = (
    TrialAttr.WARM_START,
    TrialAttr.PBT_MEMBER,
    TrialAttr.PBT_GENERATION,
    TrialAttr.PBT_PARENT_TRIAL,
    TrialAttr.PBT_EXPLOITED,
)


def is_external_failure(trial: FrozenTrial) -> bool:
    """Return True if ``trial`` failed because its run was stopped (signal, dead worker), not by its own error."""
    return fail_kind(trial.user_attrs) is not FailKind.ERROR


def was_not_run(trial: FrozenTrial) -> bool:
    """Return True if ``trial`` was failed before it ran because the study's trial budget was already taken."""
    return fail_kind(trial.user_attrs) is FailKind.NOT_RUN


def fail_dead_local_trials(study: optuna.Study, retries: int) -> list[FrozenTrial]:
    """Fail the RUNNING trials of ``study`` whose worker process on this host is gone; return them.

    Journal storages have no heartbeats: without this, a trial whose worker was killed stays
    RUNNING forever and counts towards ``--max-total-trials``. Its parameters are enqueued again
    (``retries`` times at most), as Optuna's heartbeat retry does for database storages.
    """
    from optuna.trial import TrialState

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_dead_local(trial.user_attrs.get(TrialAttr.WORKER)):
            continue
        worker = trial.user_attrs[TrialAttr.WORKER]
        reason = f"worker process {worker['pid']} on {worker['host']} died while running this trial"
        set_user_attr = functools.partial(study._storage.set_trial_user_attr, trial._trial_id)
        set_failure(set_user_attr, FailKind.DEAD_WORKER, reason)
        if study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            frozen = study._storage.get_trial(trial._trial_id)
            failed.append(frozen)
            retry_trial(study, frozen, max_retry=retries)
    return failed


def retry_trial(study: optuna.Study, trial: FrozenTrial, *, max_retry: int) -> bool:
    """Queue ``trial``'s parameters again (at most ``max_retry`` times per original); return True if queued.

    Like Optuna's ``RetryHeartbeatStaleTrialCallback`` (same ``failed_trial``/``retry_history``
    system attributes), but the retry does not inherit the failed run's user attributes
    (its failure would describe a run that is not this one), except :data:`RETRY_KEPT_ATTRS`.
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
