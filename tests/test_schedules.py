"""Values a live SB3 model takes in training: set, read back from what SB3 uses, replayed by the schedule callback."""

from __future__ import annotations

import pytest
from sb3_contrib import TQC
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3

from zoo_ext.schedules import LIVE_KEYS, ScheduleCallback, as_kwarg, live_keys, read_live, set_live

MODELS = {
    "ppo": lambda: PPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16),
    "a2c": lambda: A2C("MlpPolicy", "CartPole-v1", n_steps=4),
    "sac": lambda: SAC("MlpPolicy", "Pendulum-v1", buffer_size=100),
    "td3": lambda: TD3("MlpPolicy", "Pendulum-v1", buffer_size=100),
    "tqc": lambda: TQC("MlpPolicy", "Pendulum-v1", buffer_size=100),
    "dqn": lambda: DQN("MlpPolicy", "CartPole-v1", buffer_size=100),
}


@pytest.mark.parametrize("algo", sorted(MODELS))
def test_every_live_key_is_taken_by_the_model_and_read_back(algo: str) -> None:
    model = MODELS[algo]()
    for key in live_keys(algo):
        new = as_kwarg(
            key, read_live(model, key) * 0.5 + (1 if key in ("train_freq", "gradient_steps", "n_epochs") else 1e-3)
        )
        set_live(model, key, new)
        assert read_live(model, key) == pytest.approx(new), key
    if algo in ("ppo", "a2c"):  # the rollout buffer computes GAE with the new values
        assert model.rollout_buffer.gae_lambda == read_live(model, "gae_lambda")
        assert model.rollout_buffer.gamma == model.gamma


def test_a_key_the_model_cannot_change_is_refused() -> None:
    with pytest.raises(ValueError, match="no attribute 'not_a_key'"):
        set_live(MODELS["a2c"](), "not_a_key", 1.0)


def test_every_algorithm_known_lists_its_keys() -> None:
    assert set(MODELS) <= set(LIVE_KEYS) and live_keys("unknown") == ()


def test_the_schedule_callback_switches_values_at_their_env_steps() -> None:
    model = A2C("MlpPolicy", "CartPole-v1", n_steps=8, learning_rate=1e-3)
    callback = ScheduleCallback({"learning_rate": [[0, 1e-3], [32, 5e-4]], "ent_coef": [[16, 0.01], [0, 0.0]]})
    assert callback.value_at("ent_coef", 15) == 0.0 and callback.value_at("ent_coef", 16) == 0.01
    model.learn(24, callback=callback)
    assert read_live(model, "learning_rate") == pytest.approx(1e-3) and model.ent_coef == 0.01
    model.learn(24, callback=callback, reset_num_timesteps=False)
    assert read_live(model, "learning_rate") == pytest.approx(5e-4)
    assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)  # what the last update used
