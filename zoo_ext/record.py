"""The per-trial ``hyperparams`` record: constructor kwargs as JSON, and back to rl_zoo3 YAML form.

``encode`` turns the kwargs given to the algorithm into JSON: classes and functions become
``module:Name`` strings (only when the string imports back to the very object: a closure, a
lambda or a method is a :class:`RecordError` naming the key), rl_zoo3 linear schedules
``"lin_<initial value>"``, constant schedules their value, action noise
``{"noise_type": ..., "noise_std": ...}``. ``to_zoo`` turns such a record into the form of an
rl_zoo3 hyperparams YAML entry, which the zoo's own preprocessing turns back into the same kwargs;
``--trial-id`` and ``export`` both go through it.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo_ext.attrs import TrialAttr
from zoo_ext.errors import BadInputError
from zoo_ext.registry import DottedPathError, import_dotted, is_dotted_path

if TYPE_CHECKING:
    import optuna

__all__ = ["NOISE_CLASSES", "RecordError", "encode", "merge", "plain", "to_zoo", "trial_hyperparams", "zoo_entry"]

RECORD_ATTR = TrialAttr.RECORD
SPACE_ATTR = TrialAttr.SEARCH_SPACE
#: rl_zoo3's ``noise_type`` names for SB3's action noise classes.
NOISE_CLASSES = {"NormalActionNoise": "normal", "OrnsteinUhlenbeckActionNoise": "ornstein-uhlenbeck"}
# Names the zoo's preprocessing evaluates ``policy_kwargs`` strings with (rl_zoo3.exp_manager globals).
_ZOO_EVAL_PREFIXES = {"torch.nn": "nn", "torch.optim": "th.optim", "torch": "th", "numpy": "np"}


class RecordError(BadInputError, ValueError):
    """A trial has no usable record, or a value cannot be written in rl_zoo3's YAML form."""


def _dotted(obj: Any) -> str:
    """Return ``module:QualName`` for a class or function, preferring the shortest public module."""
    module, qualname = getattr(obj, "__module__", None) or "", obj.__qualname__
    parts = module.split(".")
    for i in range(1, len(parts)):
        candidate = ".".join(parts[:i])
        try:
            if getattr(importlib.import_module(candidate), qualname, None) is obj:
                return f"{candidate}:{qualname}"
        except ImportError:
            continue
    return f"{module}:{qualname}"


def _schedule(value: Any) -> Any:
    cls = type(value).__name__
    if cls == "SimpleLinearSchedule":
        return f"lin_{value.initial_value}"
    if cls == "ConstantSchedule":
        return float(value.val)
    if cls == "FloatSchedule":
        return _schedule(value.value_schedule)
    if cls == "LinearSchedule" and value.end == 0 and value.end_fraction == 1:
        return f"lin_{value.start}"
    return None


def encode(value: Any) -> Any:
    """Return ``value`` (constructor kwargs) as JSON-serialisable data; see the module doc.

    Raises :class:`RecordError`, naming the key, for a value that would not come back the same,
    e.g. a closure, a lambda or a method: a recorded ``module:QualName`` must import back to the
    very object.
    """
    return _encode(value, "")


