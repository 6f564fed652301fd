"""Published latency lookup tables (Once-for-All, ProxylessNAS, HW-NAS-Bench) as hwnas tables.

Both projects key a row by the layer type and its input/output shapes (H x W x C), e.g.
`expanded_conv-input:56x56x32-output:28x28x48-expand:128-kernel:5-stride:2-idskip:0-se:1-hs:0`
(OFA: `expand` is the expanded width; ProxylessNAS: the expansion ratio, and no se/hs), and give
the mean latency in ms (OFA: count/mean/std; ProxylessNAS: count/mean/var). Conversion walks the
ops of the space the table was measured for (`mobilenetv3_w12`, `proxylessnas`), builds the key(s)
each op has in the source, and sums them the way the source's own predictor does:

  op of ours                 OFA (MBv3LatencyTable)           ProxylessNAS (ProxylessNASLatencyTable)
  stem                       Conv                             Conv
  ds / ir block              expanded_conv                    expanded_conv
  cn block (final expand)    Conv_1                           -
  head                       AvgPool2D + Conv_2 + Logits      Conv_1 (feature mix) + Logits

Every row the space does not use is reported with the reason. HW-NAS-Bench's FBNet tables are
per-layer deltas, not rows of ops: `import_hwnasbench_file` says how they map onto our keys. The table's backend is
`published` (no profiler here can extend, resume or re-measure it), its device names the phone,
and p10/p50/p90 all hold the published mean (`backend_options.statistic`): no quantiles were
published. Memory was not published: each entry's parameter, input, output and peak activation
bytes are computed here from the op itself (fp32, `peak_source` "estimate:hooks").

A head for any class count. The sources time the 1000-class ImageNet head only. Its classifier
row (`Logits`, a features x classes matrix product) is kept apart in `statistics.classifiers`, so
a head of N classes is derived from the published one: the head's time minus the classifier's,
plus the classifier's scaled by N/1000 (its multiply-adds). Predictions that use a derived head
say so (`Prediction.derived`); the error of a published table is unknown, derived or not.
"""

from __future__ import annotations

import hashlib
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from timm.layers import make_divisible

from ..errors import HwnasError, LutError
from ..core.ops import HeadSpec
from ..core.spaces import SearchSpace, get_space
from ..core.spaces.base import OpInstance
from ..profilers.table import LatencyTable, Measurement, OpKey

PUBLISHED_BACKEND = "published"


@dataclass(frozen=True)
class PublishedFormat:
    """One source's conventions: the space it fits, its device by file location, its provenance."""

    name: str
    space: str
    source: str
    devices: dict  # folder or file name -> device name
    resolution_file: str | None = None  # the source's file of one resolution, if it publishes several

    def device_for(self, path: Path) -> str | None:
        return self.devices.get(path.parent.name) or self.devices.get(path.name)


FORMATS = {
    "ofa": PublishedFormat(
        "ofa", "mobilenetv3_w12", "Once-for-All MobileNetV3 w1.2 latency lookup table (mit-han-lab/once-for-all)",
        {"note10": "Samsung Galaxy Note10"}, "{resolution}_lookup_table.yaml",
    ),
    "proxylessnas": PublishedFormat(
        "proxylessnas", "proxylessnas", "ProxylessNAS mobile latency lookup table (mit-han-lab/proxylessnas)",
        {"mobile_trim.yaml": "Google Pixel 1"},
    ),
    "hwnasbench": PublishedFormat(
        "hwnasbench", "fbnet_cifar100", "HW-NAS-Bench FBNet CIFAR-100 per-layer latency (RICE-EIC/HW-NAS-Bench)",
        {"fbnet_lut_raspi4_cifar100_wide.csv": "Raspberry Pi 4", "fbnet_lut_pixel3_cifar100_wide.csv": "Google Pixel 3",
         "fbnet_lut_eyeriss_cifar100_wide.csv": "Eyeriss"},
    ),
}


