"""Objective wrappers giving each trial its MLflow child run, created when the trial starts and closed however it ends.

The run is closed in ``finally`` with FINISHED (complete), KILLED (pruned or interrupted) or FAILED
(with the reason); its tag ``optuna.trial_state`` is the state Optuna records (FAIL for an
interrupted trial, as for one whose value Optuna refuses). Then the study's progress (counts, best
value so far, best trial) goes to the parent run (:meth:`Tracker.log_progress`). Tracking never
changes a trial's outcome: an error while logging it is a warning, and Optuna records the
objective's result as if the trial were not tracked.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from zoo_ext import record
from zoo_ext.tracking._client import Tracker, first_line
from zoo_ext.tracking._mapping import told

_logger = logging.getLogger("zoo_ext.tracking")

#: An Optuna objective: a trial in, one value or one per objective out.
Objective = Callable[[optuna.Trial], Any]


def yaml_dump(data: Any) -> str:
    """Return ``data`` as YAML, as rl_zoo3 hyperparams files are written."""
    import yaml

    return yaml.safe_dump(data, sort_keys=True)


def hyperparams_file(
    folder: Path, trial: FrozenTrial | optuna.Trial, env_id: str, config: Mapping[str, Any]
) -> Path | None:
    """Write the trial's rl_zoo3 hyperparams entry to ``folder/hyperparams.yml``; return it (None: no record)."""
    hyperparams = trial.user_attrs.get(record.RECORD_ATTR)
    if hyperparams is None:
        return None
    path = folder / "hyperparams.yml"
    path.write_text(yaml_dump({env_id: record.zoo_entry(config, hyperparams)}))
    return path


class RunPerTrial:
    """Wraps ``objective`` so each trial gets its child run in ``tracker``'s study, whatever way the trial ends.

    Safe to call from ``study.optimize(..., n_jobs=N)`` threads: each trial's run is addressed by id.
    With ``record_fail_reason``, a trial whose objective raises gets user attribute ``fail_reason``
    (``<exception type>: <message>``), so ``mlflow-sync`` can log it later too.
    """

    def __init__(self, objective: Objective, tracker: Tracker, *, record_fail_reason: bool = False) -> None:
        self.objective = objective
        self.tracker = tracker
        self.record_fail_reason = record_fail_reason

    def __call__(self, trial: optuna.Trial) -> Any:
        run_id = self.tracker.start_trial(trial.number)
        state, values, status, reason = TrialState.FAIL, None, None, None
        try:
            value = self.objective(trial)
            values, reason = told(trial.study, value)
            state = TrialState.COMPLETE if values is not None else TrialState.FAIL
            return value
        except optuna.TrialPruned:
            state = TrialState.PRUNED
            raise
        except KeyboardInterrupt as exc:
            status, reason = "KILLED", f"interrupted by {getattr(exc, 'signal_name', 'SIGINT')}"  # Optuna: FAIL
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if self.record_fail_reason:
                self._record(trial, reason)
            raise
        finally:
            try:
                self._close(run_id, trial, state, values, status=status, reason=reason)
            except Exception as exc:  # noqa: BLE001 - tracking must not change the trial's outcome
                _logger.warning("trial %d: MLflow logging failed (%s)", trial.number, first_line(exc))
            self.tracker.log_progress(trial.study, trial.number, state, values, trial.params)

    @staticmethod
    def _record(trial: optuna.Trial, reason: str) -> None:
        try:
            trial.set_user_attr("fail_reason", reason)
        except Exception as exc:  # noqa: BLE001 - the objective's own error is the one to raise
            _logger.warning("trial %d: fail_reason not recorded (%s)", trial.number, first_line(exc))

    def _close(
        self,
        run_id: str,
        trial: optuna.Trial,
        state: TrialState,
        values: list[float] | None,
        *,
        status: str | None,
        reason: str | None,
    ) -> None:
        try:
            with tempfile.TemporaryDirectory(prefix="zoo_ext_") as tmp:
                artifacts: dict[str, Path] = {}
                if run_id:
                    try:
                        artifacts = self._artifacts(Path(tmp), trial, values)
                    except Exception as exc:  # noqa: BLE001 - the run still gets its data and status
                        _logger.warning("trial %d: no MLflow artifacts (%s)", trial.number, first_line(exc))
                self.tracker.end_trial(run_id, trial, state, values, artifacts, status=status, reason=reason)
        finally:
            self._discard(trial)

    def _artifacts(self, folder: Path, trial: optuna.Trial, values: list[float] | None) -> dict[str, Path]:
        """Return the files to upload to the trial's run (written into ``folder``): none here."""
        return {}

    def _discard(self, trial: optuna.Trial) -> None:
        """Remove what the trial left for its run once the run is closed (logged or not): nothing here."""


class TrackedObjective(RunPerTrial):
    """Wraps a zoo_ext RL objective: each trial's run also gets ``hyperparams.yml`` and, if kept, its model.

    The objective's ``model_dir`` (if any) holds ``trial_<number>.zip``: uploaded with
    ``log_models`` or when the trial is the best so far, then deleted.
    """

    def __init__(self, objective: Objective, tracker: Tracker, *, env_id: str, config: Mapping[str, Any]) -> None:
        super().__init__(objective, tracker)
        self.env_id = env_id
        self.config = config

    def _model(self, trial: optuna.Trial) -> Path | None:
        model_dir = getattr(self.objective, "model_dir", None)
        return Path(model_dir) / f"trial_{trial.number}.zip" if model_dir else None

    def _is_new_best(self, trial: optuna.Trial, values: list[float]) -> bool:
        """Return True if no completed trial is as good (one objective) or dominates it (several)."""
        signs = [1.0 if d == optuna.study.StudyDirection.MAXIMIZE else -1.0 for d in trial.study.directions]
        mine = [s * v for s, v in zip(signs, values, strict=True)]
        for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            theirs = [s * v for s, v in zip(signs, other.values, strict=True)]
            if all(t >= m for t, m in zip(theirs, mine, strict=True)):
                return False
        return True

    def _discard(self, trial: optuna.Trial) -> None:
        """Delete the trial's model zip: uploaded or not, it is not kept on disk."""
        model = self._model(trial)
        if model is not None:
            model.unlink(missing_ok=True)

    def _artifacts(self, folder: Path, trial: optuna.Trial, values: list[float] | None) -> dict[str, Path]:
        """Return the trial's artifacts: ``hyperparams.yml``, and its model if kept (log-models or best)."""
        artifacts: dict[str, Path] = {}
        path = hyperparams_file(folder, trial, self.env_id, self.config)
        if path is not None:
            artifacts["hyperparams"] = path
        model = self._model(trial)
        if model is not None and model.exists() and values is not None:
            if self.tracker.log_models or self._is_new_best(trial, values):
                artifacts["model"] = model
        return artifacts
