"""The structure of a YAML search-space file as pydantic models, and its JSON Schema.

:func:`validate` checks a file's parsed YAML against :class:`SpaceFile` and turns the first
pydantic error into ``(key, reason)`` for :class:`zoo_ext.spaces._yaml.SpaceFileError`; what the
models cannot see (conditions on earlier parameters, destinations, names, expressions, imports)
is checked by :mod:`zoo_ext.spaces._yaml`. :func:`json_schema` is what ``python -m zoo_ext schema``
prints for editors. This module imports pydantic, so it is imported only when a file loads.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    Tag,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ErrorDetails

from zoo_ext.errors import BadInputError

__all__ = [
    "SECTIONS",
    "CategoricalParam",
    "Entry",
    "FloatParam",
    "IntParam",
    "SchemaError",
    "SpaceFile",
    "json_schema",
    "validate",
]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_SCALARS = "a str, int, float, bool or null"


def _pick(message: str, *kinds: tuple[str, type | tuple[type, ...]]) -> Discriminator:
    """Return a discriminator choosing a union member by the YAML value's Python type, else ``message``."""

    def tag(value: Any) -> str | None:
        return next((name for name, types in kinds if isinstance(value, types)), None)

    return Discriminator(tag, custom_error_type="invalid", custom_error_message=message)


def _scalar(message: str) -> Discriminator:
    return _pick(message, ("<str>", str), ("<bool>", bool), ("<int>", int), ("<float>", float), ("<null>", type(None)))


# A scalar is kept as written: an integer stays an int, a boolean stays a bool.
_Scalars = (
    Annotated[StrictStr, Tag("<str>")]
    | Annotated[StrictBool, Tag("<bool>")]
    | Annotated[StrictInt, Tag("<int>")]
    | Annotated[StrictFloat, Tag("<float>")]
    | Annotated[None, Tag("<null>")]
)
_SCALAR_SCHEMA = WithJsonSchema({"type": ["string", "number", "boolean", "null"]})
Scalar = Annotated[_Scalars, _scalar(f"must be {_SCALARS}"), _SCALAR_SCHEMA]
Label = Annotated[
    _Scalars,
    _scalar(f"must be {_SCALARS} (Optuna's choice types; map labels to other values with {{label: value}})"),
    _SCALAR_SCHEMA,
]
Number = Annotated[float, Strict(), AllowInfNan(False)]
Integer = Annotated[int, Strict()]
Name = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1)]

