"""zoo_ext: registered search spaces, samplers and pruners for ``python -m rl_zoo3.train -optimize``.

Importing this package is cheap: the public functions load their modules on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zoo_ext._startup import on_package_import as _on_package_import

if TYPE_CHECKING:
    from zoo_ext.presets import register_preset
    from zoo_ext.pruners import register_pruner
    from zoo_ext.samplers import register_sampler
    from zoo_ext.spaces import register_search_space, register_search_space_file

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "register_preset",
    "register_pruner",
    "register_sampler",
    "register_search_space",
    "register_search_space_file",
]

_LAZY = {
    "register_search_space": "zoo_ext.spaces",
    "register_search_space_file": "zoo_ext.spaces",
    "register_sampler": "zoo_ext.samplers",
    "register_pruner": "zoo_ext.pruners",
    "register_preset": "zoo_ext.presets",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo_ext' has no attribute {name!r}")


_on_package_import()
