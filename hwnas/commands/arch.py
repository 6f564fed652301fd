"""`hwnas arch sample|summary|show|import` and `hwnas presets`."""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..core.arch import save_arch
from ..core.presets import resolve_arch
from ..core.arch import Arch
from ..errors import ArchError
from ..core.models import arch_model, space_of
from ..core.ofa_config import load_ofa_config
from ..core.presets import PRESETS, get_preset
from ..core.spaces import get_space
from ..core.spaces.fbnet_cifar import parse_op_indices
from ..core.spaces.nb201 import EDGES, NB201Space, nb201_string, parse_nb201_string
from ..core.spaces.darts import DartsSpace
from ..core.darts import genotype_document, parse_genotype
from ..core.summary import summarize
from .common import SEED


def register(subparsers) -> None:
    arch = subparsers.add_parser("arch", help="sample, inspect and summarise architectures")
    sub = arch.add_subparsers(dest="arch_command", metavar="SUBCOMMAND", required=True)

    sample = sub.add_parser("sample", help="sample a random architecture of a space")
    sample.add_argument("--space", required=True)
    sample.add_argument("--seed", type=SEED, default=0)
    sample.add_argument("--out", default=None, help="write the JSON here (default: print it)")
    sample.add_argument("--force", action="store_true", help="replace --out if it exists")
    sample.set_defaults(func=cmd_sample)

    summary = sub.add_parser("summary", help="params, MACs and activations of an architecture")
    summary.add_argument("arch", metavar="ARCH", help="architecture JSON file or preset:NAME")
    summary.add_argument("--resolution", type=int, default=None, help="input resolution (default: the space's)")
    summary.add_argument("--json", action="store_true", help="print JSON (keys params, macs, activations)")
    summary.set_defaults(func=cmd_summary)

    show = sub.add_parser("show", help="the timm arch_def of an architecture (for nb201: its cell and string; "
                                          "for darts: its DARTS genotype and cells)")
    show.add_argument("arch", metavar="ARCH", help="architecture JSON file or preset:NAME")
    show.set_defaults(func=cmd_show)

    imp = sub.add_parser("import", help="an architecture of ours from a Once-for-All net.config, an NB201 string, "
                                        "a DARTS genotype or an HW-NAS-Bench/HELP FBNet op-index list")
    imp.add_argument("file", metavar="SOURCE", help="ofa: the JSON file that OFA's get_active_subnet().config "
                     "(net.config) holds; nb201: the NB201 string itself, e.g. '|nor_conv_3x3~0|+|...|'; op-indices: "
                     "the 22 op indices themselves, e.g. '0 3 8 0 0 ...' or '[0, 3, 8, ...]'; darts: the genotype as DARTS "
                     "writes it, 'Genotype(normal=[...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=...)'")
    imp.add_argument("--format", required=True, choices=["ofa", "nb201", "op-indices", "darts"],
                     help="ofa: an OFA MobileNetV3 w1.2 subnet, imported into space mobilenetv3_w12; "
                          "nb201: a NAS-Bench-201 cell string, imported into space nb201; op-indices: HW-NAS-Bench's "
                          "or HELP's FBNet op_idx_list (22 integers 0..8: k3_e1, k3_e1_g2, k3_e3, k3_e6, k5_e1, "
                          "k5_e1_g2, k5_e3, k5_e6, skip), imported into space fbnet_cifar100; darts: a DARTS genotype, "
                          "imported into --space (darts, darts_small, darts_tiny)")
    imp.add_argument("--space", default="darts", help="--format darts: the DARTS space of the network's size "
                                                      "(default darts: C=36, 20 cells)")
    imp.add_argument("--out", required=True, help="architecture JSON to write")
    imp.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    imp.set_defaults(func=cmd_import)

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
    if isinstance(space, NB201Space):
        doc["nb201_string"] = nb201_string(arch.choice_map)
    if isinstance(space, DartsSpace):
        doc["genotype"] = str(space.genotype(arch.choice_map))
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    print(f"{args.arch} ({arch.space}, hash {arch.hash}) at {space.resolution}x{space.resolution}")
    if "nb201_string" in doc:
        print(f"  cell         {doc['nb201_string']}")
    if "genotype" in doc:
        print(f"  genotype     {doc['genotype']}")
    print(f"  params       {summary.params:>14,}")
    print(f"  MACs         {summary.macs:>14,}")
    print(f"  activations  {summary.activations:>14,}")
    return 0


def cmd_show(args) -> int:
    arch = resolve_arch(args.arch)
    space = space_of(arch)
    if isinstance(space, NB201Space):
        print(json.dumps({"space": arch.space, "hash": arch.hash, **nb201_document(arch.choice_map)}, indent=2))
        return 0
    if isinstance(space, DartsSpace):
        doc = genotype_document(space.genotype(arch.choice_map))
        print(json.dumps({"space": arch.space, "hash": arch.hash, "channels": space.channels, "cells": space.cells,
                          **doc}, indent=2))
        return 0
    print(json.dumps({"space": arch.space, "hash": arch.hash, "arch_def": arch.arch_def(space)}, indent=2))
    return 0


def nb201_document(choices) -> dict:
    """An nb201 cell: its NB201 string, and each node as the sum of its non-`none` input edges."""
    nodes = []
    for j in (1, 2, 3):
        terms = [f"{choices[name]}(node {i})" for name, to, i in EDGES if to == j and choices[name] != "none"]
        nodes.append(f"node {j} = {' + '.join(terms) or '0'}")
    return {"nb201_string": nb201_string(choices), "cell": nodes, "output": "node 3"}


def cmd_import(args) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ArchError(f"{out} exists; pass --force to overwrite it or choose another --out")
    if args.format == "nb201":
        arch = Arch.create(get_space("nb201"), parse_nb201_string(args.file))
        save_arch(arch, out)
        print(f"wrote {out} ({arch.space}, hash {arch.hash}, cell {nb201_string(arch.choice_map)})")
        return 0
    if args.format == "darts":
        space = get_space(args.space)
        if not isinstance(space, DartsSpace):
            raise ArchError(f"--space {args.space} is not a DARTS space; use darts, darts_small or darts_tiny")
        arch = Arch.create(space, parse_genotype(args.file).to_choices())
        save_arch(arch, out)
        print(f"wrote {out} ({arch.space}, hash {arch.hash}, genotype {space.genotype(arch.choice_map)})")
        return 0
    if args.format == "op-indices":
        space = get_space("fbnet_cifar100")
        arch = Arch.create(space, space.choices_from_indices(parse_op_indices(args.file)))
        save_arch(arch, out)
        print(f"wrote {out} ({arch.space}, hash {arch.hash}, ops {' '.join(map(str, space.indices(arch.choice_map)))})")
        return 0
    arch, classes = load_ofa_config(args.file)
    save_arch(arch, out)
    depths = ", ".join(arch.choice_map[f"s{i}.depth"] for i in range(1, 6))
    note = "" if classes == 1000 else (f"; its classifier has {classes} classes: predict it with --num-classes {classes} "
                                       "(a published table derives that head from its 1000-class one)")
    print(f"wrote {out} ({arch.space}, hash {arch.hash}, stage depths {depths}{note})")
    return 0


def cmd_presets(args) -> int:
    for name, (space_name, _, timm_name) in sorted(PRESETS.items()):
        same = f"same network as timm '{timm_name}'" if timm_name else "the published cell (see docs/search.md)"
        print(f"preset:{name:<12} space {space_name:<8} {same} (hash {get_preset(name).hash})")
    return 0
