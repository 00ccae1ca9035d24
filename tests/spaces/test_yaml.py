"""YAML search-space files: load-time checks, conditional sampling, and parity with Python spaces."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gymnasium as gym
import optuna
import pytest
import stable_baselines3 as sb3
import torch
import yaml
from rl_zoo3.utils import linear_schedule

from zoo_ext.record import encode
from zoo_ext.spaces._probe import InvalidSearchSpaceError, probe_space
from zoo_ext.spaces._schema import SECTIONS, SpaceFile
from zoo_ext.spaces._yaml import SpaceFileError, YamlSearchSpace, _Loader, is_space_file, load_space_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "hyperparams" / "spaces" / "ppo_conditional.yml"
BAD_NAME = "bad_space.yml"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _write(tmp_path: Path, text: str, name: str = BAD_NAME) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _study(seed: int = 0) -> optuna.Study:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))


# --- load-time errors ---------------------------------------------------------------------------

LR = "{type: float, low: 1.0e-5, high: 1.0e-2, log: true}"

# (file text, key named in the message, reason substring, check against PPO)
MALFORMED: dict[str, tuple[str, str, str, bool]] = {
    "not-yaml": ("params: {lr: [1, 2\n", "file", "not valid YAML", False),
    "top-level-list": ("- a\n- b\n", "top level", "must be a mapping of sections", False),
    "top-level-empty": ("", "top level", "must be a mapping of sections, got empty", False),
    "unknown-section": ("parms:\n  lr: " + LR + "\n", "parms", "unknown section; valid sections: name,", False),
    "section-not-mapping": ("params: [lr]\n", "params", "must be a mapping, got ['lr']", False),
    "spec-not-mapping": ("params:\n  lr: 0.001\n", "lr", "spec must be a mapping", False),
    "unknown-field": (
        "params:\n  lr: {type: float, low: 0.1, high: 1, scale: log}\n",
        "lr",
        "unknown field 'scale'; valid fields: type, low, high",
        False,
    ),
    "field-of-other-type": (
        "params:\n  lr: {type: float, low: 0.1, high: 1, choices: [1]}\n",
        "lr",
        "field 'choices' does not apply to float parameters",
        False,
    ),
    "missing-type": ("params:\n  lr: {low: 0.1, high: 1}\n", "lr", "missing type", False),
    "unknown-type": (
        "params:\n  lr: {type: double, low: 0.1, high: 1}\n",
        "lr",
        "unknown type 'double'; valid types: float, int, categorical",
        False,
    ),
    "missing-low": ("params:\n  lr: {type: float, high: 1}\n", "lr", "missing low", False),
    "missing-high": ("params:\n  n: {type: int, low: 1}\n", "n", "missing high", False),
    "bound-not-number": (
        "params:\n  lr: {type: float, low: x, high: 1}\n",
        "lr",
        "low must be a valid number, got 'x'",
        False,
    ),
    "int-float-bound": (
        "params:\n  n: {type: int, low: 1.5, high: 3}\n",
        "n",
        "low must be a valid integer, got 1.5",
        False,
    ),
    "low-above-high": ("params:\n  lr: {type: float, low: 2, high: 1}\n", "lr", "low > high", False),
    "log-low-zero": ("params:\n  lr: {type: float, low: 0, high: 1, log: true}\n", "lr", "needs low > 0", False),
    "log-and-step": (
        "params:\n  n: {type: int, low: 1, high: 9, log: true, step: 2}\n",
        "n",
        "log and step cannot be used together",
        False,
    ),
    "bad-step": (
        "params:\n  lr: {type: float, low: 0, high: 1, step: 0}\n",
        "lr",
        "step must be greater than 0, got 0",
        False,
    ),
    "no-choices": ("params:\n  act: {type: categorical}\n", "act", "missing choices", False),
    "empty-choices-list": (
        "params:\n  act: {type: categorical, choices: []}\n",
        "act",
        "choices must be non-empty, got []",
        False,
    ),
    "empty-choices-map": (
        "params:\n  act: {type: categorical, choices: {}}\n",
        "act",
        "choices must be non-empty, got {}",
        False,
    ),
    "choice-not-scalar": (
        "params:\n  arch: {type: categorical, choices: [[64, 64], [32]]}\n",
        "arch",
        "choices[0] must be a str, int, float, bool or null (Optuna's choice types; map labels to other values",
        False,
    ),
    "duplicate-choice": ("params:\n  c: {type: categorical, choices: [a, b, a]}\n", "c", "duplicate choice 'a'", False),
    "unknown-transform": (
        "params:\n  lr: {type: float, low: 0.1, high: 1, transform: exp}\n",
        "lr",
        "transform must be 'one_minus', 'pow2' or 'linear', got 'exp'",
        False,
    ),
    "pow2-on-float": (
        "params:\n  n: {type: float, low: 1, high: 5, transform: pow2}\n",
        "n",
        "transform pow2 needs an int parameter",
        False,
    ),
    "bad-destination": (
        "params:\n  lr: {type: float, low: 0.1, high: 1, to: 3}\n",
        "lr",
        "to must be a destination kwarg name",
        False,
    ),
    "when-missing": (
        "params:\n  lr: {type: float, low: 0.1, high: 1, when: {schedule: constant}}\n",
        "lr",
        "condition on a missing parameter 'schedule'",
        False,
    ),
    "when-later": (
        "params:\n"
        "  lr: {type: float, low: 0.1, high: 1, when: {schedule: constant}}\n"
        "  schedule: {type: categorical, choices: [constant, linear], to: null}\n",
        "lr",
        "'schedule', which is defined later",
        False,
    ),
    "when-not-a-choice": (
        "params:\n"
        "  schedule: {type: categorical, choices: [constant, linear], to: null}\n"
        "  lr: {type: float, low: 0.1, high: 1, when: {schedule: cosine}}\n",
        "lr",
        "condition value 'cosine' is not a choice of 'schedule'",
        False,
    ),
    "when-not-mapping": (
        "params:\n  lr: {type: float, low: 0.1, high: 1, when: [a]}\n",
        "lr",
        "when must be a mapping, got ['a']",
        False,
    ),
    "derived-syntax": (
        "params:\n  n: {type: int, low: 1, high: 3, to: null}\nderived:\n  n_epochs: 'n +* 2'\n",
        "n_epochs",
        "does not compile",
        False,
    ),
    "derived-unknown-name": (
        "params:\n  n: {type: int, low: 1, high: 3, to: null}\nderived:\n  n_epochs: 'm * 2'\n",
        "n_epochs",
        "unknown name 'm'",
        False,
    ),
    "derived-not-string": ("derived:\n  n_epochs: 3\n", "n_epochs", "must be an expression: a string of Python", False),
    "derived-unknown-field": (
        "derived:\n  n_epochs: {value: '3', if: x}\n",
        "n_epochs",
        "unknown field 'if'; valid fields: value, when",
        False,
    ),
    "user-attr-syntax": ("user_attrs:\n  size: 'n_envs *'\n", "size", "does not compile", False),
    "user-attr-reserved": ("user_attrs:\n  hyperparams: 'n_envs'\n", "hyperparams", "user attribute names", False),
    "module-does-not-import": (
        "params:\n  act: {type: categorical, choices: {a: 'no_such_module_xyz:Tanh'}, to: policy_kwargs.act}\n",
        "act",
        "does not import: cannot import module 'no_such_module_xyz'",
        False,
    ),
    "attribute-does-not-import": (
        "params:\n  act: {type: categorical, choices: ['torch.nn:NoSuchActivation'], to: act}\n",
        "act",
        "does not import: module 'torch.nn' has no attribute 'NoSuchActivation'",
        False,
    ),
    "fixed-does-not-import": (
        "fixed:\n  policy_kwargs.activation_fn: 'torch.nn:Nope'\n",
        "policy_kwargs.activation_fn",
        "does not import",
        False,
    ),
    "duplicate-key": ("params:\n  lr: " + LR + "\n  lr: " + LR + "\n", "lr", "duplicate key (line 3)", False),
    "duplicate-destination": (
        "params:\n  lr: " + LR + "\n  lr2: {type: float, low: 0.1, high: 1, to: learning_rate}\n"
        "fixed:\n  learning_rate: 0.1\n",
        "learning_rate",
        "destination 'learning_rate' is also set by 'lr2'",
        False,
    ),
    "param-not-identifier": ("params:\n  n-steps: {type: int, low: 1, high: 3}\n", "n-steps", "identifiers", False),
    "param-reserved-name": ("params:\n  n_envs: {type: int, low: 1, high: 3}\n", "n_envs", "reserved name", False),
    "bad-algos": ("algos: []\n", "algos", "must be non-empty, got []", False),
    "param-not-accepted": (
        "params:\n  lr: " + LR + "\n",
        "lr",
        "'lr' is a key the algorithm does not accept (PPO); valid keys: ",
        True,
    ),
    "fixed-not-accepted": (
        "fixed:\n  policy_kwarg.ortho_init: false\n",
        "policy_kwarg.ortho_init",
        "'policy_kwarg' is a key the algorithm does not accept",
        True,
    ),
    "derived-not-accepted": (
        "derived:\n  n_step: 'n_envs * 8'\n",
        "n_step",
        "'n_step' is a key the algorithm does not accept",
        True,
    ),
    "log-not-bool": (
        "params:\n  lr: {type: float, low: 0.1, high: 1, log: yes}\n",
        "lr",
        "log must be a valid boolean, got 'yes'",
        False,
    ),
    "infinite-bound": (
        "params:\n  lr: {type: float, low: 0, high: .inf}\n",
        "lr",
        "high must be a finite number, got inf",
        False,
    ),
    "int-float-step": (
        "params:\n  n: {type: int, low: 1, high: 9, step: 1.5}\n",
        "n",
        "step must be a valid integer, got 1.5",
        False,
    ),
    "pow2-on-categorical": (
        "params:\n  n: {type: categorical, choices: [1, 2], transform: pow2}\n",
        "n",
        "transform pow2 needs an int parameter, not categorical",
        False,
    ),
    "transform-on-text-choice": (
        "params:\n  g: {type: categorical, choices: {a: 0.1, b: x}, transform: one_minus}\n",
        "g",
        "transform one_minus needs numeric choices, got 'x'",
        False,
    ),
    "duplicate-number-choice": (
        "params:\n  c: {type: categorical, choices: [1, true, 1.0]}\n",
        "c",
        "duplicate choice 1.0",
        False,
    ),
    "when-itself": ("params:\n  n: {type: int, low: 1, high: 3, when: {n: 1}}\n", "n", "condition on itself", False),
    "when-no-values": (
        "params:\n  c: {type: categorical, choices: [a, b]}\n  n: {type: int, low: 1, high: 3, when: {c: []}}\n",
        "n",
        "when.c must be non-empty, got []",
        False,
    ),
    "when-value-not-scalar": (
        "params:\n  c: {type: categorical, choices: [a, b]}\n  n: {type: int, low: 1, high: 3, when: {c: {a: 1}}}\n",
        "n",
        "when.c must be a str, int, float, bool or null, or a list of them, got {'a': 1}",
        False,
    ),
    "destination-true": (
        "params:\n  lr: {type: float, low: 0.1, high: 1, to: true}\n",
        "lr",
        "or null/false, got True",
        False,
    ),
    "param-name-not-string": (
        "params:\n  1: {type: int, low: 1, high: 3}\n",
        "1",
        "must be Python identifiers (expressions use them as names), got 1",
        False,
    ),
    "empty-name": ("name: ' '\n", "name", "must be non-empty, got ' '", False),
    "description-not-string": ("description: [a]\n", "description", "must be a valid string, got ['a']", False),
    "entry-without-value": ("user_attrs:\n  size: {when: {x: 1}}\n", "size", "missing value (the expression)", False),
    "algos-item-empty": ("algos: [ppo, '']\n", "algos", "algos[1] must be non-empty, got ''", False),
    "several-errors": (
        "params:\n  lr: {type: float, low: x, high: 1}\n  n: {type: int, low: 1}\n",
        "lr",
        "low must be a valid number, got 'x' (and 1 more error in the file)",
        False,
    ),
}


@pytest.mark.parametrize(("text", "key", "reason", "with_algo"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_file_fails_at_load(tmp_path: Path, text: str, key: str, reason: str, with_algo: bool) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SpaceFileError) as info:
        load_space_file(path, algo_class=sb3.PPO if with_algo else None)
    message = str(info.value)
    assert BAD_NAME in message
    assert f": {key}: " in message
    assert reason in message
    assert message == f"{path}: {info.value.key}: {info.value.reason}"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpaceFileError, match=rf"{BAD_NAME}: file: file not found"):
        load_space_file(tmp_path / BAD_NAME)


def test_accepted_keys_are_checked_only_with_an_algo_class(tmp_path: Path) -> None:
    path = _write(tmp_path, "params:\n  lr: " + LR + "\n")
    assert load_space_file(path)(_study().ask(), 1, 1, {})["lr"] > 0
    with pytest.raises(SpaceFileError, match="does not accept"):
        load_space_file(path, algo_class=sb3.PPO)


def test_error_is_an_invalid_search_space_error_and_pickles() -> None:
    error = SpaceFileError("a/space.yml", "lr", "low > high")
    assert isinstance(error, InvalidSearchSpaceError)
    assert isinstance(error, ValueError)
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) == "a/space.yml: lr: low > high"


def test_failing_expression_names_its_entry(tmp_path: Path) -> None:
    path = _write(tmp_path, "params:\n  n: {type: int, low: 0, high: 0, to: null}\nderived:\n  n_epochs: '3 // n'\n")
    space = load_space_file(path)
    with pytest.raises(SpaceFileError, match=r"n_epochs: expression '3 // n' raised ZeroDivisionError"):
        space(_study().ask(), 1, 1, {})


def test_is_space_file() -> None:
    assert is_space_file("spaces/ppo.yml")
    assert is_space_file("ppo.YAML")
    assert not is_space_file("ppo-conditional")
    assert not is_space_file("mymodule:space")


def test_loading_module_does_not_import_pydantic() -> None:
    code = "import sys, zoo_ext.spaces._yaml; print('pydantic' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


# --- the JSON Schema ---------------------------------------------------------------------------------


def _unknown_keys(schema: dict[str, Any], node: dict[str, Any], data: Any, where: str = "") -> list[str]:
    """Return the keys of ``data`` that ``node`` of ``schema`` does not allow, following objects and $refs."""
    if "$ref" in node:
        return _unknown_keys(schema, schema["$defs"][node["$ref"].split("/")[-1]], data, where)
    if "discriminator" in node and isinstance(data, dict):
        target = node["discriminator"]["mapping"][data["type"]]
        return _unknown_keys(schema, {"$ref": target}, data, where)
    branches = node.get("anyOf", []) + node.get("oneOf", [])
    if branches:
        objects = [b for b in branches if "properties" in b or "additionalProperties" in b or "$ref" in b]
        return _unknown_keys(schema, objects[0], data, where) if objects and isinstance(data, dict) else []
    if not isinstance(data, dict):
        return []
    unknown = []
    for key, value in data.items():
        if key in node.get("properties", {}):
            unknown += _unknown_keys(schema, node["properties"][key], value, f"{where}{key}.")
        elif node.get("additionalProperties") is False:
            unknown.append(f"{where}{key}")
        elif isinstance(node.get("additionalProperties"), dict):
            unknown += _unknown_keys(schema, node["additionalProperties"], value, f"{where}{key}.")
    return unknown


def test_schema_command_prints_the_json_schema_of_space_files(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "zoo_ext", "schema"], capture_output=True, text=True, check=True).stdout
    schema = json.loads(out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "zoo_ext search space"
    assert "python -m zoo_ext schema" in schema["description"]
    model = SpaceFile.model_json_schema()
    assert {k: v for k, v in schema.items() if k not in ("$schema", "title", "description")} == {
        k: v for k, v in model.items() if k not in ("title", "description")
    }
    assert list(schema["properties"]) == list(SECTIONS)
    assert schema["additionalProperties"] is False
    assert all(definition["additionalProperties"] is False for definition in schema["$defs"].values())
    params = schema["properties"]["params"]["anyOf"][0]["additionalProperties"]
    assert params["discriminator"]["mapping"] == {
        "float": "#/$defs/FloatParam",
        "int": "#/$defs/IntParam",
        "categorical": "#/$defs/CategoricalParam",
    }
    assert schema["$defs"]["FloatParam"]["required"] == ["type", "low", "high"]
    assert schema["$defs"]["CategoricalParam"]["required"] == ["type", "choices"]
    assert schema["$defs"]["IntParam"]["properties"]["low"]["type"] == "integer"
    assert "default" not in schema["$defs"]["IntParam"]["properties"]["to"]  # the default is the key, not null

    data = yaml.load(EXAMPLE.read_text(), Loader=_Loader)
    assert _unknown_keys(schema, schema, data) == []
    SpaceFile.model_validate(data)
    data["params"]["n_epochs"]["scale"] = "log"
    data["derived"]["clip_range_vf"]["if"] = "x"
    data["parms"] = {}
    assert _unknown_keys(schema, schema, data) == ["params.n_epochs.scale", "derived.clip_range_vf.if", "parms"]
    bad = tmp_path / BAD_NAME
    bad.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpaceFileError) as info:
        load_space_file(bad)
    assert str(info.value) == (
        f"{bad}: n_epochs: unknown field 'scale'; valid fields: type, low, high, log, step, transform, to, when"
        " (and 2 more errors in the file)"
    )


# --- the example file --------------------------------------------------------------------------------


@pytest.mark.slow
def test_example_file_samples_both_branches_and_builds_ppo() -> None:
    space = load_space_file(EXAMPLE, algo_class=sb3.PPO)
    assert isinstance(space, YamlSearchSpace)
    assert space.name == "ppo-conditional"
    assert space.algos == frozenset({"ppo"})
    assert space.description.startswith("PPO with a conditional learning-rate schedule")
    assert space.__doc__ == space.description
    children = {
        "learning_rate": ("lr_schedule", "constant"),
        "learning_rate_initial": ("lr_schedule", "linear"),
        "target_kl": ("use_target_kl", True),
        "vf_width": ("vf_shape", "separate"),
    }
    env = gym.make("Pendulum-v1")
    study = _study(seed=0)
    schedules: set[str] = set()
    for i in range(200):
        trial = study.ask()
        kwargs = space(trial, 1, 1, {})
        for child, (parent, value) in children.items():
            assert (child in trial.params) == (trial.params[parent] == value), (child, trial.params)
        schedules.add(trial.params["lr_schedule"])
        assert ("clip_range_vf" in kwargs) == (trial.params["lr_schedule"] == "linear")
        assert kwargs["policy_kwargs"]["ortho_init"] is False
        assert kwargs["n_steps"] % kwargs["batch_size"] == 0
        assert trial.user_attrs["rollout_size"] == kwargs["n_steps"]
        if i % 10 == 0:
            model = sb3.PPO("MlpPolicy", env, device="cpu", **kwargs)
            assert model.n_steps == kwargs["n_steps"]
        study.tell(trial, 0.0)
    env.close()
    assert schedules == {"constant", "linear"}


def test_example_file_probes_as_a_conditional_space() -> None:
    space = load_space_file(EXAMPLE, algo_class=sb3.PPO)
    info = probe_space(space, space.name, sb3.PPO, 1, 4, {}, n_samples=16)
    assert info.conditional
    assert "learning_rate_initial" in info.distributions or "learning_rate" in info.distributions


# --- parity with hand-written Python spaces ----------------------------------------------------------


def example_twin(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """The Python twin of hyperparams/spaces/ppo_conditional.yml."""
    kwargs: dict[str, Any] = {
        "gamma": 1 - trial.suggest_float("one_minus_gamma", 0.0001, 0.1, log=True),
        "gae_lambda": 1 - trial.suggest_float("one_minus_gae_lambda", 0.001, 0.2, log=True),
        "n_steps": 2 ** trial.suggest_int("n_steps_pow", 5, 11),
    }
    batch_size = 2 ** trial.suggest_int("batch_size_pow", 5, 8)
    kwargs["n_epochs"] = trial.suggest_int("n_epochs", 1, 20)
    kwargs["ent_coef"] = trial.suggest_float("ent_coef", 1e-8, 0.1, log=True)
    kwargs["clip_range"] = trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3, 0.4])
    kwargs["max_grad_norm"] = trial.suggest_float("max_grad_norm", 0.3, 5.0)
    schedule = trial.suggest_categorical("lr_schedule", ["constant", "linear"])
    if schedule == "constant":
        kwargs["learning_rate"] = trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
    else:
        kwargs["learning_rate"] = linear_schedule(trial.suggest_float("learning_rate_initial", 1e-5, 1e-2, log=True))
    if trial.suggest_categorical("use_target_kl", [False, True]):
        kwargs["target_kl"] = trial.suggest_float("target_kl", 0.003, 0.1, log=True)
    activation = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "elu": torch.nn.ELU}[
        trial.suggest_categorical("activation", ["tanh", "relu", "elu"])
    ]
    n_layers = trial.suggest_int("n_layers", 1, 3)
    width = 2 ** trial.suggest_int("width", 5, 8)
    vf_width = width
    if trial.suggest_categorical("vf_shape", ["same", "separate"]) == "separate":
        vf_width = 2 ** trial.suggest_int("vf_width", 5, 9)
    kwargs["policy_kwargs"] = {
        "activation_fn": activation,
        "ortho_init": False,
        "net_arch": {"pi": [width] * n_layers, "vf": [vf_width] * n_layers},
    }
    kwargs["batch_size"] = min(batch_size, kwargs["n_steps"] * n_envs)
    if schedule == "linear":
        kwargs["clip_range_vf"] = kwargs["clip_range"]
    trial.set_user_attr("rollout_size", kwargs["n_steps"] * n_envs)
    trial.set_user_attr("n_minibatches", kwargs["n_steps"] * n_envs // kwargs["batch_size"])
    return kwargs


SMALL = """\
name: small
algos: sac
params:
  tau: {type: float, low: 0.005, high: 0.1, step: 0.005}
  train_freq: {type: int, low: 1, high: 9, step: 2}
  activation: {type: categorical, choices: ["torch.nn:ReLU", "torch.nn:Tanh"], to: policy_kwargs.activation_fn}
  arch: {type: categorical, choices: {small: [64, 64], big: [256, 256]}, to: null}
  lr: {type: float, low: 1e-5, high: 1e-3, log: true, to: learning_rate}
