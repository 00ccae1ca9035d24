"""Builds and runs the Optuna study of ``rl_zoo3.train -optimize`` (replaces the stock loop).

Order of work: name the study and refuse a resume with other settings (:mod:`._resume`), check
the input, probe the search space, build sampler and pruner, create or join the study, warm-start
it and set up its tracker (:mod:`._create`), run trials until the budget is spent
(:mod:`._loop`), in this process or with worker processes (:mod:`._launch`), then re-evaluate the
best trials (:mod:`._reevaluate`), print the summary and write the reports (:mod:`._summary`).
"""

from zoo_ext.study._create import StudySetup, create_study, create_tracker
from zoo_ext.study._launch import optimize
from zoo_ext.study._loop import Outcome
from zoo_ext.study._resume import FINGERPRINT_ATTR, fingerprint, resolve_study
from zoo_ext.study._rules import consecutive_failures

__all__ = [
    "FINGERPRINT_ATTR",
    "Outcome",
    "StudySetup",
    "consecutive_failures",
    "create_study",
    "create_tracker",
    "fingerprint",
    "optimize",
    "resolve_study",
]
