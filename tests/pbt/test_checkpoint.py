"""A member's checkpoint through Optuna's artifact store: model, VecNormalize statistics and replay buffer come back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from zoo_ext.pbt import ArtifactStoreError, artifact_store
from zoo_ext.pbt._checkpoint import restore, save


def _trial() -> optuna.Trial:
    return optuna.create_study().ask()


def test_vecnormalize_statistics_and_steps_come_back(tmp_path: Path) -> None:
    store = artifact_store(None, str(tmp_path / "logs"))
    model = PPO("MlpPolicy", VecNormalize(make_vec_env("Pendulum-v1", n_envs=2)), n_steps=32, batch_size=32, seed=0)
    model.learn(64)
    (tmp_path / "out").mkdir()
    ids = save(model, _trial(), store, tmp_path / "out")
    assert set(ids) == {"model", "vecnormalize"} and (tmp_path / "logs" / "artifacts").is_dir()
    (tmp_path / "in").mkdir()
    fresh = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2))
    restored = restore(PPO, ids, store, tmp_path / "in", env=fresh, device="cpu")
    assert restored.num_timesteps == model.num_timesteps
    saved_rms, restored_rms = model.get_vec_normalize_env().obs_rms, restored.get_vec_normalize_env().obs_rms
    assert np.allclose(saved_rms.mean, restored_rms.mean) and saved_rms.count == restored_rms.count
    obs = np.zeros((1, 3), dtype=np.float32)
    assert np.allclose(model.predict(obs, deterministic=True)[0], restored.predict(obs, deterministic=True)[0])


def test_the_replay_buffer_comes_back(tmp_path: Path) -> None:
    store = artifact_store(str(tmp_path / "shared"), "unused")
    model = SAC(
        "MlpPolicy", "Pendulum-v1", buffer_size=500, learning_starts=50, seed=0, policy_kwargs={"net_arch": [8]}
    )
    model.learn(60)
    (tmp_path / "out").mkdir()
    ids = save(model, _trial(), store, tmp_path / "out")
    assert set(ids) == {"model", "replay_buffer"} and (tmp_path / "shared").is_dir()
    (tmp_path / "in").mkdir()
    restored = restore(SAC, ids, store, tmp_path / "in", env=make_vec_env("Pendulum-v1"), device="cpu")
    assert restored.replay_buffer.pos == model.replay_buffer.pos == 60
    assert np.array_equal(restored.replay_buffer.observations[:60], model.replay_buffer.observations[:60])


def test_an_s3_store_without_boto3_or_a_bucket_is_refused_before_the_study(tmp_path: Path) -> None:
    try:
        import boto3  # noqa: F401
    except ImportError:
        with pytest.raises(ArtifactStoreError, match="needs boto3"):
            artifact_store("s3://bucket", str(tmp_path))
    else:
        with pytest.raises(ArtifactStoreError, match="give s3://BUCKET"):
            artifact_store("s3://bucket/prefix", str(tmp_path))
    (tmp_path / "file").write_text("")
    with pytest.raises(ArtifactStoreError, match="cannot create the folder"):
        artifact_store(str(tmp_path / "file" / "sub"), str(tmp_path))