@dataclass(frozen=True)
class Row:
    """One published row: mean and standard deviation (ms) over `count` runs."""

    mean_ms: float
    std_ms: float
    count: int


@dataclass(frozen=True)
class Classifier:
    """The published classifier row inside a head (`Logits`: `features` -> `classes`), kept apart
    so that a head of another class count can be derived from the head's published time."""

    mean_ms: float
    std_ms: float
    count: int
    features: int
    classes: int

    def to_dict(self) -> dict:
        return {"mean_ms": self.mean_ms, "std_ms": self.std_ms, "count": self.count, "features": self.features,
                "classes": self.classes}

    @classmethod
    def from_dict(cls, data: dict) -> "Classifier":
        return cls(float(data["mean_ms"]), float(data["std_ms"]), int(data["count"]), int(data["features"]),
                   int(data["classes"]))


@dataclass(frozen=True)
class FileImport:
    """What one source file gave: its resolution, rows, the rows mapped, and why the others were not."""

    file: str
    resolution: int
    rows: int
    mapped: int
    ops: int
    unmapped: tuple[tuple[str, str], ...]


def _unique_key_loader():
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"row {key!r} is given twice (line {key_node.start_mark.line + 1})",
                        key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def _number(path: Path, key: str, field: str, value, minimum: float, strict: bool) -> float:
    """A finite number above (`strict`) or at least `minimum`; booleans and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LutError(f"{path}: row {key!r} has {field} {value!r}, which is not a number; fix the row")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise LutError(f"{path}: row {key!r} has {field} {value!r}; it must be a finite number {bound}: fix the row")
    return value


def read_rows(path: str | Path) -> dict[str, Row]:
    """The rows of a published YAML table, every value checked (a finite positive mean, a finite
    std or variance >= 0, a whole count >= 1, no row twice); anything else is a LutError naming
    the file and the row."""
    import yaml

    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_unique_key_loader())
    except UnicodeDecodeError:
        raise LutError(f"{path} is not UTF-8 text; a published latency table is a YAML file") from None
    except (OSError, yaml.YAMLError) as exc:
        raise LutError(f"cannot read {path} as a YAML latency table: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict) or not data:
        raise LutError(f"{path} is not a published latency table (expected a mapping of op keys to mean/std rows)")
    rows = {}
    for key, value in data.items():
        if not isinstance(value, dict) or "mean" not in value or not ("std" in value or "var" in value):
            raise LutError(f"{path}: row {key!r} lacks a mean and a std or var; is this an OFA/ProxylessNAS table?")
        mean = _number(path, key, "mean", value["mean"], 0.0, strict=True)
        if "std" in value:
            std = _number(path, key, "std", value["std"], 0.0, strict=False)
        else:
            std = math.sqrt(_number(path, key, "var", value["var"], 0.0, strict=False))
        count = value.get("count", 1)  # a published mean whose count is not given stands for one measurement
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise LutError(f"{path}: row {key!r} has count {count!r}; it must be a whole number >= 1: fix the row")
        rows[str(key)] = Row(mean, std, count)
    return rows


def parse_key(key: str) -> tuple[str, dict[str, str]]:
    """`Type-name:value-...` -> (type, {name: value})."""
    kind, *parts = key.split("-")
    return kind, dict(part.split(":", 1) for part in parts if ":" in part)


def _hwc(shape: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in shape)


def _block_options(spec: str) -> tuple[str, dict[str, str]]:
    block_type, *parts = spec.split("_")
    return block_type, {m.group(1): m.group(2) for p in parts if (m := re.match(r"^(se|[a-z])(.+)$", p))}


def source_keys(op: OpInstance, space: SearchSpace, fmt: str) -> tuple[str, ...]:
    """The key(s) the source's predictor sums for one op of ours (see the module docstring)."""
    h, w = op.out_hw()
    hin = _hwc((op.in_h, op.in_w, op.in_chs))
    if op.kind == "stem":
        return (f"Conv-input:{hin}-output:{_hwc((h, w, op.out_chs()))}",)
    if op.kind == "head":
        mix, classes = space.build_config.num_features, space.num_classes
        if fmt == "ofa":
            return (f"AvgPool2D-input:{hin}-output:1x1x{op.in_chs}", f"Conv_2-input:1x1x{op.in_chs}-output:1x1x{mix}",
                    f"Logits-input:1x1x{mix}-output:{classes}")
        return (f"Conv_1-input:{hin}-output:{_hwc((op.in_h, op.in_w, mix))}",
                f"Logits-input:{_hwc((op.in_h, op.in_w, mix))}-output:{classes}")
    block_type, opts = _block_options(op.spec)
    out = _hwc((h, w, op.out_chs()))
    if block_type == "cn":
        return (f"Conv_1-input:{hin}-output:{out}",)
    stride = int(opts["s"])
    ratio = 1 if block_type == "ds" else float(opts["e"])
    mid = op.in_chs if block_type == "ds" else make_divisible(op.in_chs * ratio, 8)
    skip = int(stride == 1 and op.in_chs == op.out_chs())
    key = f"expanded_conv-input:{hin}-output:{out}"
    if fmt == "ofa":
        hs = opts.get("n", "hs" if space.build_config.act == "hard_swish" else "") == "hs"
        return (f"{key}-expand:{mid}-kernel:{opts['k']}-stride:{stride}-idskip:{skip}-se:{int('se' in opts)}-hs:{int(hs)}",)
    return (f"{key}-expand:{int(ratio)}-kernel:{opts['k']}-stride:{stride}-idskip:{skip}",)


