"""`hwnas fewshot plan` and `hwnas fewshot fit`: a latency table of a new device (a phone, a board
no profiler here reaches) from N architectures measured on it and what is known of other devices
(the jobs: hwnas.jobs.fewshot; docs/profiling.md, "Few-shot latency on a new device")."""

from __future__ import annotations

from ..jobs.fewshot import fit, plan
from .common import SEED


def register(subparsers) -> None:
    p = subparsers.add_parser("fewshot", help="latency table of a new device from a few end-to-end measurements")
    sub = p.add_subparsers(dest="fewshot_command", metavar="SUBCOMMAND", required=True)

    plan = sub.add_parser("plan", help="pick N architectures to measure on the new device: arch JSON, ONNX, a CSV to fill")
    plan.add_argument("--space", required=True, help="a layer-wise space, e.g. fbnet_cifar100")
    plan.add_argument("--n", type=int, default=10, help="architectures to measure (default 10; at least 3)")
    plan.add_argument("--out", required=True, metavar="DIR",
                      help="folder for archs/*.json, onnx/*.onnx and measured.csv (arch,latency_ms: fill latency_ms)")
    plan.add_argument("--known", nargs="*", default=[], metavar="K",
                      help="known devices (latency tables or HELP-layout CSVs): the architectures are spread over "
                           "their predicted latency range (default: over multiply-adds)")
    plan.add_argument("--seed", type=SEED, default=0)
    plan.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                      help="ONNX exporter (default torchscript: opset 17, fast; dynamo: opset 18)")
    plan.add_argument("--force", action="store_true", help="overwrite an existing plan (and its measured.csv)")
    plan.set_defaults(func=cmd_plan)

    fit = sub.add_parser("fit", help="fit the new device's table from measured.csv and the known devices")
    fit.add_argument("--space", required=True)
    fit.add_argument("--measured", required=True, metavar="CSV",
                     help="arch,latency_ms (arch: an architecture JSON, relative to the CSV; ms measured on the device)")
    fit.add_argument("--known", nargs="+", required=True, metavar="K",
                     help="known devices: latency tables (JSON, e.g. `hwnas lut import --format hwnasbench`) and/or "
                          "CSVs of architectures measured end to end (HELP's layout: op_idx_list, one column of ms "
                          "per device)")
    fit.add_argument("--device", default=None, help="the new device's name (default: the measured CSV's folder name)")
    fit.add_argument("--out", required=True, metavar="NEW.json")
    fit.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    fit.set_defaults(func=cmd_fit)


def cmd_plan(args) -> int:
    done = plan(args.space, args.n, args.out, args.known, args.seed, args.exporter, args.force)
    how = f"the predicted latency range of {done.known} known devices" if done.known else "multiply-adds"
    print(f"{done.n} architectures of {done.space.name} spread over {how} (seed {args.seed}): {done.out}/archs/*.json, "
          f"{done.out}/onnx/*.onnx (batch 1, {done.space.resolution}px, opset {done.opset})")
    print(f"measure each ONNX file end to end on the device (median ms), fill {done.csv_path}, then run "
          f"`hwnas fewshot fit --space {done.space.name} --measured {done.csv_path} --known K... --out NEW.json`")
    return 0


def cmd_fit(args) -> int:
    done = fit(args.space, args.measured, args.known, args.out, args.device, args.force)
    result = done.fit
    top = sorted(zip(result.weights, done.models), key=lambda wm: -wm[0])[:3]
    mix = ", ".join(f"{m.name} {w / max(result.weights.sum(), 1e-12):.0%}" for w, m in top if w > 0) or "none"
    print(f"{done.out}: {done.device}, {done.space.name} from {result.n} measured architectures and "
          f"{len(done.models)} known devices (mostly {mix})")
    print(f"  leave-one-out on the {result.n}: MAPE {result.loo_mape_pct:.1f}%, Spearman {result.loo_spearman:.3f} "
          f"(the table's stated error); predict with `hwnas predict --lut {done.out} ARCH`")
    return 0