fixed:
  policy_kwargs: {log_std_init: -3, net_arch: {}}
derived:
  gradient_steps: "train_freq * n_envs"
  policy_kwargs.net_arch.pi: "arch"
  policy_kwargs.net_arch.qf: "[w * 2 for w in arch]"
  buffer_size: {value: "gradient_steps * 1000", when: {arch: big}}
user_attrs:
  width: "arch[0]"
"""


def small_twin(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """The Python twin of SMALL."""
    tau = trial.suggest_float("tau", 0.005, 0.1, step=0.005)
    train_freq = trial.suggest_int("train_freq", 1, 9, step=2)
    activation = {"torch.nn:ReLU": torch.nn.ReLU, "torch.nn:Tanh": torch.nn.Tanh}[
        trial.suggest_categorical("activation", ["torch.nn:ReLU", "torch.nn:Tanh"])
    ]
    label = trial.suggest_categorical("arch", ["small", "big"])
    arch = {"small": [64, 64], "big": [256, 256]}[label]
    kwargs: dict[str, Any] = {
        "tau": tau,
        "train_freq": train_freq,
        "learning_rate": trial.suggest_float("lr", 1e-5, 1e-3, log=True),
        "gradient_steps": train_freq * n_envs,
        "policy_kwargs": {
            "activation_fn": activation,
            "log_std_init": -3,
            "net_arch": {"pi": arch, "qf": [w * 2 for w in arch]},
        },
    }
    if label == "big":
        kwargs["buffer_size"] = kwargs["gradient_steps"] * 1000
    trial.set_user_attr("width", arch[0])
    return kwargs


@pytest.mark.parametrize(("source", "twin"), [(None, example_twin), (SMALL, small_twin)], ids=["example", "small"])
def test_yaml_and_python_twin_sample_the_same(tmp_path: Path, source: str | None, twin: Any) -> None:
    path = EXAMPLE if source is None else _write(tmp_path, source, "small.yaml")
    space = load_space_file(path)
    yaml_study, python_study = _study(seed=7), _study(seed=7)
    for _ in range(30):
        yaml_trial, python_trial = yaml_study.ask(), python_study.ask()
        yaml_kwargs = space(yaml_trial, 2, 4, {})
        python_kwargs = twin(python_trial, 2, 4, {})
        assert yaml_trial.params == python_trial.params
        assert list(yaml_trial.params) == list(python_trial.params)
        assert encode(yaml_kwargs) == encode(python_kwargs)
        assert yaml_trial.user_attrs == python_trial.user_attrs
        yaml_study.tell(yaml_trial, 0.0)
        python_study.tell(python_trial, 0.0)


def test_small_file_header_and_yaml_details(tmp_path: Path) -> None:
    space = load_space_file(_write(tmp_path, SMALL, "small.yaml"), algo_class=sb3.SAC)
    assert space.name == "small"
    assert space.algos == frozenset({"sac"})
    assert space.description == "search space from small.yaml"
    trial = _study().ask()
    kwargs = space(trial, 1, 1, {})
    assert trial.distributions["lr"].low == 1e-5  # 1e-5 reads as a float, not a string
    assert kwargs["policy_kwargs"]["activation_fn"] in (torch.nn.ReLU, torch.nn.Tanh)
    unnamed = load_space_file(_write(tmp_path, "params:\n  lr: " + LR + "\n", "my_space.yml"))
    assert unnamed.name == "my_space"
    assert unnamed.algos is None


# --- user attributes -------------------------------------------------------------------------------


def test_user_attrs_are_set_on_the_trial(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        params:
          n_steps_pow: {type: int, low: 5, high: 6, to: n_steps, transform: pow2}
          schedule: {type: categorical, choices: [constant, linear], to: null}
          lr: {type: float, low: 0.0001, high: 0.001, to: learning_rate, transform: linear, when: {schedule: linear}}
        derived:
          batch_size: "n_steps_pow // 2"
        user_attrs:
          n_steps_total: "n_steps_pow * n_envs"
          minibatches: "n_steps_pow * n_envs // batch_size"
          schedule_object: {value: "lr", when: {schedule: linear}}
          from_args: "additional_args.get('tag', 'none')"
        """,
        "attrs.yml",
    )
    space = load_space_file(path, algo_class=sb3.PPO)
    study = _study(seed=1)
    seen_linear = False
    for _ in range(10):
        trial = study.ask()
        kwargs = space(trial, 1, 8, {"tag": "x"})
        attrs = trial.user_attrs
        assert attrs["n_steps_total"] == kwargs["n_steps"] * 8
        assert attrs["minibatches"] == 16
        assert attrs["from_args"] == "x"
        if trial.params["schedule"] == "linear":
            seen_linear = True
            assert attrs["schedule_object"] == f"lin_{trial.params['lr']}"
        else:
            assert "schedule_object" not in attrs
            assert "lr" not in trial.params
    assert seen_linear