def op_memory(op: OpInstance, space: SearchSpace) -> dict:
    """The op's memory fields (Measurement's param/input/output/peak bytes), computed here from
    the op's module at fp32: the sources published latency only."""
    import torch

    from ..runtimes.memory import estimate_on_cpu
    from ..profilers.session import op_module

    module = op_module(op, space.build_config).eval()
    _, memory = estimate_on_cpu(module, torch.zeros(op.input_shape(1)))
    return memory.fields()


@contextmanager
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _combine(rows: list[Row], memory: dict) -> Measurement:
    mean = sum(r.mean_ms for r in rows)
    std = math.sqrt(sum(r.std_ms ** 2 for r in rows))
    return Measurement(p10_ms=mean, p50_ms=mean, p90_ms=mean, mean_ms=mean, std_ms=std,
                       count=min(r.count for r in rows), **memory)


def _file_space(path: Path, rows: dict[str, Row], fmt: PublishedFormat) -> SearchSpace:
    """The space at the resolution and class count the file's stem and classifier rows state."""
    stems = [parse_key(k)[1] for k in rows if parse_key(k)[0] == "Conv"]
    logits = [parse_key(k)[1] for k in rows if parse_key(k)[0] == "Logits"]
    if len(stems) != 1 or len(logits) != 1:
        raise LutError(f"{path}: expected one Conv (stem) row and one Logits row, found {len(stems)} and {len(logits)}; "
                       f"is it a {fmt.name} table?")
    try:
        resolution = int(stems[0]["input"].split("x")[0])
        classes = int(logits[0]["output"])
        return get_space(fmt.space, resolution=resolution, num_classes=classes)
    except (KeyError, ValueError, HwnasError) as exc:
        raise LutError(f"{path}: its stem/classifier rows do not fit space {fmt.space!r} ({exc})") from None


