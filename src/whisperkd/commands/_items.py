"""Options anywhere among ``CONFIG [KEY=VALUE ...]`` items, shared by distill, cache and tune."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from whisperkd.errors import UserError


def reparse_items(args, prog: str, add_options: Callable[[argparse.ArgumentParser], None]) -> list[str]:
    """Parse the options found among ``args.items`` onto ``args`` (a value given there wins over the
    default) and return the remaining positional items (the config path and the overrides)."""
    again = argparse.ArgumentParser(prog=prog, add_help=False)
    add_options(again)
    again.add_argument("rest", nargs="*")
    more = again.parse_intermixed_args(args.items)
    for name, value in vars(more).items():
        if name != "rest" and value is not None and value is not False:
            setattr(args, name, value)
    return more.rest


def config_and_overrides(args, prog: str, add_options: Callable[[argparse.ArgumentParser], None],
                         missing: str) -> tuple[str, list[str]]:
    """:func:`reparse_items`, then (config path, overrides); UserError ``missing`` when no config comes first."""
    rest = reparse_items(args, prog, add_options)
    if not rest or "=" in rest[0]:
        raise UserError(missing)
    return rest[0], rest[1:]
