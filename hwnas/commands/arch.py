"""`hwnas arch sample|summary|show` and `hwnas presets`."""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..arch import resolve_arch, save_arch
from ..arch import Arch
from ..errors import ArchError
from ..models import arch_model, space_of
from ..presets import PRESETS, get_preset
from ..spaces import get_space
from ..summary import summarize


def register(subparsers) -> None:
    arch = subparsers.add_parser("arch", help="sample, inspect and summarise architectures")
    sub = arch.add_subparsers(dest="arch_command", metavar="SUBCOMMAND", required=True)

    sample = sub.add_parser("sample", help="sample a random architecture of a space")
    sample.add_argument("--space", required=True)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", default=None, help="write the JSON here (default: print it)")
    sample.add_argument("--force", action="store_true", help="replace --out if it exists")
    sample.set_defaults(func=cmd_sample)

    summary = sub.add_parser("summary", help="params, MACs and activations of an architecture")
    summary.add_argument("arch", metavar="ARCH", help="architecture JSON file or preset:NAME")
    summary.add_argument("--resolution", type=int, default=None, help="input resolution (default: the space's)")
    summary.add_argument("--json", action="store_true", help="print JSON (keys params, macs, activations)")
    summary.set_defaults(func=cmd_summary)

    show = sub.add_parser("show", help="the timm arch_def of an architecture")
    show.add_argument("arch", metavar="ARCH", help="architecture JSON file or preset:NAME")
    show.set_defaults(func=cmd_show)

    presets = subparsers.add_parser("presets", help="list the built-in published architectures")
    presets.set_defaults(func=cmd_presets)


def cmd_sample(args) -> int:
    space = get_space(args.space)
    arch = Arch.create(space, space.sample(random.Random(args.seed)))
    if args.out:
        if Path(args.out).exists() and not args.force:
            raise ArchError(f"{args.out} exists; pass --force to replace it or choose another --out")
        save_arch(arch, args.out)
        print(f"wrote {args.out} ({arch.space}, hash {arch.hash})")
    else:
        print(json.dumps(arch.to_dict(), indent=2, sort_keys=True))
    return 0


def cmd_summary(args) -> int:
    arch = resolve_arch(args.arch)
    space = space_of(arch, resolution=args.resolution)
    summary = summarize(arch_model(arch), space.resolution)
    doc = {"arch": arch.hash, "space": arch.space, **summary.to_dict()}
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    print(f"{args.arch} ({arch.space}, hash {arch.hash}) at {space.resolution}x{space.resolution}")
    print(f"  params       {summary.params:>14,}")
    print(f"  MACs         {summary.macs:>14,}")
    print(f"  activations  {summary.activations:>14,}")
    return 0


def cmd_show(args) -> int:
    arch = resolve_arch(args.arch)
    space = space_of(arch)
    print(json.dumps({"space": arch.space, "hash": arch.hash, "arch_def": arch.arch_def(space)}, indent=2))
    return 0


def cmd_presets(args) -> int:
    for name, (space_name, _, timm_name) in sorted(PRESETS.items()):
        print(f"preset:{name:<12} space {space_name:<8} same network as timm '{timm_name}' (hash {get_preset(name).hash})")
    return 0