# --- YAML 1.2 booleans ------------------------------------------------------------------------------


def test_yes_no_on_off_stay_strings(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        params:
          mode: {type: categorical, choices: [yes, no, on, off], to: null}
          switch: {type: categorical, choices: {on: 1, off: 0, yes: 2, no: 3}, to: null}
          lr: {type: float, low: 0.0001, high: 0.001, to: learning_rate, when: {mode: [on, yes]}}
          flags: {type: categorical, choices: [true, FALSE], to: null}
        fixed:
          policy_kwargs.a: on
          policy_kwargs.b: [yes, no, off, y, n, Yes, OFF]
          policy_kwargs.c: TRUE
        """,
        "switches.yml",
    )
    space = load_space_file(path)
    study = _study(seed=2)
    modes, switches = set(), set()
    for _ in range(30):
        trial = study.ask()
        kwargs = space(trial, 1, 1, {})
        modes.add(trial.params["mode"])
        switches.add(trial.params["switch"])
        assert trial.params["flags"] in (True, False)
        assert ("learning_rate" in kwargs) == (trial.params["mode"] in ("on", "yes"))
        assert kwargs["policy_kwargs"] == {"a": "on", "b": ["yes", "no", "off", "y", "n", "Yes", "OFF"], "c": True}
        study.tell(trial, 0.0)
    assert modes == {"yes", "no", "on", "off"}
    assert switches == {"on", "off", "yes", "no"}
    assert trial.distributions["mode"].choices == ("yes", "no", "on", "off")


# --- expressions cannot escape ------------------------------------------------------------------------

ESCAPES: dict[str, tuple[str, str]] = {
    "subclasses": ("().__class__.__bases__[0].__subclasses__()", "attribute '__subclasses__'"),
    "lambda-globals": ("(lambda: 0).__globals__", "attribute '__globals__'"),
    "lambda-call": ("(lambda: 0)()", "Lambda syntax"),
    "comprehension": ("[c for c in ().__class__.__mro__]", "attribute '__mro__'"),
    "generator-frame": ("(c for c in [1]).gi_frame.f_globals", "attribute 'f_globals'"),
    "dunder-target": ("[1 for __builtins__ in [1]]", "name '__builtins__'"),
    "walrus": ("(x := 1)", "NamedExpr syntax"),
    "f-string": ("f'{n_envs}'", "JoinedStr syntax"),
    "str-format": ("'{0.__class__}'.format(n_envs)", "attribute 'format'"),
    "plain-attribute": ("n_envs.real", "attribute 'real'"),
    "getattr": ("getattr(n_envs, 'real')", "unknown name 'getattr'"),
    "import": ("__import__('os')", "name '__import__'"),
    "builtins": ("__builtins__", "name '__builtins__'"),
}


@pytest.mark.parametrize(("source", "reason"), ESCAPES.values(), ids=ESCAPES.keys())
@pytest.mark.parametrize("section", ["derived", "user_attrs"])
def test_expression_escapes_fail_at_load(tmp_path: Path, section: str, source: str, reason: str) -> None:
    key = "policy_kwargs.extra" if section == "derived" else "extra"
    path = _write(tmp_path, f"{section}:\n  {key}:\n    value: |-\n      {source}\n")
    with pytest.raises(SpaceFileError) as info:
        load_space_file(path)
    assert str(info.value).startswith(f"{path}: {key}: ")
    assert repr(source) in info.value.reason
    assert reason in info.value.reason
    if "unknown name" not in reason:
        assert "(allowed: arithmetic," in info.value.reason
        assert "attributes get, items, keys, values" in info.value.reason


def test_allowed_expressions_still_evaluate(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        params:
          width: {type: int, low: 4, high: 4, transform: pow2, to: null}
        derived:
          policy_kwargs.net_arch: "dict(pi=[width] * 2, vf=[max(width, *[8, 4])])"
          n_epochs: "{'a': 3}['a'] if not width < 0 and n_envs in (1, 2) else -1"
        user_attrs:
          tag: "additional_args.get('tag', 'none')"
          n_keys: "len(list(additional_args.keys())) + len(additional_args.items())"
        """,
        "ok.yml",
    )
    trial = _study().ask()
    kwargs = load_space_file(path)(trial, 1, 2, {"tag": "t"})
    assert kwargs == {"policy_kwargs": {"net_arch": {"pi": [16, 16], "vf": [16]}}, "n_epochs": 3}
    assert trial.user_attrs == {"tag": "t", "n_keys": 2}


