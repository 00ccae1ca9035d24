"""Objective wrappers giving each trial its MLflow child run, created when the trial starts and closed however it ends.

The run is closed in ``finally`` with FINISHED (complete), KILLED (pruned or interrupted) or FAILED
(with the reason); its tag ``optuna.trial_state`` is the state Optuna records (FAIL for an
interrupted trial, as for one whose value Optuna refuses). Then the study's progress (counts, best
value so far, best trial) goes to the parent run (:meth:`Tracker.log_progress`). Tracking never
changes a trial's outcome: an error while logging it is a warning, and Optuna records the
objective's result as if the trial were not tracked.

With a background tracker (:attr:`Tracker.background`) the trial waits for none of this: what its
run gets (a snapshot of the trial, its artifacts in a folder of their own, the finished trials)
is taken when it ends, and the run is created and closed on the tracker's thread.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from zoo_ext.attrs import TrialAttr
from zoo_ext.statistics import sign
from zoo_ext.tracking._connection import first_line
from zoo_ext.tracking._mapping import intermediate_values, told
from zoo_ext.tracking._tracker import Tracker
from zoo_ext.tracking._trial_runs import hyperparams_file

_logger = logging.getLogger("zoo_ext.tracking")

#: An Optuna objective: a trial in, one value or one per objective out.
Objective = Callable[[optuna.Trial], Any]


@dataclass
class _TrialRun:
    """A trial's MLflow run: its id once created ('' when tracking is off or MLflow refused it)."""

    number: int
    run_id: str = ""

    def start(self, tracker: Tracker) -> None:
        """Create the run (or take the one ``close_stale_runs`` of another process made meanwhile)."""
        found = tracker.call(tracker.trial_runs, self.number) if tracker.background else None
        self.run_id = found[self.number][0].info.run_id if found else tracker.start_trial(self.number)


def _snapshot(trial: FrozenTrial | optuna.Trial) -> FrozenTrial:
    """Return what a run logs of ``trial`` as it is now: number, start, params, user attributes, reported values."""
    if isinstance(trial, FrozenTrial):
        return trial
    return FrozenTrial(
        number=trial.number,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=trial.datetime_start,
        datetime_complete=None,
        params=dict(trial.params),
        distributions=dict(trial.distributions),
        user_attrs=dict(trial.user_attrs),
        system_attrs={},
        intermediate_values=dict(intermediate_values(trial)),
        trial_id=trial._trial_id,
    )


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
        run = _TrialRun(trial.number)
        self.tracker.pending.add(trial.number)
        self.tracker.submit(run.start, self.tracker)
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
                self._close(run, trial, state, values, status=status, reason=reason)
                finished = [t for t in trial.study.get_trials(deepcopy=False) if t.state.is_finished()]
                self.tracker.log_progress(trial.study, trial.number, state, values, trial.params, finished)
            except Exception as exc:  # noqa: BLE001 - tracking must not change the trial's outcome
                self.tracker.pending.discard(trial.number)
                _logger.warning("trial %d: MLflow logging failed (%s)", trial.number, first_line(exc))

    @staticmethod
    def _record(trial: optuna.Trial, reason: str) -> None:
        try:
            trial.set_user_attr(TrialAttr.FAIL_REASON, reason)
        except Exception as exc:  # noqa: BLE001 - the objective's own error is the one to raise
            _logger.warning("trial %d: fail_reason not recorded (%s)", trial.number, first_line(exc))

    def _close(
        self,
        run: _TrialRun,
        trial: optuna.Trial,
        state: TrialState,
        values: list[float] | None,
        *,
        status: str | None,
        reason: str | None,
    ) -> None:
        """Close the trial's run now or on the tracker's thread; its artifacts stay in a folder of their own."""
        folder = Path(tempfile.mkdtemp(prefix="zoo_ext_"))
        try:
            frozen = _snapshot(trial)
            artifacts: dict[str, Path] = {}
            if run.run_id or self.tracker.background:
                try:
                    artifacts = self._artifacts(folder, trial, values)
                except Exception as exc:  # noqa: BLE001 - the run still gets its data and status
                    _logger.warning("trial %d: no MLflow artifacts (%s)", trial.number, first_line(exc))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            self._discard(trial)
        self.tracker.submit(self._end, run, frozen, state, values, artifacts, folder, status=status, reason=reason)

    def _end(
        self,
        run: _TrialRun,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
        artifacts: Mapping[str, Path],
        folder: Path,
        *,
        status: str | None,
        reason: str | None,
    ) -> None:
        try:
            self.tracker.end_trial(run.run_id, trial, state, values, artifacts, status=status, reason=reason)
        finally:
            self.tracker.pending.discard(run.number)
            shutil.rmtree(folder, ignore_errors=True)

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
        signs = [sign(d) for d in trial.study.directions]
        mine = [s * v for s, v in zip(signs, values, strict=True)]
        for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            theirs = [s * v for s, v in zip(signs, other.values, strict=True)]
            if all(t >= m for t, m in zip(theirs, mine, strict=True)):
                return False
        return True

    def _discard(self, trial: optuna.Trial) -> None:
        """Delete the trial's model zip unless it was moved among the run's artifacts (deleted once sent)."""
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
                artifacts["model"] = Path(shutil.move(model, folder / model.name))
        return artifacts
