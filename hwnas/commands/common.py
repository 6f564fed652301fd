"""Flags shared by the commands that train networks (`hwnas search`, `hwnas train`)."""

from __future__ import annotations

import argparse

from ..train.data import BUILTIN


def at_least(minimum: int):
    """An argparse type: an integer >= `minimum` (refused at parse time, before any work)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


#: seeds are non-negative (numpy and torch refuse negative seeds deep in the work)
SEED = at_least(0)
#: counts that mean "at least one" (a cap of 0 is not "no cap")
COUNT = at_least(1)


def add_data_arguments(parser: argparse.ArgumentParser, data_required: bool = True) -> None:
    """`data_required=False`: the command checks itself when --data is needed (search: not with a
    tabular evaluator)."""
    parser.add_argument("--data", required=data_required, default=None, metavar="DIR|" + "|".join(BUILTIN),
                        help="ImageFolder directory with train/ and val/ subfolders, 'digits' (scikit-learn's bundled "
                             "8x8 digits, offline) or 'cifar10' (torchvision; downloads once, needs the network)"
                             + ("" if data_required else "; not with --evaluator nb201 (the benchmark trained "
                                                          "every candidate)"))
    parser.add_argument("--data-root", default=None, help="where cifar10 is cached (default ~/.cache/hwnas/cifar10)")
    parser.add_argument("--train-resolution", type=int, default=32,
                        help="image size the network trains at (default 32). Independent of the latency: the "
                             "architecture is resolution-independent, and its latency comes from the LUT at the "
                             "space's own resolution (e.g. fbnet at 224)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10,
                        help="training epochs (fbnet: of the supernet; random: of each sampled architecture)")
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (must be new or empty)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in RUN_DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--max-batches", type=COUNT, default=None, metavar="N",
                        help="cap on training batches per epoch: each epoch then sees a different random subset "
                             "(fits a search into a CPU-time budget; also for smoke tests)")