def import_file(path: str | Path, fmt: str) -> tuple[SearchSpace, dict[str, Measurement], dict[str, Classifier],
                                                       FileImport]:
    """One source file -> (its space at its resolution, entries keyed like ours, the classifier
    row of each head entry, what was mapped)."""
    path, spec = Path(path), FORMATS[fmt]
    rows = read_rows(path)
    space = _file_space(path, rows, spec)
    build = space.build_config.name
    entries: dict[str, Measurement] = {}
    classifiers: dict[str, Classifier] = {}
    used: set[str] = set()
    for op in space.all_ops():
        key = str(OpKey.for_op(op, build))
        if key in entries:
            continue
        keys = source_keys(op, space, fmt)
        absent = [k for k in keys if k not in rows]
        if absent:
            raise LutError(f"{path} lacks the row {absent[0]!r} that op {op.label} of space {space.name!r} at "
                           f"{space.resolution}px needs; it is not a complete {spec.source}")
        entries[key] = _combine([rows[k] for k in keys], op_memory(op, space))
        if op.kind == "head":
            logits = rows[keys[-1]]
            classifiers[key] = Classifier(logits.mean_ms, logits.std_ms, logits.count,
                                          space.build_config.num_features, space.num_classes)
        used.update(keys)
    unmapped = tuple((k, _why_unmapped(k, space)) for k in sorted(set(rows) - used))
    report = FileImport(path.name, space.resolution, len(rows), len(used), len(entries), unmapped)
    return space, entries, classifiers, report


def _why_unmapped(key: str, space: SearchSpace) -> str:
    kind, fields = parse_key(key)
    stem_out = _hwc((*space.stem_op().out_hw(), space.build_config.stem_size))
    if kind == "expanded_conv" and fields.get("input") == stem_out and fields.get("kernel") != "3":
        return f"the first block is fixed at 3x3 in space {space.name!r}, as in the source's networks"
    return f"no op of space {space.name!r} at {space.resolution}px has this key"


# --- HW-NAS-Bench's FBNet tables ----------------------------------------------------------------
HWNASBENCH_BASE = "base_all_k3_e1.csv"
_HWNASBENCH_FILE = re.compile(r"^fbnet_lut_(?P<device>[a-z0-9]+)_cifar100_wide\.csv$")
#: layers whose ops share our keys may differ by the files' rounding (7 decimals) and no more
HWNASBENCH_KEY_TOLERANCE_MS = 1e-6


