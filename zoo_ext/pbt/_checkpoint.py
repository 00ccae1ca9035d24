"""Checkpoints of population members in an Optuna artifact store: the model, VecNormalize statistics, replay buffer.

Each file is one artifact attached to the segment's trial; the trial's user attribute
``pbt_checkpoint`` maps its kind to the artifact id, written only once every file is uploaded,
so a member copies only checkpoints that exist.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact

from zoo_ext.errors import BadInputError

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

__all__ = ["ArtifactStoreError", "artifact_store", "restore", "save"]

MODEL, VEC_NORMALIZE, REPLAY_BUFFER = "model", "vecnormalize", "replay_buffer"
_FILES = {MODEL: "model.zip", VEC_NORMALIZE: "vecnormalize.pkl", REPLAY_BUFFER: "replay_buffer.pkl"}


class ArtifactStoreError(BadInputError):
    """``--artifact-store`` names a store that cannot be used."""


def artifact_store(url: str | None, log_folder: str) -> Any:
    """Return the store of ``--artifact-store``: a folder (default ``<log folder>/artifacts``) or ``s3://BUCKET``.

    Raises :class:`ArtifactStoreError` before the study starts if it cannot be used (boto3 missing,
    a folder that cannot be created).
    """
    if url is not None and url.startswith("s3://"):
        bucket = url.removeprefix("s3://").strip("/")
        try:
            import boto3  # noqa: F401
        except ImportError as exc:
            raise ArtifactStoreError(f"--artifact-store {url} needs boto3: pip install boto3") from exc
        if not bucket or "/" in bucket:
            raise ArtifactStoreError(f"--artifact-store {url}: give s3://BUCKET (a bucket name, no prefix)")
        return optuna.artifacts.Boto3ArtifactStore(bucket)
    path = Path(url) if url is not None else Path(log_folder) / "artifacts"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactStoreError(f"--artifact-store {path}: cannot create the folder ({exc})") from exc
    return FileSystemArtifactStore(path)


def save(model: BaseAlgorithm, trial: optuna.Trial, store: Any, folder: Path) -> dict[str, str]:
    """Upload ``model``'s checkpoint files to ``store``, attached to ``trial``; return kind -> artifact id."""
    model.save(folder / _FILES[MODEL])
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        vec_normalize.save(str(folder / _FILES[VEC_NORMALIZE]))
    if getattr(model, "replay_buffer", None) is not None:
        model.save_replay_buffer(folder / _FILES[REPLAY_BUFFER])  # type: ignore[attr-defined]
    ids = {}
    for kind, name in _FILES.items():
        if (folder / name).exists():
            ids[kind] = upload_artifact(artifact_store=store, file_path=str(folder / name), study_or_trial=trial)
    return ids


def restore(
    algo_class: type[BaseAlgorithm], ids: Mapping[str, str], store: Any, folder: Path, *, env: Any, device: Any
) -> BaseAlgorithm:
    """Return the model of checkpoint ``ids`` on ``env``, with its VecNormalize statistics and replay buffer."""
    paths = {}
    for kind, artifact_id in ids.items():
        paths[kind] = folder / _FILES[kind]
        download_artifact(artifact_store=store, file_path=str(paths[kind]), artifact_id=artifact_id)
    model = algo_class.load(paths[MODEL], env=env, device=device)
    vec_normalize = model.get_vec_normalize_env()
    if VEC_NORMALIZE in paths and vec_normalize is not None:
        with paths[VEC_NORMALIZE].open("rb") as file:
            saved = pickle.load(file)  # written by this study's own workers
        vec_normalize.obs_rms, vec_normalize.ret_rms = saved.obs_rms, saved.ret_rms
    if REPLAY_BUFFER in paths:
        model.load_replay_buffer(paths[REPLAY_BUFFER])  # type: ignore[attr-defined]
    return model
