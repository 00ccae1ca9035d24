"""OptunaHub packages for ``--sampler hub:...`` and ``--pruner hub:...``, offline first.

A package is looked up in ``--hub-registry DIR`` (a local registry folder, with
``optunahub.load_local_module``), then in optunahub's cache, and only then on the network (never
when ``ZOO_EXT_HUB_OFFLINE`` is set). ``hub:[CATEGORY/]PACKAGE[:Class]`` names it; the category
defaults to the flag's (``samplers/`` for ``--sampler``, ``pruners/`` for ``--pruner``).
"""

from __future__ import annotations

import difflib
import os
import types
from pathlib import Path
from typing import Any

from zoo_ext.errors import BadInputError

__all__ = ["HUB_PREFIX", "HubError", "hub_cache_dir", "load_hub_class", "load_hub_package", "parse_hub_spec"]

HUB_PREFIX = "hub:"


class HubError(BadInputError, RuntimeError):
    """An OptunaHub package could not be loaded (not cached, not in the registry folder, no network)."""


def parse_hub_spec(spec: str, kind: str) -> tuple[str, str | None]:
    """Return (``category/name``, class name or None) for ``hub:[category/]name[:Class]`` given to ``--<kind>``.

    Raises :class:`HubError` when ``spec`` names no package (``hub:``, ``hub:pruners/``).
    """
    package, _, class_name = spec[len(HUB_PREFIX) :].partition(":")
    if "/" not in package:
        package = f"{kind}s/{package}"
    if not all(package.split("/")):
        example = "auto_sampler" if kind == "sampler" else "NAME"
        raise HubError(
            f"--{kind} {spec!r} names no OptunaHub package: use hub:[CATEGORY/]PACKAGE[:Class],"
            f" e.g. hub:{example} or hub:{kind}s/{example}"
        )
    return package, class_name or None


def hub_cache_dir(package: str) -> Path:
    """Return where optunahub caches ``package`` from the public registry's main branch."""
    from optunahub import _conf

    return Path(_conf.cache_home(), "github.com", "optuna", "optunahub-registry", "main", "package", package)


def _registry_roots(hub_registry: str) -> list[Path]:
    """Return the folders of ``hub_registry`` that may hold ``category/name`` packages (``DIR``, ``DIR/package``)."""
    root = Path(hub_registry)
    return [root, root / "package"]


def _registry_listing(hub_registry: str, package: str) -> str:
    """Return what ``hub_registry`` holds in ``package``'s category, for an error message."""
    if not Path(hub_registry).is_dir():
        return f"--hub-registry {hub_registry} is not a folder"
    category = package.rpartition("/")[0]
    found = sorted(
        f"{category}/{init.parent.name}"
        for root in _registry_roots(hub_registry)
        for init in (root / category).glob("*/__init__.py")
    )
    if not found:
        return f"--hub-registry {hub_registry} has no {category} packages ({category}/<name>/__init__.py)"
    close = difflib.get_close_matches(package, found, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"--hub-registry {hub_registry} has: {', '.join(found)}.{hint}"


def load_hub_package(package: str, *, hub_registry: str | None = None) -> types.ModuleType:
    """Return the OptunaHub module ``package`` (e.g. ``samplers/auto_sampler``).

    Looks in ``hub_registry`` (a local registry folder) first, then optunahub's cache, and only
    then on the network. Raises :class:`HubError` saying where it looked (and what the registry holds).
    """
    import optunahub

    if hub_registry is not None:
        for root in _registry_roots(hub_registry):
            if (root / package / "__init__.py").exists():
                return optunahub.load_local_module(package, registry_root=str(root))
    local = f"; {_registry_listing(hub_registry, package)}" if hub_registry is not None else ""
    cached = hub_cache_dir(package)
    if cached.exists():
        return optunahub.load_module(package)
    if os.environ.get("ZOO_EXT_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        raise HubError(f"OptunaHub package {package!r} is not cached at {cached} (ZOO_EXT_HUB_OFFLINE is set){local}")
    try:
        return optunahub.load_module(package)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubError(
            f"OptunaHub package {package!r} is not cached at {cached} and the hub is unreachable ({first_line}){local}"
        ) from exc


def load_hub_class(spec: str, base: type, *, kind: str, hub_registry: str | None) -> Any:
    """Return the ``base`` subclass that ``hub:[category/]name[:Class]`` names (``kind``: sampler or pruner).

    Without ``:Class`` the package must export exactly one ``base`` subclass.
    """
    package, class_name = parse_hub_spec(spec, kind)
    module = load_hub_package(package, hub_registry=hub_registry)
    if class_name is not None:
        try:
            return getattr(module, class_name)
        except AttributeError:
            raise HubError(f"OptunaHub package {package!r} has no {class_name!r}") from None
    names = getattr(module, "__all__", dir(module))
    classes = [
        getattr(module, n) for n in names
        if isinstance(getattr(module, n, None), type) and issubclass(getattr(module, n), base)
    ]  # fmt: skip
    if len(classes) != 1:
        found = ", ".join(c.__name__ for c in classes) or "no"
        raise HubError(f"OptunaHub package {package!r} exports {found} {kind}s: pick one with {spec}:ClassName")
    return classes[0]
