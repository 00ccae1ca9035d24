"""Existing studies and trials named on the command line: loaded, or a :class:`StudyError` saying why not."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo_ext.attrs import StudyAttr, TrialAttr
from zoo_ext.errors import IncompatibleStudyError
from zoo_ext.storage._urls import _existing_file, exists, open_storage, redact

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = ["StudyError", "finished_trial", "load_existing_study"]


class StudyError(IncompatibleStudyError, ValueError):
    """A ``--storage``/``--study-name`` (and trial) that names nothing usable; the message says why."""


def _reason(exc: Exception) -> str:
    """Return the first line of what went wrong in ``exc`` (the driver's or gRPC's own message), redacted."""
    details = getattr(exc, "details", None)  # grpc.RpcError: str() is a multi-line dump
    text = str(details() if callable(details) else getattr(exc, "orig", None) or exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__)


def load_existing_study(
    storage: str, study_name: str, *, algo: str | None = None, zoo_ext: bool = False
) -> optuna.Study:
    """Return the existing study ``study_name`` from a ``--storage`` value; raise :class:`StudyError` otherwise.

    ``optuna.load_study`` creates a missing SQLite or journal file; here that is an error, as is an
    unknown name (the message lists the storage's studies), a database that cannot be reached (its
    password redacted), a study made for another ``algo``, or, with ``zoo_ext``, one zoo_ext did not
    create (no recorded env config).
    """
    import difflib

    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    where = redact(storage)
    if not exists(storage):
        path = _existing_file(storage)
        kind = "journal file" if storage.endswith(".log") else "SQLite database"
        raise StudyError(f"--storage {where}: no {kind} {str(path)!r} (check the path; it is not created)")
    # No driver, an unreachable or foreign database (SQLAlchemy), a bad journal or URL, an old schema.
    errors: tuple[type[Exception], ...] = (ImportError, SQLAlchemyError, OSError, ValueError, RuntimeError)
    if storage.startswith("grpc://"):
        import grpc

        errors += (grpc.RpcError,)
    try:
        backend = open_storage(storage)
        names = optuna.get_all_study_names(storage=backend)
    except errors as exc:
        hint = "" if "://" in storage else " (a file is a journal PATH.log or a database sqlite:///PATH)"
        raise StudyError(f"cannot open --storage {where}: {_reason(exc)}{hint}") from None
    if study_name not in names:
        lowered = {name.lower(): name for name in names}  # "PPO-pendulum" is close to "ppo-pendulum"
        close = difflib.get_close_matches(study_name.lower(), list(lowered), n=1)
        hint = f" Did you mean {lowered[close[0]]!r}?" if close else ""
        listing = f"Studies there: {', '.join(sorted(names))}." if names else "It holds no study."
        raise StudyError(f"no study {study_name!r} in --storage {where}.{hint} {listing}")
    study = optuna.load_study(storage=backend, study_name=study_name)
    if zoo_ext and StudyAttr.ZOO_CONFIG not in study.user_attrs:
        raise StudyError(f"study {study_name!r} was not created by zoo_ext: it records no env config (zoo_config)")
    tuned = study.user_attrs.get(StudyAttr.ALGO)
    if algo is not None and tuned is not None and tuned != algo:
        raise StudyError(f"study {study_name!r} tuned {tuned}, not {algo}: run with --algo {tuned}")
    return study


def finished_trial(study: optuna.Study, number: int, *, storage: str, force: bool = False) -> FrozenTrial:
    """Return trial ``number`` of ``study`` if it trained (COMPLETE or PRUNED); raise :class:`StudyError` otherwise.

    A FAIL or RUNNING trial did not train to the end; ``force`` accepts it all the same, and the
    message prints the ``export --force`` command (``storage``: the ``--storage`` the study is in).
    """
    from optuna.trial import TrialState

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        numbers = f"its trials are 0 to {max(trials)}" if trials else "it has no trials"
        raise StudyError(f"study {study.study_name!r} has no trial {number}: {numbers}")
    trial = trials[number]
    if trial.state == TrialState.WAITING:
        raise StudyError(f"trial {number} of study {study.study_name!r} is WAITING: it has not started yet")
    if trial.state in (TrialState.FAIL, TrialState.RUNNING) and not force:
        reason = f" ({trial.user_attrs[TrialAttr.FAIL_REASON]})" if TrialAttr.FAIL_REASON in trial.user_attrs else ""
        raise StudyError(
            f"trial {number} of study {study.study_name!r} is {trial.state.name}{reason}: it did not train to the end."
            f" `{_export_command(study.study_name, number, storage)}` writes its hyperparameters all the same"
        )
    return trial


def _export_command(study_name: str, number: int, storage: str) -> str:
    """Return the shell-quoted ``export --force`` command of trial ``number`` (the storage's password redacted)."""
    import shlex

    command = ["python", "-m", "zoo_ext", "export", "--storage", redact(storage), "--study-name", study_name]
    return shlex.join([*command, "--trial", str(number), "-o", f"trial_{number}.yml", "--force"])
