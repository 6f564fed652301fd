"""`hwnas fewshot plan` and `hwnas fewshot fit`: a latency table of a new device (a phone, a board
no profiler here reaches) from N architectures measured on it and what is known of other devices
(hwnas.latency_tables.fewshot; docs/profiling.md, "Few-shot latency on a new device")."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from ..arch import Arch, load_arch, save_arch
from ..errors import ArchError, HwnasError, LutError
from ..jsonio import atomic_write_bytes, atomic_write_text
from ..latency_tables import fewshot as fs
from ..latency_tables.table import LatencyTable
from ..runs import check_writable
from ..spaces import get_space
from .common import SEED

CSV_HEADER = ("arch", "latency_ms")


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


# --- reading ------------------------------------------------------------------------------------
def read_known(paths: list[str], encoding: fs.Encoding) -> tuple[list, list]:
    """(tables, csvs) of the --known files; a file of neither kind is refused by name."""
    tables, csvs = [], []
    for text in paths:
        path = Path(text)
        if not path.is_file():
            raise LutError(f"--known {path} does not exist; name latency tables (JSON) or HELP-layout CSVs")
        if path.suffix.lower() == ".csv":
            indices, columns = fs.read_measured_csv(path, encoding.space)
            csvs.append((str(path), indices, columns))
        elif path.suffix.lower() == ".json":
            tables.append((str(path), LatencyTable.load(path)))
        else:
            raise LutError(f"--known {path} is neither a latency table (.json) nor a CSV of measured architectures "
                           "(.csv, HELP's layout)")
    return tables, csvs


def read_measured(path: str | Path, space) -> list[tuple[Arch, float, str]]:
    """The filled plan: (architecture, ms, its path as written) per row, every row checked."""
    path = Path(path)
    if not path.is_file():
        raise LutError(f"--measured {path} does not exist; make it with `hwnas fewshot plan --out DIR` and fill "
                       "DIR/measured.csv")
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise LutError(f"cannot read {path} as a CSV ({exc})".splitlines()[0]) from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows or tuple(c.strip() for c in rows[0]) != CSV_HEADER:
        raise LutError(f"{path}: the header is not {','.join(CSV_HEADER)}; use the measured.csv `hwnas fewshot plan` "
                       "wrote")
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise LutError(f"{path} line {line}: {len(row)} fields, expected 2 (arch,latency_ms); fix the row")
        ref, text = row[0].strip(), row[1].strip()
        if not text:
            raise LutError(f"{path} line {line}: latency_ms of {ref} is empty; measure it on the device and fill in "
                           "the ms, or delete the row")
        try:
            value = float(text)
        except ValueError:
            raise LutError(f"{path} line {line}: latency_ms {text!r} is not a number; write the measured ms, "
                           "e.g. 12.5") from None
        if not math.isfinite(value) or value <= 0:
            raise LutError(f"{path} line {line}: latency_ms {text} is not a latency; write the measured ms (> 0)")
        arch_path = path.parent / ref
        if not ref or not arch_path.is_file():
            raise LutError(f"{path} line {line}: architecture file {ref!r} does not exist (paths are relative to "
                           f"{path.parent}); keep the archs/ folder `hwnas fewshot plan` wrote beside the CSV")
        try:
            arch = load_arch(arch_path)
        except ArchError as exc:
            raise LutError(f"{path} line {line}: {exc}") from None
        if arch.space != space.name:
            raise LutError(f"{path} line {line}: {ref} is an architecture of {arch.space!r}, not {space.name!r}; "
                           f"fit with --space {arch.space}")
        out.append((arch, value, ref))
    if len(out) < fs.MIN_MEASURED:
        raise LutError(f"{path} holds {len(out)} measured architectures; a fit needs at least {fs.MIN_MEASURED} "
                       "(10 or more recommended): `hwnas fewshot plan --n 10`")
    return out


# --- commands -----------------------------------------------------------------------------------
def cmd_plan(args) -> int:
    from ..export.model import prepare_model
    from ..export.onnx_export import OnnxSpec, export_onnx

    if args.n < fs.MIN_MEASURED:
        raise HwnasError(f"--n {args.n}: a few-shot fit needs at least {fs.MIN_MEASURED} architectures (10 or more "
                         "recommended)")
    space = get_space(args.space)
    encoding = fs.Encoding.of(space)
    out = Path(args.out)
    csv_path = out / "measured.csv"
    if csv_path.exists() and not args.force:
        raise HwnasError(f"{csv_path} exists (a plan, perhaps filled already); choose another --out or pass --force")
    check_writable(out)
    tables, csvs = read_known(args.known, encoding)
    models = fs.known_models(encoding, tables, csvs) if args.known else []
    picked = fs.plan_indices(encoding, args.n, args.seed, models)
    width = len(str(args.n - 1))
    spec = OnnxSpec(batch=1, opset=17 if args.exporter == "torchscript" else 18, exporter=args.exporter)
    lines = [",".join(CSV_HEADER)]
    for i, row in enumerate(picked):
        arch = Arch.create(space, {layer.name: layer.candidates[j] for layer, j in zip(space.layers, row)})
        name = f"arch_{i:0{width}d}"
        arch_path = out / "archs" / f"{name}.json"
        save_arch(arch, arch_path)
        atomic_write_bytes(out / "onnx" / f"{name}.onnx", export_onnx(prepare_model(str(arch_path)), spec))
        lines.append(f"archs/{name}.json,")
    atomic_write_text(csv_path, "\n".join(lines) + "\n")
    how = f"the predicted latency range of {len(models)} known devices" if models else "multiply-adds"
    print(f"{args.n} architectures of {space.name} spread over {how} (seed {args.seed}): {out}/archs/*.json, "
          f"{out}/onnx/*.onnx (batch 1, {space.resolution}px, opset {spec.opset})")
    print(f"measure each ONNX file end to end on the device (median ms), fill {csv_path}, then run "
          f"`hwnas fewshot fit --space {space.name} --measured {csv_path} --known K... --out NEW.json`")
    return 0


def cmd_fit(args) -> int:
    space = get_space(args.space)
    encoding = fs.Encoding.of(space)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise HwnasError(f"{out} exists; choose another --out or pass --force")
    check_writable(out)
    measured = read_measured(args.measured, space)
    tables, csvs = read_known(args.known, encoding)
    models = fs.known_models(encoding, tables, csvs)
    indices = np.array([encoding.indices_of(arch) for arch, _, _ in measured])
    y = np.array([ms for _, ms, _ in measured])
    fit = fs.fit_new_device(fs.scaled_predictions(models, encoding.features(indices)), y)
    device = args.device or Path(args.measured).resolve().parent.name or "new device"
    record = {"file": str(args.measured), "archs": [{"arch": ref, "hash": arch.hash, "latency_ms": ms}
                                                    for arch, ms, ref in measured]}
    table = fs.fewshot_table(fit, models, encoding, device, record)
    table.save(out)
    top = sorted(zip(fit.weights, models), key=lambda wm: -wm[0])[:3]
    mix = ", ".join(f"{m.name} {w / max(fit.weights.sum(), 1e-12):.0%}" for w, m in top if w > 0) or "none"
    print(f"{out}: {device}, {space.name} from {fit.n} measured architectures and {len(models)} known devices "
          f"(mostly {mix})")
    print(f"  leave-one-out on the {fit.n}: MAPE {fit.loo_mape_pct:.1f}%, Spearman {fit.loo_spearman:.3f} "
          f"(the table's stated error); predict with `hwnas predict --lut {out} ARCH`")
    return 0