def _encode(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for name, item in value.items():
            path = f"{key}.{name}" if key else str(name)
            if name == "action_noise" and item is not None:
                out.update(_encode_noise(item))
            else:
                out[str(name)] = _encode(item, path)
        return out
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_encode(item, f"{key}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        return _importable(value, key)
    schedule = _schedule(value)
    if schedule is not None:
        return schedule
    raise RecordError(f"cannot record {key or 'value'}={value!r}: a {type(value).__name__} has no JSON form")


def _importable(obj: Any, key: str) -> str:
    """Return ``module:QualName`` of ``obj`` if it imports back to ``obj`` itself."""
    path = _dotted(obj)
    try:
        same = import_dotted(path) is obj
    except DottedPathError:
        same = False
    if not same:
        kind = "a closure or local function" if "<locals>" in path or "<lambda>" in path else "not importable"
        raise RecordError(
            f"cannot record {key or 'value'}={obj!r}: it is {kind}, {path!r} does not import back to it"
            " (define it at module level, or use a schedule such as rl_zoo3.utils:linear_schedule)"
        )
    return path


def _encode_noise(noise: Any) -> dict[str, Any]:
    name = NOISE_CLASSES.get(type(noise).__name__)
    sigma = np.asarray(getattr(noise, "_sigma", np.nan))
    if name is None or sigma.size == 0 or not np.allclose(sigma, sigma.flat[0]):
        raise RecordError(f"cannot record action noise {noise!r}: rl_zoo3 supports normal/OU with one std")
    return {"noise_type": name, "noise_std": float(sigma.flat[0])}


def plain(value: Any) -> Any:
    """Return ``value`` with objects replaced by readable strings (for logs and study attrs)."""
    try:
        return encode(value)
    except RecordError:
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        return repr(value)


def _expr(value: Any) -> str:
    """Return a Python expression rl_zoo3's ``eval`` of ``policy_kwargs`` turns into ``value``."""
    if isinstance(value, Mapping):
        items = ", ".join(f"{key}={_expr(item)}" for key, item in value.items())
        return f"dict({items})"
    if isinstance(value, list):
        return "[" + ", ".join(_expr(item) for item in value) + "]"
    if is_dotted_path(value):
        module, name = value.split(":")
        if module in _ZOO_EVAL_PREFIXES:
            return f"{_ZOO_EVAL_PREFIXES[module]}.{name}"
        return f"__import__({module!r}, fromlist=[{name.split('.')[0]!r}]).{name}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    return repr(value)


def to_zoo(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``record`` as rl_zoo3 hyperparams YAML values (the zoo preprocesses them back).

    Example: ``{"policy_kwargs": {"activation_fn": "torch.nn:ReLU"}}`` becomes
    ``{"policy_kwargs": "dict(activation_fn=nn.ReLU)"}``.
    """
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in ("policy_kwargs", "replay_buffer_kwargs") and isinstance(value, Mapping):
            out[key] = _expr(value)
        elif key == "replay_buffer_class" and is_dotted_path(value):
            out[key] = _expr(value)
        elif key == "policy" and is_dotted_path(value):
            out[key] = value.replace(":", ".")
        elif key == "train_freq" and isinstance(value, list):
            out[key] = list(value)
        elif is_dotted_path(value):
            raise RecordError(f"{key}={value!r}: rl_zoo3's YAML cannot express a class or function here")
        else:
            out[key] = value
    return out


def merge(config: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Return an rl_zoo3 env entry ``config`` overridden by a trial's ``values`` (YAML form).

    A trial that trained without action noise also drops the entry's ``noise_type``/``noise_std``,
    which the zoo would otherwise turn back into noise.
    """
    merged = {**config, **values}
    if "action_noise" in values and values["action_noise"] is None:
        merged.pop("noise_type", None)
        merged.pop("noise_std", None)
    return merged


def zoo_entry(config: Mapping[str, Any], hyperparams: Mapping[str, Any]) -> dict[str, Any]:
    """Return the rl_zoo3 env entry that trains with a trial's ``hyperparams`` record on top of ``config``."""
    return merge(config, to_zoo(hyperparams))


def trial_hyperparams(study: optuna.Study, number: int, algo: str, env_id: str | None = None) -> dict[str, Any]:
    """Return trial ``number``'s hyperparameters in rl_zoo3 YAML form, ready for the zoo.

    Uses the trial's ``hyperparams`` record (on ``env_id``, one of a ``--tune-envs`` study's
    other envs: that env's record); a trial from a stock rl_zoo3 study (no record) goes through
    the zoo's own converter of its params.
    """
    trials = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not trials:
        raise RecordError(f"study {study.study_name!r} has no trial {number} (it has {len(study.trials)} trials)")
    trial = trials[0]
    per_env = trial.user_attrs.get(TrialAttr.RECORD_PER_ENV, {})
    if env_id in per_env:
        return to_zoo(per_env[env_id])
    if RECORD_ATTR in trial.user_attrs:
        return to_zoo(trial.user_attrs[RECORD_ATTR])
    from zoo_ext import adapter

    return adapter.zoo_converter(algo)(dict(trial.params))