def _csv_number(path: Path, where: str, column: str, text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise LutError(f"{path}: {where} has {column} {text!r}, which is not a number; fix the row") from None
    if not math.isfinite(value):
        raise LutError(f"{path}: {where} has {column} {text!r}; it must be a finite number: fix the row")
    return value


def _read_csv(path: Path) -> list[list[str]]:
    import csv

    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return [row for row in csv.reader(handle) if row]
    except UnicodeDecodeError:
        raise LutError(f"{path} is not UTF-8 text; an HW-NAS-Bench latency table is a CSV file") from None
    except (OSError, csv.Error) as exc:
        raise LutError(f"cannot read {path} as a CSV latency table: {exc}".splitlines()[0]) from None


def read_hwnasbench(path: str | Path, ops: tuple[str, ...], layers: int) -> tuple[list[list[float]], float, str]:
    """(per-layer deltas in `ops` order, the all-k3_e1 base, the file's device token) of an HW-NAS-Bench
    FBNet table and the `base_all_k3_e1.csv` beside it; every value checked (finite numbers, layers
    0..layers-1 in order, k3_e1 exactly 0); anything else a LutError naming file and row."""
    path = Path(path)
    match = _HWNASBENCH_FILE.match(path.name)
    if not match:
        raise LutError(f"{path.name} is not named as HW-NAS-Bench names its FBNet tables "
                       "(fbnet_lut_<device>_cifar100_wide.csv); the device picks the row of base_all_k3_e1.csv: "
                       "keep the original file name")
    device = match["device"]
    rows = _read_csv(path)
    header = ["layer", *ops]
    if not rows or [c.strip() for c in rows[0]] != header:
        raise LutError(f"{path}: the header is not {','.join(header)}; is it an HW-NAS-Bench FBNet table?")
    if len(rows) - 1 != layers:
        raise LutError(f"{path}: {len(rows) - 1} layer rows, HW-NAS-Bench's FBNet has {layers}; the file is "
                       "incomplete or not an FBNet table")
    deltas = []
    for line, row in enumerate(rows[1:], start=2):
        where = f"line {line}"
        if len(row) != len(header):
            raise LutError(f"{path}: {where} has {len(row)} fields, expected {len(header)}; fix the row")
        if row[0].strip() != str(line - 2):
            raise LutError(f"{path}: {where} is layer {row[0]!r}, expected {line - 2} (layers in order); fix the row")
        where = f"line {line} (layer {line - 2})"
        values = [_csv_number(path, where, op, text) for op, text in zip(ops, row[1:])]
        if values[0] != 0.0:
            raise LutError(f"{path}: {where} has {ops[0]} {row[1]!r}; the file holds each op minus the layer's "
                           f"{ops[0]}, so it must be 0: fix the row")
        deltas.append(values)
    base_path = path.parent / HWNASBENCH_BASE
    if not base_path.is_file():
        raise LutError(f"{base_path} is missing; HW-NAS-Bench's per-layer tables hold deltas against the all-k3_e1 "
                       f"network, whose latency that file gives: put it beside {path.name}")
    base_rows = _read_csv(base_path)
    if not base_rows or [c.strip() for c in base_rows[0]] != ["device", "base_all_k3_e1_ms"]:
        raise LutError(f"{base_path}: the header is not device,base_all_k3_e1_ms; is it HW-NAS-Bench's base file?")
    found = [(line, row) for line, row in enumerate(base_rows[1:], start=2) if row and row[0].strip() == device]
    if len(found) != 1:
        raise LutError(f"{base_path}: {len(found)} rows for device {device!r} (the device of {path.name}), expected "
                       "one; fix the file")
    line, row = found[0]
    if len(row) != 2:
        raise LutError(f"{base_path}: line {line} has {len(row)} fields, expected 2; fix the row")
    base = _csv_number(base_path, f"line {line} ({device})", "base_all_k3_e1_ms", row[1])
    if base <= 0:
        raise LutError(f"{base_path}: line {line} ({device}) has base_all_k3_e1_ms {row[1]!r}; a network's latency "
                       "is > 0: fix the row")
    return deltas, base, device


def import_hwnasbench_file(path: str | Path) -> tuple[SearchSpace, dict[str, Measurement], dict[str, Classifier],
                                                       FileImport, dict]:
    """An HW-NAS-Bench FBNet table -> (space fbnet_cifar100, entries, no classifier rows, what was
    mapped, {fixed_ms, base_ms, identical_layer_spread_ms}); see docs/profiling.md.

    HW-NAS-Bench predicts base + the sum of the chosen ops' deltas. Each layer's offset is its most
    negative delta (always skip's in the published files): a layer's op is stored as its delta minus
    that offset (>= 0; the identity skip is no op and costs 0, a projection skip costs 0 too, being
    the most negative), and the offsets go into the fixed part, the stem entry: base + the sum of
    the offsets, i.e. HW-NAS-Bench's all-skip network. The head entry is 0: HW-NAS-Bench publishes no
    split of that fixed part. Every architecture's sum is then HW-NAS-Bench's, to the files' rounding.
    Layers whose ops share a key (same op, input and output shape: e.g. layer2-4) get one entry, the
    mean of theirs; the files' values for them differ by their last digit (1e-7 ms) at most, and an
    import refuses a difference over HWNASBENCH_KEY_TOLERANCE_MS."""
    from ..core.spaces.fbnet_cifar import NUM_LAYERS, OPS
    from ..core.spaces.base import SKIP

    path = Path(path)
    space = get_space(FORMATS["hwnasbench"].space)
    deltas, base, _ = read_hwnasbench(path, OPS, NUM_LAYERS)
    build = space.build_config.name
    values: dict[str, list[tuple[float, int]]] = {}
    ops: dict[str, OpInstance] = {}
    offsets = []
    for layer, row in zip(space.layers, deltas):
        offset = min(row)
        if not layer.projection_skip and row[OPS.index(SKIP)] != offset:
            raise LutError(f"{path}: layer {layer.name[5:]}'s skip ({row[OPS.index(SKIP)]}) is not its fastest op; skip "
                           "is the identity there (0 ms in our table), so the table cannot be held without a "
                           "negative op: fix the row")
        offsets.append(offset)
        for op_name, delta in zip(OPS, row):
            op = layer.op(op_name)
            if op is None:
                continue
            key = str(OpKey.for_op(op, build))
            ops.setdefault(key, op)
            values.setdefault(key, []).append((delta - offset, int(layer.name[5:])))
    fixed = base + sum(offsets)
    if fixed < 0:
        raise LutError(f"{path}: the all-skip network would take {fixed:.6f} ms (base {base} plus each layer's most "
                       "negative delta); the file does not fit its base_all_k3_e1.csv row")
    (final_shape,) = space.final_shapes()
    for op, value in ((space.stem_op(), fixed), (space.head_op(*final_shape), 0.0)):
        key = str(OpKey.for_op(op, build))
        ops[key], values[key] = op, [(value, -1)]
    entries: dict[str, Measurement] = {}
    spread = 0.0
    for key, items in values.items():
        op = ops[key]
        vals = [v for v, _ in items]
        if max(vals) - min(vals) > HWNASBENCH_KEY_TOLERANCE_MS:
            (lo, a), (hi, b) = min(items), max(items)
            raise LutError(f"{path}: layers {a} and {b} hold the same op ({op.label}) at {lo:.7f} and {hi:.7f} ms over "
                           "their fastest op; identical layers must agree to the file's rounding: fix the rows")
        spread = max(spread, max(vals) - min(vals))
        mean = sum(vals) / len(vals)
        entries[key] = Measurement(p10_ms=mean, p50_ms=mean, p90_ms=mean, mean_ms=mean, std_ms=0.0, count=1,
                                   **op_memory(op, space))
    report = FileImport(path.name, space.resolution, len(deltas) * len(OPS) + 1, len(deltas) * len(OPS) + 1,
                        len(entries), ())
    return space, entries, {}, report, {"fixed_ms": fixed, "base_ms": base, "identical_layer_spread_ms": spread}


def import_published(paths: list[str | Path], fmt: str, device: str | None = None) -> list[tuple[LatencyTable, FileImport]]:
    """Published YAML tables of one source and device -> one hwnas table per file (per resolution):
    the sources time an op once per network resolution, and our keys do not carry it."""
    if device is not None and not device.strip():
        raise LutError("--device is empty; name the device the table was measured on, e.g. --device 'Samsung Galaxy "
                       "Note10', or drop --device where the file's folder names it")
    if fmt not in FORMATS:
        raise LutError(f"unknown published format {fmt!r}; choose one of: {', '.join(sorted(FORMATS))}")
    if not paths:
        raise LutError("name at least one published table file")
    spec = FORMATS[fmt]
    paths = [Path(p) for p in paths]
    if fmt == "hwnasbench" and len(paths) > 1:
        raise LutError(f"{len(paths)} HW-NAS-Bench files given; each is another device (raspi4, pixel3, eyeriss): "
                       "import them one at a time, each into its own table")
    imported, seen = [], {}
    for path in paths:
        with _one_thread():  # the memory estimates run small forwards; two threads on a busy machine crawl
            if fmt == "hwnasbench":
                space, entries, classifiers, report, extra = import_hwnasbench_file(path)
            else:
                (space, entries, classifiers, report), extra = import_file(path, fmt), None
        if space.resolution in seen:
            raise LutError(f"{path} and {seen[space.resolution]} are both tables at {space.resolution}px; import one of them")
        seen[space.resolution] = path
        imported.append((path, space, entries, classifiers, report, extra))
    names = {spec.device_for(p) for p in paths}
    if device is None:
        if None in names or len(names) != 1:
            raise LutError(f"cannot tell which device {', '.join(map(str, paths))} were measured on; "
                           "name it with --device (e.g. --device 'Samsung Galaxy Note10')")
        device = names.pop()
    results = []
    for path, space, entries, classifiers, report, extra in imported:
        files = [{"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                  "rows": report.rows, "rows_mapped": report.mapped}]
        note = ("p10_ms, p50_ms and p90_ms hold the published mean (no quantiles were published); std_ms is "
                "the published std (or sqrt of var); an op made of several published rows has their summed "
                "means and the root-sum-square of their stds; memory was not published: byte counts are "
                "computed from each op at fp32; a head of another class count is derived from "
                "`classifiers` (the Logits row of each head, scaled by classes)")
        if extra is not None:
            base_file = path.parent / HWNASBENCH_BASE
            files.append({"file": base_file.name, "sha256": hashlib.sha256(base_file.read_bytes()).hexdigest(),
                          "rows": 1, "rows_mapped": 1})
            note = ("HW-NAS-Bench's additive model (base + each layer's op delta) held without negative entries: "
                    "a layer's op is its delta minus the layer's most negative delta (skip's); the stem entry "
                    "holds the fixed part, base + those offsets (HW-NAS-Bench's all-skip network); the head "
                    "entry is 0 (no split of the fixed part was published); ops of identical layers hold the "
                    "mean of their deltas (they differ by the files' rounding at most, "
                    f"{extra['identical_layer_spread_ms']:.1e} ms); p10/p50/p90 hold that value, std_ms 0; "
                    "memory is computed from each op at fp32; only the 100-class head was published")
        table = LatencyTable(
            backend=PUBLISHED_BACKEND,
            backend_options={"source": fmt, "statistic": "mean"},
            device={"name": device, "source": spec.source, "published": True},
            batch=1,
            dtype="float32",
            spaces=[space.name],
            resolutions=[space.resolution],
            entries=entries,
            statistics={
                "published": True,
                "statistic": "mean",
                "note": note,
                "files": files,
                **({"hwnasbench": extra} if extra is not None else {}),
                "classifiers": {key: c.to_dict() for key, c in classifiers.items()},
            },
        )
        results.append((table, report))
    return results


def combine(tables: list[LatencyTable]) -> LatencyTable:
    """One table of several resolutions' tables; refused where two files time one of our ops
    differently (e.g. OFA's 176 and 192 px heads both pool a 6x6 map)."""
    combined = tables[0]
    for table in tables[1:]:
        for key, m in table.entries.items():
            other = combined.entries.get(key)
            if other is not None and other.mean_ms != m.mean_ms:
                raise LutError(
                    f"{table.statistics['files'][0]['file']} times {key} at {m.mean_ms:.4f} ms, an earlier file at "
                    f"{other.mean_ms:.4f} ms; our keys do not carry the network's resolution, so keep one table "
                    "per resolution"
                )
        statistics = dict(combined.statistics)
        combined = combined.merge(table)
        combined.statistics = {**statistics, "files": statistics["files"] + table.statistics["files"],
                               "classifiers": {**statistics.get("classifiers", {}),
                                               **table.statistics.get("classifiers", {})}}
    return combined


def table_name(table: LatencyTable) -> str:
    """`<device>_<source>_<resolution>.json`, the file a table gets in an --out directory."""
    slug = re.sub(r"[^a-z0-9]+", "-", table.device["name"].lower()).strip("-")
    return f"{slug}_{table.backend_options['source']}_{'-'.join(map(str, table.resolutions))}.json"


def is_published(table: LatencyTable) -> bool:
    return table.backend == PUBLISHED_BACKEND


def refusal(table: LatencyTable) -> str:
    """Why end-to-end measurements cannot use a published table, and what to do instead."""
    return (f"this table was imported from a published one ({table.device.get('source', 'unknown source')}, measured "
            f"on {table.device.get('name', 'an unknown device')}); calibrate, validate and a search's end-to-end check "
            "measure networks on this machine, which is not that device: use the table for predict and search, or "
            "profile this machine with `hwnas profile`")


def classifiers(table: LatencyTable) -> dict[str, Classifier]:
    """The classifier row of each published head (see the module docstring); a table imported by
    an hwnas that did not keep them is refused, naming the re-import."""
    data = (table.statistics or {}).get("classifiers")
    if not isinstance(data, dict):
        raise LutError(f"this published table ({table.device.get('name', 'unknown device')}) was imported by an older "
                       "hwnas and lacks the classifier rows a head of another class count is derived from; import "
                       f"the source files again with `hwnas lut import FILE... --format "
                       f"{table.backend_options.get('source', 'ofa')}`")
    try:
        return {key: Classifier.from_dict(value) for key, value in data.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise LutError(f"the published table's classifier rows are malformed ({exc}); import the source files "
                       "again with `hwnas lut import`") from None


def derived_head(table: LatencyTable, op: OpInstance, space: SearchSpace, key: OpKey) -> tuple[Measurement, str] | None:
    """The head `op` (another class count than the published one) derived from the published head
    of the same input and features: the head's time minus its classifier row, plus that row scaled
    by the class ratio; with the sentence that says so. None where no published head fits."""
    want = HeadSpec.parse(op.spec)
    for text, classifier in classifiers(table).items():
        source = OpKey.parse(text)
        if (source.build, source.shape, source.dtype, HeadSpec.parse(source.spec).features) != (
                key.build, key.shape, key.dtype, want.features) or text not in table.entries:
            continue
        head = table.entries[text]
        scale = want.num_classes / classifier.classes
        mean = head.mean_ms + classifier.mean_ms * (scale - 1.0)
        std = math.sqrt(max(head.std_ms ** 2 - classifier.std_ms ** 2, 0.0) + (classifier.std_ms * scale) ** 2)
        measurement = Measurement(p10_ms=mean, p50_ms=mean, p90_ms=mean, mean_ms=mean, std_ms=std, count=head.count,
                                  **op_memory(op, space))
        note = (f"the {want.num_classes}-class head ({mean:.3f} ms) is derived from the published "
                f"{classifier.classes}-class head ({head.mean_ms:.3f} ms): its classifier row ({classifier.mean_ms:.3f} "
                f"ms) scaled by {want.num_classes}/{classifier.classes}")
        return measurement, note
    return None


def missing_ops(table: LatencyTable, space: SearchSpace, missing: int, first: OpKey) -> str:
    """Why a published table cannot predict `space`, and what to do: it is for another space,
    another resolution (import that resolution's file), or another batch/dtype; never a profile,
    which no backend here can make of that device."""
    source = FORMATS.get(table.backend_options.get("source"))
    of = f"a published table ({table.device.get('source', 'unknown source')}, {table.device.get('name', 'unknown device')})"
    if space.name not in table.spaces:
        return (f"the table is {of} for space {', '.join(map(repr, table.spaces))}, not {space.name!r}: use it for "
                f"architectures of {table.spaces[0]!r}, or profile this machine for {space.name!r} with `hwnas profile`")
    if space.resolution not in table.resolutions:
        held = "/".join(map(str, table.resolutions))
        if source is not None and source.resolution_file:
            name = source.resolution_file.format(resolution=space.resolution)
            return (f"the table is {of} at {held}px, not {space.resolution}px: import the source's {space.resolution}px "
                    f"table with `hwnas lut import {name} --format {source.name}`, or use --resolution {held}")
        return f"the table is {of} at {held}px only; the source publishes no {space.resolution}px table: use --resolution {held}"
    if first.kind == "head" and not (table.statistics or {}).get("classifiers"):
        held = sorted({HeadSpec.parse(OpKey.parse(k).spec).num_classes for k in table.entries if k.startswith("head:")})
        return (f"the table is {of} with the {'/'.join(map(str, held))}-class head only, and no classifier row to "
                f"derive a {space.num_classes}-class head from: use it for {held[0] if held else 'N'}-class networks "
                f"(`predict --num-classes {held[0] if held else 'N'}`, a search on data of that many classes)")
    return (f"the table is {of} and lacks {missing} of the {len(space.all_ops())} ops of space {space.name!r} at "
            f"{space.resolution}px (first: {first}); it holds batch {table.batch}, {table.dtype} only, and no profiler "
            "here can measure that device")
