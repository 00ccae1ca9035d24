"""Optuna storages from rl_zoo3-style ``--storage`` values, crash recovery, and password redaction.

``--storage`` takes what rl_zoo3 takes, plus a gRPC proxy:

* ``path.log``: an Optuna journal file (one machine, several processes, no server);
* ``sqlite:///…``, ``postgresql://user@host/db``, ``mysql+pymysql://…``: an RDB storage, with
  heartbeats: a trial whose worker died is failed after the grace period and retried;
* ``grpc://host:port``: Optuna's gRPC proxy (``python -m zoo_ext storage-proxy``) in front of one
  database, for very many workers.

PostgreSQL credentials need not be on the command line: libpq reads ``PGPASSWORD`` and
``~/.pgpass`` (or ``PGPASSFILE``) when the URL has no password.

By concern: ``_urls`` (opening, kinds, redaction), ``_quiet`` (Optuna's warnings and logs),
``_liveness`` (worker processes), ``_failures`` (dead workers, retries, failure kinds),
``_studies`` (loading existing studies and trials), ``_steps`` (env steps trained).
"""

from __future__ import annotations

from zoo_ext.attrs import TrialAttr
from zoo_ext.storage._failures import (
    NOT_RUN,
    RETRY_KEPT_ATTRS,
    fail_dead_local_trials,
    is_external_failure,
    retry_trial,
    was_not_run,
)
from zoo_ext.storage._liveness import _is_dead_local as _is_dead_local
from zoo_ext.storage._liveness import _start_time as _start_time
from zoo_ext.storage._liveness import is_live_local, worker_identity
from zoo_ext.storage._quiet import experimental, quiet_optuna
from zoo_ext.storage._steps import env_steps
from zoo_ext.storage._studies import StudyError, finished_trial, load_existing_study
from zoo_ext.storage._urls import exists, has_heartbeats, is_database, open_storage, redact, redact_all

__all__ = [
    "ENV_STEPS_ATTR",
    "NOT_RUN",
    "RETRY_KEPT_ATTRS",
    "WORKER_ATTR",
    "StudyError",
    "env_steps",
    "exists",
    "experimental",
    "fail_dead_local_trials",
    "finished_trial",
    "has_heartbeats",
    "is_database",
    "is_external_failure",
    "is_live_local",
    "load_existing_study",
    "open_storage",
    "quiet_optuna",
    "redact",
    "redact_all",
    "retry_trial",
    "was_not_run",
    "worker_identity",
]

#: Trial user attribute naming the process that runs it (host, pid, process start time).
WORKER_ATTR = TrialAttr.WORKER
#: Trial user attribute: the env steps the trial trained (all its seeds), written at every evaluation.
ENV_STEPS_ATTR = TrialAttr.ENV_STEPS
