"""Hyperparameters that change during training: which keys a live SB3 model can take, and a schedule callback.

Population-based training changes a member's values between segments, and its exported
schedule replays them in a stock rl_zoo3 run. Both go through :func:`set_live`, which updates
what SB3 derived from a value when the model was built (the learning-rate schedule, PPO's clip
range schedule, the rollout buffer's ``gae_lambda`` and ``gamma``, an off-policy ``train_freq``),
and :func:`read_live` reads the value the model trains with back.

Example of an exported schedule in an rl_zoo3 hyperparams file::

    Pendulum-v1:
      learning_rate: 0.001
      callback:
        - zoo_ext.schedules.ScheduleCallback:
            schedule: {learning_rate: [[0, 0.001], [20000, 0.0008]], ent_coef: [[0, 0.0], [40000, 0.01]]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import FloatSchedule

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

__all__ = ["LIVE_KEYS", "ScheduleCallback", "as_kwarg", "live_keys", "read_live", "set_live"]

_ON_POLICY = ("learning_rate", "ent_coef", "vf_coef", "gae_lambda", "max_grad_norm")
_OFF_POLICY = ("learning_rate", "tau", "gamma", "train_freq", "gradient_steps")

#: Per algorithm, the constructor kwargs SB3 lets a live model change: PBT's default ``--pbt-keys``.
LIVE_KEYS: Mapping[str, tuple[str, ...]] = {
    "ppo": (*_ON_POLICY, "clip_range", "n_epochs"),
    "ppo_lstm": (*_ON_POLICY, "clip_range", "n_epochs"),
    "a2c": _ON_POLICY,
    "trpo": ("learning_rate", "gae_lambda", "target_kl"),
    "sac": _OFF_POLICY,
    "tqc": _OFF_POLICY,
    "td3": _OFF_POLICY,
    "ddpg": _OFF_POLICY,
    "crossq": ("learning_rate", "gamma", "train_freq", "gradient_steps"),
    "dqn": ("learning_rate", "gamma", "train_freq", "gradient_steps"),
    "qrdqn": ("learning_rate", "gamma", "train_freq", "gradient_steps"),
}
#: Keys whose value must be an integer.
_INTEGER_KEYS = ("n_epochs", "train_freq", "gradient_steps")


def live_keys(algo: str) -> tuple[str, ...]:
    """Return the keys ``algo``'s live model can change (empty for an algorithm zoo_ext does not know)."""
    return LIVE_KEYS.get(algo, ())


def as_kwarg(key: str, value: float) -> float | int:
    """Return ``value`` typed as ``key``'s constructor kwarg (an int for counts such as ``n_epochs``)."""
    return round(value) if key in _INTEGER_KEYS else float(value)


def set_live(model: BaseAlgorithm, key: str, value: Any) -> None:
    """Make ``model`` train with ``value`` for ``key`` from its next update, as if it had been built with it.

    Raises ``ValueError`` for a key the model cannot change live.
    """
    if key in _INTEGER_KEYS:
        value = int(value)
    if key == "learning_rate":
        model.learning_rate = float(value)
        model._setup_lr_schedule()
        return
    if key == "clip_range":
        model.clip_range = FloatSchedule(float(value))  # type: ignore[attr-defined]
        return
    if key == "train_freq":
        model.train_freq = value  # type: ignore[attr-defined]
        model._convert_train_freq()  # type: ignore[attr-defined]
        return
    if key in ("gae_lambda", "gamma"):
        setattr(model, key, float(value))
        buffer = getattr(model, "rollout_buffer", None)
        if buffer is not None:
            setattr(buffer, key, float(value))
        return
    if not hasattr(model, key):
        raise ValueError(f"{type(model).__name__} has no attribute {key!r} to change during training")
    current = getattr(model, key)
    if not isinstance(current, (int, float)) or isinstance(current, bool):
        raise ValueError(f"{type(model).__name__}.{key} is {current!r}: not a number that can change during training")
    setattr(model, key, value if key in _INTEGER_KEYS else float(value))


def read_live(model: BaseAlgorithm, key: str) -> float:
    """Return the value ``model`` trains with for ``key``, read from what SB3 uses (schedules, buffers)."""
    if key == "learning_rate":
        return float(model.lr_schedule(model._current_progress_remaining))
    if key == "clip_range":
        return float(model.clip_range(model._current_progress_remaining))  # type: ignore[attr-defined]
    if key == "train_freq":
        return float(model.train_freq.frequency)  # type: ignore[attr-defined]
    if key in ("gae_lambda", "gamma"):
        buffer = getattr(model, "rollout_buffer", None)
        return float(getattr(buffer if buffer is not None else model, key))
    return float(getattr(model, key))


class ScheduleCallback(BaseCallback):
    """Sets each scheduled key to its value for the model's env steps before every rollout.

    ``schedule`` maps a key to ``[[env_steps, value], ...]`` sorted by env steps: the value holds
    from those env steps on. What ``python -m zoo_ext export`` writes for a PBT study's best member.
    """

    def __init__(self, schedule: Mapping[str, Sequence[Sequence[float]]], verbose: int = 0) -> None:
        super().__init__(verbose)
        self.schedule = {key: sorted((int(step), value) for step, value in points) for key, points in schedule.items()}

    def value_at(self, key: str, env_steps: int) -> float:
        """Return ``key``'s scheduled value at ``env_steps``."""
        points = self.schedule[key]
        current = points[0][1]
        for step, value in points:
            if step > env_steps:
                break
            current = value
        return float(current)

    def _apply(self) -> None:
        for key in self.schedule:
            set_live(self.model, key, self.value_at(key, self.model.num_timesteps))

    def _on_training_start(self) -> None:
        self._apply()

    def _on_rollout_start(self) -> None:
        self._apply()

    def _on_step(self) -> bool:
        return True
