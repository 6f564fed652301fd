"""Few-shot latency on a new device as jobs: `plan` picks N architectures to measure and writes
their arch JSON, ONNX files and the CSV to fill; `fit` reads the filled CSV and the known devices
and writes the new device's table (hwnas.latency_tables.fewshot holds the model)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.arch import Arch, load_arch, save_arch
from ..core.spaces import SearchSpace, get_space
from ..errors import ArchError, HwnasError, LutError
from ..jsonio import atomic_write_bytes, atomic_write_text
from ..latency_tables import fewshot as fs
from ..profilers.table import LatencyTable
from ..runs import check_writable

CSV_HEADER = ("arch", "latency_ms")


@dataclass(frozen=True)
class Planned:
    space: SearchSpace
    out: Path
    csv_path: Path
    n: int
    known: int  # known devices the architectures were spread over (0: over multiply-adds)
    opset: int


@dataclass(frozen=True)
class Fitted:
    space: SearchSpace
    out: Path
    device: str
    fit: object  # fs.Fit
    models: list
    table: LatencyTable


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


def plan(space_name: str, n: int, out: str, known: list[str], seed: int = 0, exporter: str = "torchscript",
         force: bool = False) -> Planned:
    """Pick `n` architectures of the space spread over the known devices' predicted latency (or
    multiply-adds) and varied in op mix; write archs/*.json, onnx/*.onnx and measured.csv to `out`."""
    from ..export.model import prepare_model
    from ..export.onnx_export import OnnxSpec, export_model

    if n < fs.MIN_MEASURED:
        raise HwnasError(f"--n {n}: a few-shot fit needs at least {fs.MIN_MEASURED} architectures (10 or more "
                         "recommended)")
    space = get_space(space_name)
    encoding = fs.Encoding.of(space)
    folder = Path(out)
    csv_path = folder / "measured.csv"
    if csv_path.exists() and not force:
        raise HwnasError(f"{csv_path} exists (a plan, perhaps filled already); choose another --out or pass --force")
    check_writable(folder)
    tables, csvs = read_known(known, encoding)
    models = fs.known_models(encoding, tables, csvs) if known else []
    picked = fs.plan_indices(encoding, n, seed, models)
    width = len(str(n - 1))
    spec = OnnxSpec(batch=1, opset=17 if exporter == "torchscript" else 18, exporter=exporter)
    lines = [",".join(CSV_HEADER)]
    for i, row in enumerate(picked):
        arch = Arch.create(space, {layer.name: layer.candidates[j] for layer, j in zip(space.layers, row)})
        name = f"arch_{i:0{width}d}"
        arch_path = folder / "archs" / f"{name}.json"
        save_arch(arch, arch_path)
        atomic_write_bytes(folder / "onnx" / f"{name}.onnx", export_model(prepare_model(str(arch_path)), spec))
        lines.append(f"archs/{name}.json,")
    atomic_write_text(csv_path, "\n".join(lines) + "\n")
    return Planned(space, folder, csv_path, n, len(models), spec.opset)


def fit(space_name: str, measured_csv: str, known: list[str], out: str, device: str | None = None,
        force: bool = False) -> Fitted:
    """The new device's table from the filled CSV and the known devices, its error stated by
    leave-one-out on the measured architectures."""
    space = get_space(space_name)
    encoding = fs.Encoding.of(space)
    target = Path(out)
    if target.exists() and not force:
        raise HwnasError(f"{target} exists; choose another --out or pass --force")
    check_writable(target)
    measured = read_measured(measured_csv, space)
    tables, csvs = read_known(known, encoding)
    models = fs.known_models(encoding, tables, csvs)
    indices = np.array([encoding.indices_of(arch) for arch, _, _ in measured])
    y = np.array([ms for _, ms, _ in measured])
    result = fs.fit_new_device(fs.scaled_predictions(models, encoding.features(indices)), y)
    name = device or Path(measured_csv).resolve().parent.name or "new device"
    record = {"file": str(measured_csv), "archs": [{"arch": ref, "hash": arch.hash, "latency_ms": ms}
                                                   for arch, ms, ref in measured]}
    table = fs.fewshot_table(result, models, encoding, name, record)
    table.save(target)
    return Fitted(space, target, name, result, models, table)
