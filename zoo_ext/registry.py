"""Name → factory registries, one per extension point.

A name resolves, in order, to: something registered from Python, an installed entry point of
the registry's group, or a dotted path ``package.module:attribute`` (``package.module.attribute``
also works). Unknown names raise :class:`UnknownNameError`, which lists the valid choices and the
closest match.

A plug-in (a Python registration or an entry point) registering a name a built-in already has
replaces the built-in, with a logged warning, whatever happens first: the registration, or the
built-ins' lazy loading on first use. Between plug-ins, a Python registration wins over an entry
point, and a later Python registration over an earlier one.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from zoo_ext.errors import BadInputError

__all__ = [
    "DottedPathError",
    "Entry",
    "Registry",
    "FactoryError",
    "UnknownNameError",
    "accepted_keywords",
    "build",
    "check_kwargs",
    "did_you_mean",
    "plain_text",
    "DOTTED_PATH",
    "import_dotted",
    "is_dotted_path",
    "kwargs_target",
]

T = TypeVar("T")

_logger = logging.getLogger(__name__)

ANY_ALGO = "*"


class UnknownNameError(BadInputError, LookupError):
    """Raised for a name that is neither registered, an entry point nor a dotted path."""

    def __init__(self, kind: str, name: str, choices: Iterable[str], scope: str = "") -> None:
        self.kind = kind
        self.name = name
        self.choices = sorted(set(choices))
        close = difflib.get_close_matches(name, self.choices, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        where = f" for {scope}" if scope else ""
        super().__init__(
            f"unknown {kind} {name!r}{where}.{hint} Valid choices: {', '.join(self.choices)}"
            " (or a dotted path package.module:attribute)."
        )

    def __str__(self) -> str:
        return str(self.args[0])


class DottedPathError(BadInputError, ImportError):
    """Raised when a dotted path does not import; the message says which part failed."""


class FactoryError(BadInputError, TypeError):
    """Raised when a factory rejects the keyword arguments it was given."""


def build(
    factory: Callable[..., T],
    name: str,
    context: dict[str, Any],
    kwargs: dict[str, Any],
    *,
    target: Callable[..., Any] | None = None,
) -> T:
    """Call ``factory`` with user ``kwargs`` plus the ``context`` values its signature names.

    This lets a plain class such as ``optuna.samplers.TPESampler`` receive ``seed`` and
    ``n_startup_trials`` while a factory that does not declare them never sees them. If the
    factory refuses them, the error lists what ``target`` (what receives ``kwargs``, default
    ``factory``) accepts.
    """
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    call_kwargs = {key: value for key, value in context.items() if key in params}
    call_kwargs.update(kwargs)
    try:
        return factory(**call_kwargs)
    except TypeError as exc:
        accepted = accepted_keywords(factory if target is None else target) or []
        raise FactoryError(
            f"{name!r} cannot be built with {sorted(kwargs) or 'no arguments'}: {exc}."
            f" It accepts: {', '.join(accepted) or 'nothing'}"
        ) from exc


def accepted_keywords(target: Callable[..., Any]) -> list[str] | None:
    """Return the public keyword arguments ``target`` takes, in order (None: ``**kwargs`` or no readable signature).

    A private parameter (``_init_setup_model``) is left out: it is no setting for a user.
    """
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    keywords = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in keywords and not p.name.startswith("_")]


def did_you_mean(unknown: Iterable[str], valid: Iterable[str]) -> str:
    """Return `` Did you mean 'b' for 'a'?`` for each unknown key with a close valid one ("" if none)."""
    choices = list(valid)
    return "".join(
        f" Did you mean {close[0]!r} for {key!r}?"
        for key in unknown
        if (close := difflib.get_close_matches(key, choices, n=1))
    )


def check_kwargs(name: str, target: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Raise :class:`FactoryError` for keys of ``kwargs`` that ``target`` does not take, listing those it takes.

    ``target`` is what finally receives the user's keyword arguments (for a factory wrapping an
    Optuna class, the class). A target with ``**kwargs`` or no readable signature takes any key.
    """
    accepted = accepted_keywords(target)
    if accepted is None:
        return
    unknown = sorted(set(kwargs) - set(accepted))
    if not unknown:
        return
    raise FactoryError(
        f"{name!r} cannot be built with {unknown}: {getattr(target, '__qualname__', target)} takes no keyword "
        f"argument {', '.join(map(repr, unknown))}.{did_you_mean(unknown, accepted)} It accepts: "
        f"{', '.join(accepted) or 'nothing'}"
    )


_IDENTIFIERS = r"[^\W\d]\w*(?:\.[^\W\d]\w*)*"
#: A dotted path as records and search-space files write it: ``package.module:Attribute`` (or ``:Outer.Inner``).
DOTTED_PATH = re.compile(rf"{_IDENTIFIERS}:{_IDENTIFIERS}")


def is_dotted_path(value: Any) -> bool:
    """Return True if ``value`` is a string of the form ``package.module:attribute`` (see :data:`DOTTED_PATH`)."""
    return isinstance(value, str) and DOTTED_PATH.fullmatch(value) is not None


