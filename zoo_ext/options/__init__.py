"""One definition of every zoo_ext option: used for the CLI flags and the YAML ``zoo_ext:`` block.

A value given on the command line wins over the env's ``zoo_ext:`` block in the hyperparams
YAML, which wins over the default::

    Pendulum-v1:
      n_timesteps: !!float 1e5
      policy: 'MlpPolicy'
      zoo_ext:
        search_space: zoo
        sampler: random
        pruner: hyperband
        pruner_kwargs: {reduction_factor: 2}

By concern: ``_table`` (:data:`OPTIONS`, :class:`ZooOptions`), ``_flags`` (the command-line
flags), ``_resolve`` (:func:`resolve`, :func:`check`), ``_paths`` (:func:`check_writable_folder`).
"""

from __future__ import annotations

from zoo_ext.options._flags import add_arguments
from zoo_ext.options._paths import check_writable_folder
from zoo_ext.options._resolve import check, resolve
from zoo_ext.options._table import _BY_DEST as _BY_DEST
from zoo_ext.options._table import OPTIONS, YAML_KEY, Option, OptionError, ZooOptions, as_dict

__all__ = [
    "OPTIONS",
    "YAML_KEY",
    "Option",
    "OptionError",
    "ZooOptions",
    "add_arguments",
    "as_dict",
    "check",
    "check_writable_folder",
    "resolve",
]
