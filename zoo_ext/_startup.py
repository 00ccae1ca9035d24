"""What the ``zoo_ext.pth`` start-up hook runs: arms a lazy import hook, imports nothing heavy.

The hook waits for ``rl_zoo3.exp_manager`` (imported by ``rl_zoo3.train``) or ``rl_zoo3.train``
to finish loading, then calls :func:`zoo_ext.integration.install`. Processes that never import rl_zoo3
pay one string comparison per import.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import types
    from collections.abc import Sequence
    from importlib.abc import Loader
    from importlib.machinery import ModuleSpec

__all__ = ["DISABLE_ENV", "activate", "arm", "disabled"]

DISABLE_ENV = "ZOO_EXT_DISABLE"
_WATCHED = ("rl_zoo3.exp_manager", "rl_zoo3.train")


def disabled() -> bool:
    """Return True when ``ZOO_EXT_DISABLE`` asks for stock rl_zoo3 behaviour."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


class _Loader:
    """Runs the real loader, then activates zoo_ext (plain class: importlib.abc costs start-up time)."""

    def __init__(self, loader: Loader) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        activate()

    def __getattr__(self, name: str) -> object:
        return getattr(self._loader, name)


class _Finder:
    """Meta path finder that wraps the loader of the watched rl_zoo3 modules."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in _WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)  # type: ignore[assignment]
                return spec
        return None


def arm() -> None:
    """Install the import hook (or activate now if rl_zoo3 is already loaded)."""
    if any(isinstance(finder, _Finder) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())  # type: ignore[arg-type]
    if any(name in sys.modules for name in _WATCHED):
        activate()


def activate() -> None:
    """Patch rl_zoo3 now (it must be importable) and route zoo_ext's log messages to stderr."""
    import logging

    logger = logging.getLogger("zoo_ext")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[zoo_ext] %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    from zoo_ext import integration

    integration.install()


def _gym_packages_requested() -> bool:
    argv = sys.argv
    for i, arg in enumerate(argv):
        if arg == "--gym-packages":
            for value in argv[i + 1 :]:
                if value.startswith("-"):
                    break
                if value == "zoo_ext":
                    return True
    return False


def on_package_import() -> None:
    """Activate when ``zoo_ext`` is imported by ``--gym-packages zoo_ext`` in a running zoo."""
    if "rl_zoo3.exp_manager" in sys.modules and _gym_packages_requested():
        activate()


if not disabled():
    arm()
