"""zoo_ext's command-line flags, from the option table; usage errors printed as argparse prints them."""

from __future__ import annotations

import argparse
from typing import Any

from zoo_ext.options._table import OPTIONS, OptionError

__all__ = ["add_arguments"]


def add_arguments(parser: argparse.ArgumentParser, store_dict: type[argparse.Action]) -> None:
    """Add zoo_ext's own flags to ``parser`` (stock flags it widens are already there); help texts in plain text."""
    from zoo_ext.registry import plain_text

    group = parser.add_argument_group("zoo_ext")
    store_dict = _with_quoting_hint(store_dict)
    for option in OPTIONS:
        if option.stock:
            continue
        text = plain_text(option.help)
        if option.kind == "dict":
            group.add_argument(option.flag, dest=option.dest, type=str, nargs="+", action=store_dict, help=text)
        elif option.kind == "flag":
            group.add_argument(option.flag, dest=option.dest, action="store_true", default=None, help=text)
        elif option.kind == "list":
            group.add_argument(option.flag, dest=option.dest, type=str, nargs="+", default=None, help=text)
        elif option.kind == "int":
            group.add_argument(option.flag, dest=option.dest, type=int, default=None, help=text)
        elif option.kind == "float":
            group.add_argument(option.flag, dest=option.dest, type=float, default=None, help=text)
        else:
            group.add_argument(option.flag, dest=option.dest, type=str, default=None, help=text)


def _with_quoting_hint(store_dict: type[argparse.Action]) -> type[argparse.Action]:
    """Return ``store_dict`` (rl_zoo3's ``key:value`` action, which ``eval``s each value) refusing a bad value.

    A bare word such as ``restart_strategy:ipop`` is a NameError in ``eval``: the message says to quote it.
    """

    class QuotingStoreDict(store_dict):  # type: ignore[misc,valid-type]
        def __call__(
            self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: Any = None
        ) -> None:
            parsed: dict[str, Any] = {}
            for item in values:
                key, sep, value = item.partition(":")
                if not sep or not key:
                    raise OptionError(f"{option_string} {item!r}: expected key:value")
                try:
                    super().__call__(parser, namespace, [item], option_string)
                except (NameError, SyntaxError) as exc:
                    raise OptionError(
                        f"{option_string} {item!r}: values are Python expressions ({type(exc).__name__}: {exc});"
                        f" to pass a string, quote it: {key}:\"'{value}'\""
                    ) from None
                parsed.update(getattr(namespace, self.dest))
            setattr(namespace, self.dest, parsed)

    return QuotingStoreDict