def kwargs_target(factory: Any, optuna_classes: Mapping[Any, str], module: str) -> Any:
    """Return what receives a user's keyword arguments: a built-in's Optuna class (in ``module``), else ``factory``."""
    class_name = optuna_classes.get(factory)
    return factory if class_name is None else getattr(importlib.import_module(module), class_name)


def import_dotted(path: str) -> Any:
    """Return the object named by ``package.module:attr`` (or ``package.module.attr``).

    Example::

        import_dotted("optuna.samplers:TPESampler")
    """
    if ":" in path:
        module_name, _, attr_path = path.partition(":")
    else:
        module_name, _, attr_path = path.rpartition(".")
    if not module_name or not attr_path:
        raise DottedPathError(f"{path!r} is not a dotted path of the form package.module:attribute")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise DottedPathError(f"cannot import module {module_name!r} of {path!r}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise DottedPathError(f"module {module_name!r} has no attribute {attr_path!r} (from {path!r})") from exc
    return obj


def looks_dotted(name: str) -> bool:
    """Return True when ``name`` can only be meant for :func:`import_dotted`, not as a registered name."""
    return ":" in name or "." in name


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: the factory, which algorithms it serves and where it came from."""

    name: str
    obj: T
    source: str
    description: str
    algos: frozenset[str] = frozenset({ANY_ALGO})
    #: Registered by the registry's ``builtins`` function (a plug-in of the same name replaces it).
    builtin: bool = False

    def serves(self, algo: str | None) -> bool:
        return algo is None or ANY_ALGO in self.algos or algo in self.algos


def first_doc_line(obj: Any) -> str:
    """Return the first line of ``obj``'s docstring as plain text (see :func:`plain_text`), or an empty string."""
    doc = getattr(obj, "__doc__", None) or ""
    lines = [line.strip() for line in doc.strip().splitlines()]
    return plain_text(lines[0]) if lines else ""


#: A role (``:class:`~a.B```, ``:func:`f <a.f>```): group 1 is the tilde (show the last part), group 2 the target.
_RST_ROLE = re.compile(r":(?:[\w-]+:)+`(~?)([^`<]*?)(?:\s*<[^`>]*>)?`")
_RST_LITERAL = re.compile(r"``(.+?)``")
_RST_INTERPRETED = re.compile(r"(?<![\w`])`([^`]+)`(?![\w`])")


def plain_text(text: str) -> str:
    """Return ``text`` (a docstring line, a help string) without reStructuredText markup, for a terminal.

    A role keeps its target (after a tilde, its last part), a literal its text; single back-quotes become quotes.
    """
    text = _RST_ROLE.sub(lambda m: m.group(2).rpartition(".")[2] if m.group(1) else m.group(2), text)
    text = _RST_LITERAL.sub(r"\1", text)
    return _RST_INTERPRETED.sub(r"'\1'", text)


class Registry(Generic[T]):
    """Maps names to factories for one kind of extension (search space, sampler, pruner).

    ``builtins`` is called once, on first use, to register the built-in entries: this keeps
    ``import zoo_ext`` free of heavy imports.
    """

    def __init__(
        self,
        kind: str,
        group: str,
        builtins: Callable[[Registry[T]], None] | None = None,
        special: Callable[[str, str | None], T | None] | None = None,
    ) -> None:
        self.kind = kind
        self.group = group
        self._builtins = builtins
        #: Resolves name forms of this kind (e.g. a YAML file path) before dotted paths are tried.
        self._special = special
        self._entries: dict[tuple[str, str], Entry[T]] = {}
        self._lock = threading.RLock()
        self._loaded = False
        self._loading_builtins = False

    def register(
        self,
        name: str,
        obj: T,
        *,
        algos: Iterable[str] | str | None = None,
        source: str = "python",
        description: str | None = None,
    ) -> T:
        """Register ``obj`` under ``name`` (for ``algos``, default every algorithm) and return it."""
        if isinstance(algos, str):
            algos = [algos]
        algo_set = frozenset(algos) if algos else frozenset({ANY_ALGO})
        entry = Entry(name, obj, source, description or first_doc_line(obj), algo_set)
        with self._lock:
            if self._loading_builtins:
                self._add_builtin(entry)
            else:
                self._add_plugin(entry, replace=True)
        return obj

    def _same_name(self, entry: Entry[T], *, builtin: bool) -> list[tuple[str, str]]:
        """Return the keys of built-in (or plug-in) entries named like ``entry`` serving one of its algos."""
        return [
            key
            for key, other in self._entries.items()
            if key[1] == entry.name and other.builtin == builtin and _overlap(entry.algos, other.algos)
        ]

    def _warn_override(self, plugin: Entry[T], algos: frozenset[str]) -> None:
        where = "every algorithm" if ANY_ALGO in algos else ", ".join(sorted(algos))
        _logger.warning(
            "%s %r from %s replaces the built-in %s of that name (for %s)",
            self.kind, plugin.name, plugin.source, self.kind, where,
        )  # fmt: skip

    def _add_plugin(self, entry: Entry[T], *, replace: bool) -> None:
        """Add a plug-in's entry: it replaces built-ins of its name; ``replace``: other plug-ins too."""
        builtins = self._same_name(entry, builtin=True)
        if builtins:
            self._warn_override(entry, entry.algos)
            for key in builtins:
                if ANY_ALGO in entry.algos or key[0] in entry.algos:
                    del self._entries[key]
        for algo in entry.algos:
            if replace or (algo, entry.name) not in self._entries:
                self._entries[(algo, entry.name)] = entry

    def _add_builtin(self, entry: Entry[T]) -> None:
        """Add a built-in entry for the algos no plug-in of its name serves yet."""
        plugins = [self._entries[key] for key in self._same_name(entry, builtin=False)]
        if plugins:
            self._warn_override(plugins[0], plugins[0].algos)
        builtin = Entry(entry.name, entry.obj, entry.source, entry.description, entry.algos, builtin=True)
        for algo in entry.algos:
            if not any(algo in plugin.algos or ANY_ALGO in plugin.algos for plugin in plugins):
                self._entries[(algo, entry.name)] = builtin

    def _ensure_loaded(self) -> None:
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            if self._builtins is not None:
                self._loading_builtins = True
                try:
                    self._builtins(self)
                finally:
                    self._loading_builtins = False
            for ep in importlib.metadata.entry_points(group=self.group):
                algo, _, name = ep.name.rpartition(".")
                self._register_entry_point(ep, name, algo or ANY_ALGO)

    def _register_entry_point(self, ep: importlib.metadata.EntryPoint, name: str, algo: str) -> None:
        dist = ep.dist.name if ep.dist is not None else "?"
        lazy = _LazyEntryPoint(ep)
        entry = Entry(name, lazy, f"entry point {ep.value} ({dist})", "", frozenset({algo}))
        self._add_plugin(entry, replace=False)  # type: ignore[arg-type]

    def entries(self, algo: str | None = None) -> list[Entry[T]]:
        """Return every entry serving ``algo`` (all entries when None), sorted by name."""
        self._ensure_loaded()
        with self._lock:
            seen: dict[tuple[str, frozenset[str]], Entry[T]] = {}
            for (_, name), entry in self._entries.items():
                if entry.serves(algo):
                    seen[(name, entry.algos)] = entry
        return sorted((self._describe(e) for e in seen.values()), key=lambda e: (e.name, sorted(e.algos)))

    def _describe(self, entry: Entry[T]) -> Entry[T]:
        if isinstance(entry.obj, _LazyEntryPoint) and not entry.description:
            try:
                description = first_doc_line(entry.obj.load())
            except Exception as exc:  # noqa: BLE001 - a broken plug-in must not break listing
                description = f"(fails to load: {exc})"
            return Entry(entry.name, entry.obj, entry.source, description, entry.algos, entry.builtin)
        return entry

    def names(self, algo: str | None = None) -> list[str]:
        """Return the sorted names available for ``algo``."""
        return sorted({e.name for e in self.entries(algo)})

    def get(self, name: str, algo: str | None = None) -> T:
        """Return the factory for ``name``: registered, entry point, or dotted path.

        Raises :class:`UnknownNameError` (with the valid names) or :class:`DottedPathError`.
        """
        self._ensure_loaded()
        with self._lock:
            entry = self._entries.get((algo, name)) if algo is not None else None
            entry = entry or self._entries.get((ANY_ALGO, name))
            if entry is None and algo is None:
                entry = next((e for (_, n), e in self._entries.items() if n == name), None)
        if entry is not None:
            obj = entry.obj
            return obj.load() if isinstance(obj, _LazyEntryPoint) else obj  # type: ignore[return-value]
        special = self._special(name, algo) if self._special is not None else None
        if special is not None:
            return special
        if looks_dotted(name):
            return import_dotted(name)  # type: ignore[no-any-return]
        raise UnknownNameError(self.kind, name, self.names(algo), scope=f"--algo {algo}" if algo else "")

    def check(self, name: str, algo: str | None = None) -> None:
        """Raise like :meth:`get` if ``name`` does not resolve; load nothing heavy otherwise."""
        self.get(name, algo)


def _overlap(a: frozenset[str], b: frozenset[str]) -> bool:
    """Return True when two algorithm sets share an algorithm (``*`` shares every one)."""
    return ANY_ALGO in a or ANY_ALGO in b or bool(a & b)


class _LazyEntryPoint:
    """An entry point loaded only when its name is used."""

    def __init__(self, ep: importlib.metadata.EntryPoint) -> None:
        self.ep = ep
        self._obj: Any = None

    def load(self) -> Any:
        if self._obj is None:
            try:
                self._obj = self.ep.load()
            except ImportError as exc:
                raise DottedPathError(
                    f"entry point {self.ep.name!r} = {self.ep.value!r} does not import: {exc}"
                ) from exc
        return self._obj
