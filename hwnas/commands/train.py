"""`hwnas train ARCH`: train an architecture from scratch and report its top-1."""

from __future__ import annotations

from pathlib import Path

from ..core.presets import resolve_arch
from ..runs import refuse_nonempty
from ..train.data import load_data
from ..train.loop import TrainConfig, train_in_run_folder
from .common import add_data_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train an architecture from scratch and report top-1",
        description="Train ARCH from scratch (SGD, cosine learning rate). Writes RUN_DIR/model.pt (hwnas weights "
                    "with the architecture, exportable), result.json (top-1), log.jsonl and a checkpoint per epoch.",
    )
    p.add_argument("arch", metavar="ARCH", help="architecture JSON (e.g. a search's arch.json) or preset:NAME")
    add_data_arguments(p)
    p.add_argument("--lr", type=float, default=0.025,
                   help="peak SGD learning rate, cosine decay (default 0.025: 0.1 per 256 images at batch 64)")
    p.add_argument("--weight-decay", type=float, default=4e-5)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    arch = resolve_arch(args.arch)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      label_smoothing=args.label_smoothing, seed=args.seed, max_batches=args.max_batches)
    refuse_nonempty(args.out, args.resume)
    data = load_data(args.data, args.train_resolution, args.seed, args.data_root)
    progress = not args.no_progress
    if progress:
        print(f"train {arch.hash} ({arch.space}) on {data.describe()}")
    result = train_in_run_folder(arch, data, cfg, args.out, resume=args.resume, progress=progress)
    print(f"top-1 {result.top1:.2f}% on {data.name} val after {result.epochs_done} epochs "
          f"({result.wall_s:.1f} s); wrote {Path(args.out) / 'model.pt'} and {Path(args.out) / 'result.json'}")
    return 0
