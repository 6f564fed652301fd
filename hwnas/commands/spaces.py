"""`hwnas spaces` and `hwnas space show`."""

from __future__ import annotations

import json

from ..core.spaces import SPACES, LayerwiseSpace, get_space


def register(subparsers) -> None:
    p = subparsers.add_parser("spaces", help="list search spaces")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_spaces)

    space = subparsers.add_parser("space", help="inspect a search space")
    space_sub = space.add_subparsers(dest="space_command", metavar="SUBCOMMAND", required=True)
    show = space_sub.add_parser("show", help="decisions, layers, shapes and candidates of a space")
    show.add_argument("space", metavar="SPACE")
    show.add_argument("--resolution", type=int, default=None, help="input resolution (default: the space's)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_space_show)


def cmd_spaces(args) -> int:
    rows = []
    for name in sorted(SPACES):
        space = get_space(name)
        rows.append({
            "name": name,
            "decisions": len(space.decisions),
            "log10_size": round(space.log10_size(), 2),
            "resolution": space.resolution,
            "description": space.description,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'space':<16} {'decisions':>9} {'log10(#archs)':>13}  description")
    for r in rows:
        print(f"{r['name']:<16} {r['decisions']:>9} {r['log10_size']:>13.2f}  {r['description']}")
    return 0


def space_document(space) -> dict:
    doc = {
        "name": space.name,
        "description": space.description,
        "resolution": space.resolution,
        "num_classes": space.num_classes,
        "log10_size": space.log10_size(),
        "stem_size": space.build_config.stem_size,
        "num_features": space.build_config.num_features,
        "decisions": [{"name": d.name, "choices": list(d.choices)} for d in space.decisions],
        "unique_ops": len(space.all_ops()),
    }
    if isinstance(space, LayerwiseSpace):
        doc["layers"] = [
            {
                "name": layer.name,
                "stage": layer.stage,
                "input_shape": [layer.in_chs, layer.in_hw, layer.in_hw],
                "out_chs": layer.out_chs,
                "stride": layer.stride,
                "candidates": {c: layer.block_string(c) for c in layer.candidates},
            }
            for layer in space.layers
        ]
    return doc


def cmd_space_show(args) -> int:
    space = get_space(args.space, resolution=args.resolution)
    doc = space_document(space)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{space.name}: {space.description}")
    print(f"input {space.resolution}x{space.resolution}, {space.num_classes} classes, stem c{doc['stem_size']}, "
          f"head c{doc['num_features']}, 10^{doc['log10_size']:.2f} architectures, {doc['unique_ops']} unique ops")
    if "layers" in doc:
        print(f"{'layer':<8} {'stage':>5} {'input (CxHxW)':>15} {'out':>5} {'s':>2}  candidates")
        for layer in doc["layers"]:
            shape = "x".join(str(v) for v in layer["input_shape"])
            print(f"{layer['name']:<8} {layer['stage']:>5} {shape:>15} {layer['out_chs']:>5} {layer['stride']:>2}  "
                  + " ".join(layer["candidates"]))
    else:
        for d in doc["decisions"]:
            print(f"{d['name']:<12} {' '.join(d['choices'])}")
    return 0
