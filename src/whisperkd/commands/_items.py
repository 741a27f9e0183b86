"""Options anywhere among ``CONFIG [KEY=VALUE ...]`` items, shared by distill, cache and tune."""

from __future__ import annotations

import argparse
from collections.abc import Callable


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
