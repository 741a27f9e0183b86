"""One entry point: ``whisperkd <command> ...``.

Each command lives in ``whisperkd.commands.<name>`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func(args) -> int``. A :class:`UserError` becomes one line
on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from whisperkd.errors import UserError

COMMAND_MODULES = (
    "demo",
    "models",
    "transcribe",
    "corpus",
    "distill",
    "evaluate",
    "report",
    "cache",
    "label",
    "tune",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whisperkd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"whisperkd.commands.{name}").register(sub)
    return parser


def quiet_libraries() -> None:
    """Keep library progress bars and advisory warnings out of the command's output."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"whisperkd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"whisperkd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
