"""`hwnas` command line: argparse subcommands, `main(argv) -> int`, testable in-process.

Each command group lives in `hwnas/commands/<group>.py` with a `register(subparsers)` function
that adds its parsers and sets `func(args) -> int` on them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from . import __version__
from .errors import HwnasError

COMMAND_MODULES = ("spaces", "arch", "profile", "lut", "predict", "search", "runs", "train", "export", "transfer",
                   "fewshot")


class Parser(argparse.ArgumentParser):
    """argparse, but a value that starts with '-' and a digit (`--latency-budget -5ms`, `--seed -1`)
    is a value, not an unknown flag: it reaches the option's own check and its own message.
    Subparsers inherit the class (add_subparsers uses the parent's type)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str):
        """Bad usage is one line, like every other error, naming where to look (not the whole usage)."""
        command = self.prog.removeprefix("hwnas").strip()
        print(f"hwnas: error: {command + ': ' if command else ''}{message}; see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="hwnas",
        description="Hardware-aware mobile model design: profile a device, search under a latency budget, export.",
    )
    parser.add_argument("--version", action="version", version=f"hwnas {__version__}")
    parser.set_defaults(func=None)  # each command's parser sets its own
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"hwnas.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (`hwnas space show fbnet | head`): stop quietly, as `cat` does; point
        # stdout at /dev/null so the interpreter's final flush does not raise again
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # stdout without a descriptor (in-process callers)
            pass
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    if args.func is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HwnasError as exc:
        print(f"hwnas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwnas: interrupted; finished work is saved (rerun with --resume where offered)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