# --- the probe builds the model once per string choice ---------------------------------------------


@pytest.fixture(scope="module")
def cartpole_build() -> Any:
    """A ``build`` for probe_space: PPO on one CartPole env, as study.py passes it; records its kwargs."""
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("CartPole-v1", n_envs=1)
    built: list[dict[str, Any]] = []

    def build(kwargs: dict[str, Any]) -> None:
        sb3.PPO("MlpPolicy", env, n_steps=64, batch_size=32, device="cpu", **kwargs)
        built.append(kwargs)

    build.built = built  # type: ignore[attr-defined]
    yield build
    env.close()


ACTIVATION = """\
params:
  learning_rate: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}
  selector: {type: categorical, choices: [a, b], to: null}
  activation_fn: {type: categorical, choices: CHOICES, to: policy_kwargs.activation_fn, when: {selector: b}}
"""


def test_probe_rejects_a_string_choice_the_constructor_cannot_use(tmp_path: Path, cartpole_build: Any) -> None:
    space = load_space_file(_write(tmp_path, ACTIVATION.replace("CHOICES", "[tanh, relu]")), algo_class=sb3.PPO)
    with pytest.raises(InvalidSearchSpaceError) as info:
        probe_space(space, "acts", sb3.PPO, 2, 1, {}, build=cartpole_build)
    assert str(info.value) == (
        "search space 'acts': choice 'tanh' of 'activation_fn' cannot be used to build the model:"
        " TypeError: 'str' object is not callable"
    )
    probe_space(space, "acts", sb3.PPO, 2, 1, {})  # without build, only the keys are checked


def test_probe_builds_every_string_choice_once(tmp_path: Path, cartpole_build: Any) -> None:
    text = ACTIVATION.replace("CHOICES", '{tanh: "torch.nn:Tanh", relu: "torch.nn:ReLU"}')
    space = load_space_file(_write(tmp_path, text), algo_class=sb3.PPO)
    cartpole_build.built.clear()
    info = probe_space(space, "acts", sb3.PPO, 2, 1, {}, build=cartpole_build)
    assert info.describe() == "3 parameters (2 categorical, conditional)"
    activations = [kw.get("policy_kwargs", {}).get("activation_fn") for kw in cartpole_build.built]
    assert len(cartpole_build.built) == 4  # selector a, b; activation tanh, relu
    assert {torch.nn.Tanh, torch.nn.ReLU} <= set(activations)