When = Annotated[
    dict[
        str,
        Annotated[
            Annotated[Scalar, Tag("<scalar>")] | Annotated[list[Scalar], Tag("<list>"), Field(min_length=1)],
            _pick(
                f"must be {_SCALARS}, or a list of them", ("<list>", list), ("<scalar>", (str, float, int, type(None)))
            ),
        ],
    ],
    Field(min_length=1, description="Only in trials where each named earlier parameter takes a listed value."),
]
Destination = Annotated[
    Annotated[StrictStr, Tag("<str>")] | Annotated[Literal[False] | None, Tag("<none>")],
    Discriminator(
        lambda v: "<str>" if isinstance(v, str) else "<none>" if v is None or v is False else None,
        custom_error_type="invalid",
        custom_error_message="must be a destination kwarg name such as policy_kwargs.net_arch, or null/false",
    ),
    Field(
        description="Constructor kwarg it sets (default: the key; a.b nests into dict a; null: not passed).",
        json_schema_extra=lambda schema: schema.pop("default", None),  # the default is the key, not null
    ),
]
Transform = Annotated[
    Literal["one_minus", "pow2", "linear"] | None,
    Field(description="one_minus: 1 - x; pow2: 2 ** x (int only); linear: rl_zoo3's linear_schedule(x)."),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Log = Annotated[StrictBool, Field(description="Sample on a log scale (needs low > 0, excludes step).")]
_LOW, _HIGH, _STEP = "Lower bound (inclusive).", "Upper bound (inclusive).", "Grid step (not with log)."


def _check_range(param: FloatParam | IntParam) -> None:
    """Raise ValueError for bounds, log and step that Optuna would refuse."""
    if param.low > param.high:
        raise ValueError(f"low > high ({param.low} > {param.high})")
    if param.log and param.step is not None:
        raise ValueError("log and step cannot be used together (a log scale has no grid)")
    if param.log and param.low <= 0:
        raise ValueError(f"log scale needs low > 0, got low={param.low}")
    if param.transform == "pow2" and param.type != "int":
        raise ValueError(f"transform pow2 needs an int parameter, not {param.type}")


class FloatParam(_Model):
    """A float parameter: `trial.suggest_float(key, low, high, log=log, step=step)`."""

    type: Literal["float"]
    low: Number = Field(description=_LOW)
    high: Number = Field(description=_HIGH)
    log: Log = False
    step: Annotated[Number, Field(gt=0)] | None = Field(None, description=_STEP)
    transform: Transform = None
    to: Destination = None
    when: When | None = None

    @model_validator(mode="after")
    def _valid(self) -> FloatParam:
        _check_range(self)
        return self


class IntParam(_Model):
    """An int parameter: `trial.suggest_int(key, low, high, log=log, step=step)`."""

    type: Literal["int"]
    low: Integer = Field(description=_LOW)
    high: Integer = Field(description=_HIGH)
    log: Log = False
    step: Annotated[Integer, Field(gt=0)] | None = Field(None, description=_STEP)
    transform: Transform = None
    to: Destination = None
    when: When | None = None

    @model_validator(mode="after")
    def _valid(self) -> IntParam:
        _check_range(self)
        return self


class CategoricalParam(_Model):
    """A categorical parameter: `trial.suggest_categorical(key, labels)`; a mapping passes the label's value."""

    type: Literal["categorical"]
    choices: Annotated[
        Annotated[list[Label], Tag("<list>"), Field(min_length=1)]
        | Annotated[dict[Label, Any], Tag("<mapping>"), Field(min_length=1)],
        _pick("must be a list or a mapping label -> value", ("<list>", list), ("<mapping>", dict)),
        Field(description="A list of choices, or a mapping label -> value (package.module:attr strings import)."),
    ]
    transform: Transform = None
    to: Destination = None
    when: When | None = None

    @property
    def pairs(self) -> list[tuple[Any, Any]]:
        """Return ``(label, value)`` per choice, in file order."""
        return list(self.choices.items()) if isinstance(self.choices, dict) else [(c, c) for c in self.choices]

    @model_validator(mode="after")
    def _valid(self) -> CategoricalParam:
        seen: set[tuple[bool, Any]] = set()
        for label, _ in self.pairs:
            if (isinstance(label, bool), label) in seen:  # True and 1 are different choices
                raise ValueError(f"duplicate choice {label!r}")
            seen.add((isinstance(label, bool), label))
        if self.transform == "pow2":
            raise ValueError("transform pow2 needs an int parameter, not categorical")
        for _, value in self.pairs if self.transform is not None else ():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"transform {self.transform} needs numeric choices, got {value!r}")
        return self


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class Entry(_Model):
    """An expression with a condition: `{value: EXPR, when: {...}}`."""

    value: StrictStr = Field(description="A Python expression (see the module docstring of zoo_ext.spaces._yaml).")
    when: When | None = None


_EXPRESSION = "must be an expression: a string of Python, or {value: EXPR, when: {...}}"
_Expression = Annotated[StrictStr, Tag("<str>")] | Annotated[Entry, Tag("<mapping>")]
Derived = Annotated[_Expression, _pick(_EXPRESSION + " (put constants in fixed:)", ("<str>", str), ("<mapping>", dict))]
UserAttr = Annotated[_Expression, _pick(_EXPRESSION, ("<str>", str), ("<mapping>", dict))]


Algos = Annotated[
    Annotated[Name, Tag("<str>")] | Annotated[list[Name], Tag("<list>"), Field(min_length=1)],
    _pick("must be an algorithm name or a non-empty list of names", ("<str>", str), ("<list>", list)),
]


class SpaceFile(_Model):
    """A zoo_ext search-space file: Optuna parameters and the constructor kwargs built from them."""

    name: Name | None = Field(None, description="Search-space name (default: the file stem).")
    description: StrictStr = Field("", description="Shown by `python -m zoo_ext list` (first line).")
    algos: Algos | None = Field(None, description="Algorithms it serves (default: any).")
    params: dict[str, Param] | None = Field(None, description="Optuna parameters, suggested in file order.")
    fixed: dict[str, Any] | None = Field(None, description="destination: value, always passed.")
    derived: dict[str, Derived] | None = Field(
        None, description="destination: Python expression over the parameters' final values."
    )
    user_attrs: dict[str, UserAttr] | None = Field(None, description="name: expression, set with trial.set_user_attr.")


