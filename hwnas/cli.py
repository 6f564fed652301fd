"""`hwnas` command line: argparse subcommands, `main(argv) -> int`, testable in-process.

Each command group lives in `hwnas/commands/<group>.py` with a `register(subparsers)` function
that adds its parsers and sets `func(args) -> int` on them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import HwnasError

COMMAND_MODULES = ("spaces", "arch", "profile", "lut", "predict", "search", "train", "export", "transfer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwnas",
        description="Hardware-aware mobile model design: profile a device, search under a latency budget, export.",
    )
    parser.add_argument("--version", action="version", version=f"hwnas {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"hwnas.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    if not getattr(args, "func", None):
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
