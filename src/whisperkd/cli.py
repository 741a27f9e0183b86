"""One entry point: ``whisperkd <command> ...``.

Each command lives in ``whisperkd.commands.<name>`` and exposes ``register(subparsers)``,
which adds its parser (a :class:`CommandParser`) and sets ``func(args) -> int``. A :class:`UserError` becomes
one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from tqdm.contrib.logging import logging_redirect_tqdm

from whisperkd.errors import UserError

COMMAND_MODULES = (
    "demo",
    "models",
    "transcribe",
    "corpus",
    "distill",
    "evaluate",
    "report",
    "export",
    "cache",
    "label",
    "tune",
)


class CommandParser(argparse.ArgumentParser):
    """A command's parser. ``sub.add_parser(name, intermixed=True, ...)``: its options may come anywhere among
    its positionals, e.g. ``whisperkd distill CONFIG optim.lr=1e-4 --dry-run`` (argparse's intermixed parsing)."""

    def __init__(self, *args, intermixed: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.intermixed = intermixed
        self._in_intermixed = False

    def parse_known_args(self, args=None, namespace=None):
        # The subcommand action calls this; parse_known_intermixed_args calls it back (Python < 3.13).
        if not self.intermixed or self._in_intermixed:
            return super().parse_known_args(args, namespace)
        self._in_intermixed = True
        try:
            namespace, extras = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._in_intermixed = False
        if extras:  # said here, with this command's usage
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whisperkd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"whisperkd.commands.{name}").register(sub)
    return parser


def quiet_libraries() -> None:
    """Keep library progress bars and advisory warnings out of the command's output."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


class _StderrHandler(logging.StreamHandler):
    """Plain lines on whatever ``sys.stderr`` is when a record comes (pytest's capture replaces it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def show_progress() -> None:
    """The library's progress messages (loggers under ``whisperkd``, INFO and up) as plain lines on stderr."""
    logger = logging.getLogger("whisperkd")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    show_progress()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with logging_redirect_tqdm(loggers=[logging.getLogger("whisperkd")]):  # messages above progress bars
            return int(args.func(args) or 0)
    except UserError as err:
        print(f"whisperkd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"whisperkd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
