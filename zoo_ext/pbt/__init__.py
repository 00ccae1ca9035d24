"""Population-based training (PBT, PB2) on the Optuna storage: ``--scheduler pbt|pb2``.

A member trains ``-n`` env steps in segments of ``--perturb-interval``; each segment is one Optuna
trial (user attributes ``pbt_member``, ``pbt_generation``, ``pbt_parent_trial``, ``pbt_exploited``),
handed out as a WAITING trial so that any worker on any machine takes the next one. Checkpoints
go through ``optuna.artifacts``. See :mod:`zoo_ext.pbt._population` for the exploit/explore rule.
"""

from zoo_ext.pbt._checkpoint import ArtifactStoreError, artifact_store
from zoo_ext.pbt._explore import RANGES
from zoo_ext.pbt._export import best_segment, is_population, schedule_entry
from zoo_ext.pbt._objective import SegmentObjective, only_segments, plan_for
from zoo_ext.pbt._population import Plan, Population, latest_segments, lineage, segments

__all__ = [
    "RANGES",
    "ArtifactStoreError",
    "Plan",
    "Population",
    "SegmentObjective",
    "artifact_store",
    "best_segment",
    "is_population",
    "latest_segments",
    "lineage",
    "only_segments",
    "plan_for",
    "schedule_entry",
    "segments",
]
