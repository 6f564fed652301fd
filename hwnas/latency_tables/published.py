"""Published latency lookup tables (Once-for-All, ProxylessNAS) as hwnas tables.

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

Every row the space does not use is reported with the reason. The table's backend is
`published` (no profiler here can extend, resume or re-measure it), its device names the phone,
and p10/p50/p90 all hold the published mean (`backend_options.statistic`): no quantiles were
published. Memory is unknown (peak_bytes null, byte counts 0).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

from timm.layers import make_divisible

from ..errors import HwnasError, LutError
from ..spaces import SearchSpace, get_space
from ..spaces.base import OpInstance
from .table import LatencyTable, Measurement, OpKey

PUBLISHED_BACKEND = "published"


@dataclass(frozen=True)
class PublishedFormat:
    """One source's conventions: the space it fits, its device by file location, its provenance."""

    name: str
    space: str
    source: str
    devices: dict  # folder or file name -> device name

    def device_for(self, path: Path) -> str | None:
        return self.devices.get(path.parent.name) or self.devices.get(path.name)


FORMATS = {
    "ofa": PublishedFormat(
        "ofa", "mobilenetv3_w12", "Once-for-All MobileNetV3 w1.2 latency lookup table (mit-han-lab/once-for-all)",
        {"note10": "Samsung Galaxy Note10"},
    ),
    "proxylessnas": PublishedFormat(
        "proxylessnas", "proxylessnas", "ProxylessNAS mobile latency lookup table (mit-han-lab/proxylessnas)",
        {"mobile_trim.yaml": "Google Pixel 1"},
    ),
}


@dataclass(frozen=True)
class Row:
    """One published row: mean and standard deviation (ms) over `count` runs."""

    mean_ms: float
    std_ms: float
    count: int


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


def _combine(rows: list[Row]) -> Measurement:
    mean = sum(r.mean_ms for r in rows)
    std = math.sqrt(sum(r.std_ms ** 2 for r in rows))
    return Measurement(p10_ms=mean, p50_ms=mean, p90_ms=mean, mean_ms=mean, std_ms=std,
                       count=min(r.count for r in rows), peak_bytes=None, peak_source="unknown (published latency only)")


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


def import_file(path: str | Path, fmt: str) -> tuple[SearchSpace, dict[str, Measurement], FileImport]:
    """One source file -> (its space at its resolution, entries keyed like ours, what was mapped)."""
    path, spec = Path(path), FORMATS[fmt]
    rows = read_rows(path)
    space = _file_space(path, rows, spec)
    build = space.build_config.name
    entries: dict[str, Measurement] = {}
    used: set[str] = set()
    for op in space.all_ops():
        keys = source_keys(op, space, fmt)
        absent = [k for k in keys if k not in rows]
        if absent:
            raise LutError(f"{path} lacks the row {absent[0]!r} that op {op.label} of space {space.name!r} at "
                           f"{space.resolution}px needs; it is not a complete {spec.source}")
        entries[str(OpKey.for_op(op, build))] = _combine([rows[k] for k in keys])
        used.update(keys)
    unmapped = tuple((k, _why_unmapped(k, space)) for k in sorted(set(rows) - used))
    report = FileImport(path.name, space.resolution, len(rows), len(used), len(entries), unmapped)
    return space, entries, report


def _why_unmapped(key: str, space: SearchSpace) -> str:
    kind, fields = parse_key(key)
    stem_out = _hwc((*space.stem_op().out_hw(), space.build_config.stem_size))
    if kind == "expanded_conv" and fields.get("input") == stem_out and fields.get("kernel") != "3":
        return f"the first block is fixed at 3x3 in space {space.name!r}, as in the source's networks"
    return f"no op of space {space.name!r} at {space.resolution}px has this key"


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
    imported, seen = [], {}
    for path in paths:
        space, entries, report = import_file(path, fmt)
        if space.resolution in seen:
            raise LutError(f"{path} and {seen[space.resolution]} are both tables at {space.resolution}px; import one of them")
        seen[space.resolution] = path
        imported.append((path, space, entries, report))
    names = {spec.device_for(p) for p in paths}
    if device is None:
        if None in names or len(names) != 1:
            raise LutError(f"cannot tell which device {', '.join(map(str, paths))} were measured on; "
                           "name it with --device (e.g. --device 'Samsung Galaxy Note10')")
        device = names.pop()
    results = []
    for path, space, entries, report in imported:
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
                "note": "p10_ms, p50_ms and p90_ms hold the published mean (no quantiles were published); std_ms is "
                        "the published std (or sqrt of var); an op made of several published rows has their summed "
                        "means and the root-sum-square of their stds; memory is unknown",
                "files": [{"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                           "rows": report.rows, "rows_mapped": report.mapped}],
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
        combined.statistics = {**statistics, "files": statistics["files"] + table.statistics["files"]}
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
