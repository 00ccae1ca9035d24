"""Which study a command means, and whether it may resume it: fingerprint, generated name, seeds, id."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

from zoo_ext import options, storage, workers
from zoo_ext.attrs import StudyAttr
from zoo_ext.errors import StorageUnavailableError
from zoo_ext.objectives import resolve_objectives
from zoo_ext.spaces import SEARCH_SPACES

__all__ = [
    "FINGERPRINT_ATTR",
    "StorageError",
    "check_resume",
    "fingerprint",
    "joining_seed",
    "resolve_study",
]

_logger = logging.getLogger("zoo_ext.study")

#: Study user attribute holding what defines the study's parameters and values (see :func:`fingerprint`).
FINGERPRINT_ATTR = StudyAttr.FINGERPRINT


class StorageError(StorageUnavailableError, RuntimeError):
    """The ``--storage`` cannot be opened; the message has no password."""

    @classmethod
    def of(cls, storage_url: str | None, exc: Exception) -> StorageError:
        """Return the error for ``exc`` raised while opening ``storage_url``, passwords redacted."""
        return cls(f"cannot open storage {storage.redact(str(storage_url))}: {storage.redact(str(exc))}")


def fingerprint(opts: options.ZooOptions, algo: str) -> dict[str, Any]:
    """Return what defines a study's parameters and values; a resume with other values is refused.

    The search space (its name, and a hash of its content for a YAML file or a dotted path),
    the objectives with their directions, and the per-trial seed settings. Sampler and pruner
    are not part of it: changing them on resume is allowed.
    """
    objectives = resolve_objectives(opts.objectives)
    return {
        "search_space": opts.search_space,
        "search_space_hash": _space_hash(opts.search_space, algo),
        "objectives": [f"{o.name}:{o.direction}" for o in objectives],
        "n_seeds": opts.n_seeds,
        "seed_aggregate": opts.seed_aggregate,
        "objective_metric": opts.objective_metric,
        # Racing changes the trials' seeds and what they report: only recorded when on, so older studies resume.
        **({"seed_racing": True} if opts.seed_racing else {}),
        # A population's members and segments: its queued trials belong to them (only recorded for one).
        **(_population_fingerprint(opts) if opts.scheduler != "none" else {}),
        # The envs a value is made of, their ranges and how they are aggregated (only recorded for several).
        **(_envs_fingerprint(opts) if opts.tune_envs else {}),
    }


#: Fingerprint keys recorded only when their setting is on.
_RECORDED_WHEN_ON = ("seed_racing", "scheduler", "tune_envs")


def _envs_fingerprint(opts: options.ZooOptions) -> dict[str, Any]:
    return {"tune_envs": list(opts.tune_envs), "env_scores": list(opts.env_scores), "env_aggregate": opts.env_aggregate}


def _population_fingerprint(opts: options.ZooOptions) -> dict[str, Any]:
    return {
        "scheduler": opts.scheduler,
        "population": opts.population,
        "perturb_interval": opts.perturb_interval,
        "pbt_keys": list(opts.pbt_keys),
    }


def _space_hash(name: str, algo: str) -> str | None:
    """Return a hash of a YAML or dotted-path space's content (None for a registered name)."""
    space = SEARCH_SPACES.get(name, algo)
    path = getattr(space, "path", None)
    if isinstance(path, Path):
        text = path.read_bytes()
    elif ":" in name:
        try:
            text = inspect.getsource(space).encode()  # type: ignore[arg-type]
        except (OSError, TypeError):
            return None
    else:
        return None
    return hashlib.sha256(text).hexdigest()[:16]


def resolve_study(
    *,
    algo: str,
    env_id: str,
    opts: options.ZooOptions,
    storage_url: str | None,
    study_name: str | None,
    seed: int | None,
    log_folder: str,
) -> tuple[str | None, str | None]:
    """Return the ``(storage, study name)`` of this run; exit with status 2 if that study cannot be resumed by it.

    Without ``--study-name`` (with a storage or ``--n-workers``), the name is derived from the
    study-defining settings and ``seed`` (the explicit ``--seed``), so the same command resumes
    the same study; ``--n-workers`` or ``--mlflow-mirror`` without ``--storage`` keeps it in a
    journal file in the log folder. Runs before any environment is built.
    """
    print_ = fingerprint(opts, algo)
    in_file = opts.n_workers > 1 or (opts.mlflow_mirror and not opts.no_mlflow)  # other processes read the study
    if study_name is None and (storage_url is not None or in_file):
        key = json.dumps({"algo": algo, "env": env_id, "seed": seed, **print_}, sort_keys=True)
        study_name = f"{algo}-{env_id}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    if storage_url is None and in_file:
        storage_url = os.path.join(log_folder, algo, f"{study_name}.log")
    if storage_url is not None and study_name is not None and storage.exists(storage_url):
        try:
            backend = storage.open_storage(storage_url)
            attrs = backend.get_study_user_attrs(backend.get_study_id_from_name(study_name))
        except KeyError:
            return storage_url, study_name
        except Exception as exc:  # noqa: BLE001 - any driver's connection error, reported without the password
            raise StorageError.of(storage_url, exc) from None
        check_resume(attrs, print_, opts, study_name=study_name, storage_url=storage_url)
    return storage_url, study_name


def check_resume(
    attrs: dict[str, Any], requested: dict[str, Any], opts: options.ZooOptions, *, study_name: str, storage_url: str
) -> None:
    """Raise :class:`~zoo_ext.storage.StudyError` if the study's stored fingerprint differs from ``requested``.

    A sampler or pruner change is allowed and logged; a study without a fingerprint (made by stock
    rl_zoo3) is joined as is.
    """
    stored = attrs.get(FINGERPRINT_ATTR)
    if stored is not None:
        # A setting recorded only when on (racing, a population, several envs) must not be dropped on resume.
        dropped = {key: None for key in _RECORDED_WHEN_ON if key in stored and key not in requested}
        diffs = [
            f"{key}={stored.get(key)!r} (requested {value!r})"
            for key, value in {**requested, **dropped}.items()
            if stored.get(key) != value
        ]
        if diffs:
            raise storage.StudyError(
                f"study {study_name!r} in {storage.redact(storage_url)} was made with {', '.join(diffs)}. These "
                "define its parameters and values, so it cannot be resumed with other ones: pass a new "
                "--study-name for a new study, or the study's own settings to resume it"
            )
    made = attrs.get(StudyAttr.OPTIONS, {})
    for key in ("sampler", "pruner"):
        if key in made and made[key] != getattr(opts, key):
            now = getattr(opts, key)
            _logger.info("resuming study %r with %s %r (it was made with %r)", study_name, key, now, made[key])


def joining_seed(seed: int) -> int:
    """Return the sampler seed of a process joining or resuming a study: one of its own.

    With the seed that created the study it would sample the same parameters again (a seeded
    sampler restarts its random stream); ``--n-workers`` workers keep the distinct seeds their
    launcher gave them.
    """
    if workers.is_worker():
        return seed
    me = storage.worker_identity()
    key = f"{seed}|{me['host']}|{me['pid']}|{me['started']}"
    derived = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 2**31
    _logger.info("joining an existing study: this process samples with its own seed %d", derived)
    return derived