SECTIONS = tuple(SpaceFile.model_fields)
_ENTRY_SECTIONS = ("params", "fixed", "derived", "user_attrs")
_PARAMS: dict[str, type[BaseModel]] = {"float": FloatParam, "int": IntParam, "categorical": CategoricalParam}
_NAMES = {
    "params": "parameter names must be Python identifiers (expressions use them as names)",
    "user_attrs": "user attribute names must be identifiers",
}
_MISSING = {
    "low": "{kind} parameters need low and high",
    "high": "{kind} parameters need low and high",
    "choices": "categorical parameters need a list or a mapping label -> value",
    "value": "the expression",
}


def validate(data: dict[Any, Any]) -> SpaceFile:
    """Return ``data`` (a parsed file) as a :class:`SpaceFile`; raises :class:`SchemaError` for the first error."""
    try:
        return SpaceFile.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        key, reason = _explain(errors[0])
        more = len(errors) - 1
        suffix = f" (and {more} more error{'s' * (more > 1)} in the file)" if more else ""
        raise SchemaError(key, reason + suffix) from None  # the pydantic report adds nothing to the message


class SchemaError(BadInputError, ValueError):
    """A file that does not match :class:`SpaceFile`: ``key`` names the entry, ``reason`` what is wrong."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason


def _explain(error: ErrorDetails) -> tuple[str, str]:
    """Return ``(key, reason)`` for one pydantic error on a space file."""
    loc, kind, value = list(error["loc"]), error["type"], error["input"]
    section = str(loc[0]) if loc else "top level"
    if len(loc) == 3 and loc[2] == "[key]":  # the name of an entry
        return str(value), _NAMES.get(section, "names must be strings") + f", got {value!r}"
    if len(loc) >= 2 and section in _ENTRY_SECTIONS:
        key, path = str(loc[1]), loc[2:]
        param_type = str(path.pop(0)) if section == "params" and path else None
    else:
        key, path, param_type = section, loc[1:], None
    path = [p for p in path if not (isinstance(p, str) and p.startswith("<"))]  # union members
    if path[-1:] == ["[key]"]:  # a key inside a field: "when keys"
        path, kind = path[:-2], "keys"
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    if kind == "extra_forbidden":
        return _unknown(key, where, param_type)
    if kind == "missing":
        hint = _MISSING.get(where, "").format(kind=param_type)
        return key, f"missing {where}" + (f" ({hint})" if hint else "")
    if kind == "union_tag_not_found":
        return key, f"missing type (one of {', '.join(_PARAMS)})"
    if kind == "union_tag_invalid":
        return key, f"unknown type {error['ctx']['tag']!r}; valid types: {', '.join(_PARAMS)}"
    if kind in ("model_attributes_type", "model_type") and section == "params" and not where:
        return key, f"spec must be a mapping such as {{type: float, low: 0, high: 1}}, got {value!r}"
    if kind == "value_error":
        return key, str(error["ctx"]["error"])
    what = {
        "keys": "strings (names)",
        "dict_type": "a mapping",
        "model_attributes_type": "a mapping",
        "too_short": "non-empty",
        "string_too_short": "non-empty",
    }.get(kind) or error["msg"].removeprefix("Input should be ").removeprefix("must be ")
    where = f"{key}{where}" if where.startswith("[") else where  # algos[1]
    where += " keys" if kind == "keys" else ""
    return key, (f"{where} " if where else "") + f"must be {what}, got {value!r}"


def _unknown(key: str, field: str, param_type: str | None) -> tuple[str, str]:
    """Return ``(key, reason)`` for a key the file may not have here."""
    if not field:
        return key, f"unknown section; valid sections: {', '.join(SECTIONS)}"
    if param_type in _PARAMS:
        fields = tuple(_PARAMS[param_type].model_fields)
        if any(field in model.model_fields for model in _PARAMS.values()):
            return key, f"field {field!r} does not apply to {param_type} parameters"
    else:
        fields = tuple(Entry.model_fields)
    return key, f"unknown field {field!r}; valid fields: {', '.join(fields)}"


def json_schema() -> dict[str, Any]:
    """Return the JSON Schema of a space file, for editors (e.g. ``# yaml-language-server: $schema=...``)."""
    schema = SpaceFile.model_json_schema()
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "zoo_ext search space",
        "description": "A YAML search-space file for zoo_ext (python -m zoo_ext schema; reference:"
        " the docstring of zoo_ext/spaces/_yaml.py).",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }
