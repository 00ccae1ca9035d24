"""MLflow: one parent run per study, one nested child run per trial, through ``MlflowClient``.

Modules, bottom to top (each imports only those below it):

- ``_mapping``: Optuna → MLflow as pure functions: the run status of a trial state, keys MLflow
  accepts, a trial's params, metrics and tags, the study's progress (no client, no I/O);
- ``_connection``: the ``MlflowClient``, the tracking URI and experiment, the store lock, and the
  error policy (an outage switches tracking off with one warning, a refused call is a warning);
- ``_queue``: background mode (MLflow's import, the store and every update on one thread, flushed at the end);
- ``_names``: MLflow keys for a study's params, metrics and tags, and the renamed names saved on the parent run;
- ``_study_run``: the parent run's story (found or created once, progress, best value(s), stop
  reason, result card, artifacts) and the tags of the process that ran the study;
- ``_trial_runs``: the trials' child runs (started, ended, the missing ones created or completed later);
- ``_tracker``: the :class:`Tracker`, the one object the engine talks to, delegating to the modules above;
- ``_objective``: objective wrappers giving each trial its run (:class:`TrackedObjective` for a
  zoo_ext RL study, :class:`RunPerTrial` for any objective);
- ``_sync``: ``mlflow-sync``, the runs missing for a study's finished trials (and runs left open completed);
- ``_mirror``: ``mlflow-mirror``, a process following a study in its storage and mirroring it (workers run
  with ``--no-mlflow``);
- ``_population``: a population study's members (``--scheduler pbt|pb2``), one run each under the parent run.

Names: Optuna accepts parameter names MLflow rejects (``net_arch[0]``, ``lr (log)``, empty, over
250 characters, resolving to ``.`` or ``..``). Such a param, metric or tag key is logged under the
key :func:`mlflow_key` gives, unique within its run, and the parent run's artifact
``mlflow_names.json`` maps each original name to its key (``{"params": {name: key}, "metrics":
..., "tags": ...}``, updated when a trial brings a new one). Param values are cut at 6,000
characters, tag values at 8,000.

Plain Optuna studies use this package through :func:`zoo_ext.mlflow.track`.
"""

from __future__ import annotations

from zoo_ext.tracking._mapping import (
    NAMES_ARTIFACT,
    NUMBER_TAG,
    PARENT_TAG,
    ROLE_TAG,
    STATE_TAG,
    STATUS,
    STUDY_TAG,
    TRACK_ATTR,
    UID_ATTR,
    UID_TAG,
    ZOO,
    TrialMapping,
    default_experiment_name,
    mlflow_key,
    mlflow_keys,
    optuna_study_params,
    study_params,
    study_uid,
    trial_params,
    trial_run_name,
    value_names,
)
from zoo_ext.tracking._mirror import Mirror, mirror_pass
from zoo_ext.tracking._objective import Objective, RunPerTrial, TrackedObjective
from zoo_ext.tracking._population import MEMBER_TAG, log_population
from zoo_ext.tracking._study_run import environment_tags, versions
from zoo_ext.tracking._sync import OPTUNA_PACKAGES, sync_study, sync_tracker
from zoo_ext.tracking._tracker import Tracker
from zoo_ext.tracking._trial_runs import hyperparams_file, yaml_dump

__all__ = [
    "MEMBER_TAG",
    "Mirror",
    "NAMES_ARTIFACT",
    "NUMBER_TAG",
    "OPTUNA_PACKAGES",
    "Objective",
    "PARENT_TAG",
    "ROLE_TAG",
    "STATE_TAG",
    "STATUS",
    "STUDY_TAG",
    "TRACK_ATTR",
    "UID_ATTR",
    "UID_TAG",
    "ZOO",
    "RunPerTrial",
    "TrackedObjective",
    "Tracker",
    "TrialMapping",
    "default_experiment_name",
    "environment_tags",
    "hyperparams_file",
    "log_population",
    "mirror_pass",
    "mlflow_key",
    "mlflow_keys",
    "optuna_study_params",
    "study_params",
    "study_uid",
    "sync_study",
    "sync_tracker",
    "trial_params",
    "trial_run_name",
    "value_names",
    "versions",
    "yaml_dump",
]
