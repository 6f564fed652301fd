"""Latency lookup tables: canonical op keys, measurements, and a versioned JSON file format.

Schema (format "hwnas.lut", version 1), a JSON object:

    format, version        "hwnas.lut", 1
    backend                profiler name, e.g. "ort-cpu"
    backend_options        what changes latency besides the device: threads, graph
                           optimisation level, precision, layout, ...
    device                 fingerprint (CPU, GPU, driver, library versions; a published
                           table's device name and source): hwnas.runtimes.fingerprint.DeviceFingerprint
    batch, dtype           the input batch size and dtype every entry was measured at
    spaces                 names of the spaces whose ops the table holds
    resolutions            input resolutions those ops were enumerated at
    overhead_ms            per-call overhead of the backend (an empty graph), or null;
                           every entry includes it once (each op is timed as its own call)
    created                ISO-8601 UTC time of creation
    entries                {op key text: measurement}; a measurement has p10_ms, p50_ms,
                           p90_ms, mean_ms, std_ms, count, param_bytes, input_bytes,
                           output_bytes, peak_bytes (null when unknown), peak_source, and
                           how trustworthy it is: rel_ci (relative half-width of the 95%
                           confidence interval of the median, null when unknown),
                           rounds_dropped (rounds of samples discarded as disturbed by load),
                           remeasured (times the whole op was re-measured because the
                           machine was busier than usual)
    statistics             null in profiled tables; in an imported published table, its
                           sources (files, classifier rows; hwnas.latency_tables.published)
    calibration            null, or {resolution: fitted correction with its error, its held-out
                           `validation` and the fit report} (hwnas.latency_tables.calibration
                           Calibration and Validation)
    reference              null (older tables), or the reference network every latency of
                           the table is expressed against, with its time `ms` (see
                           hwnas.core.reference); entries are medians of interleaved rounds, each
                           rescaled by the reference's time around it
    rounds                 null, or the interleaved round settings the entries were timed with
                           (hwnas.profilers.interleaved.RoundsConfig)
    pending                {op key: [round records]}: rounds of ops whose profile is not
                           finished yet (a resumed profile continues them)

An op key text is `KIND:SPEC|BUILD|BxCxHxW|DTYPE`, e.g.
`block:ir_r1_k5_s2_e6_c32|relu-sigmoid-sin|1x24x56x56|float32`.

Every part is typed in hwnas/schemas/lut.schema.json (`$defs/device`, `$defs/measurement`,
`$defs/calibration`, `$defs/validation`), which the reader checks first.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Iterable

from ..errors import LutError
from ..jsonio import atomic_write_json, read_json
from ..core.ops import OpKind, is_cell_op, parse_cell_op
from ..runtimes.fingerprint import DeviceFingerprint
from ..schemas import first_error

LUT_FORMAT = "hwnas.lut"
LUT_VERSION = 1
SCHEMA_FILE = "hwnas/schemas/lut.schema.json"

# order of block-string options in a canonical key (timm accepts any order)
_OPTION_ORDER = ("r", "k", "a", "p", "s", "e", "c", "se", "g", "gs", "d", "n")
_FLAG_OPTIONS = ("noskip", "skip")


def _number(text: str) -> str:
    value = float(text)
    return str(int(value)) if value.is_integer() else repr(value)


def canonical_block(spec: str) -> str:
    """One spelling per block: options in a fixed order, numbers normalised (`e6.0` -> `e6`).

    The expansion ratio of `ds` blocks is dropped (they have none) and `se0` is dropped (no SE).
    Cell-space op specs (`nb201_nor_conv_3x3_c16`, `darts_sep_conv_3x3_c36_s1`) have one spelling
    already and are kept as they are.
    """
    if is_cell_op(spec):
        try:
            return parse_cell_op(spec).text
        except ValueError as exc:
            raise LutError(str(exc)) from None
    parts = spec.split("_")
    block_type, options, flags = parts[0], {}, []
    for part in parts[1:]:
        if part in _FLAG_OPTIONS:
            flags.append(part)
            continue
        match = re.match(r"^(se|gs|[a-z])(.+)$", part)
        if not match:
            raise LutError(f"cannot canonicalise block option {part!r} of {spec!r}")
        key, value = match.groups()
        options[key] = value if key == "n" else _number(value)
    if block_type in ("ds", "dsa"):
        options.pop("e", None)
    if options.get("se") == "0":
        options.pop("se")
    ordered = [f"{k}{options[k]}" for k in _OPTION_ORDER if k in options]
    ordered += [f"{k}{v}" for k, v in sorted(options.items()) if k not in _OPTION_ORDER]
    return "_".join([block_type, *ordered, *sorted(flags)])


@dataclass(frozen=True)
class OpKey:
    """What a LUT row is keyed by: op kind and arguments, how it is built, input shape, dtype."""

    kind: OpKind
    spec: str
    build: str
    shape: tuple[int, int, int, int]
    dtype: str = "float32"

    @classmethod
    def create(cls, kind: str, spec: str, build: str, shape: Iterable[int], dtype: str = "float32") -> "OpKey":
        try:
            kind = OpKind.parse(kind)
        except ValueError as exc:
            raise LutError(str(exc)) from None
        spec = canonical_block(spec) if kind is OpKind.BLOCK else spec
        shape = tuple(int(v) for v in shape)
        if len(shape) != 4 or min(shape) < 1:
            raise LutError(f"op input shape must be 4 positive ints (B, C, H, W), got {shape}")
        return cls(kind, spec, build, shape, dtype)

    @classmethod
    def for_op(cls, op, build: str, batch: int = 1, dtype: str = "float32") -> "OpKey":
        """Key of a space's OpInstance at a batch size and dtype."""
        return cls.create(op.kind, op.spec, build, op.input_shape(batch), dtype)

    @property
    def text(self) -> str:
        return f"{self.kind}:{self.spec}|{self.build}|{'x'.join(map(str, self.shape))}|{self.dtype}"

    @classmethod
    def parse(cls, text: str) -> "OpKey":
        try:
            head, build, shape, dtype = text.split("|")
            kind, spec = head.split(":", 1)
            return cls.create(kind, spec, build, (int(v) for v in shape.split("x")), dtype)
        except (ValueError, LutError) as exc:
            raise LutError(f"malformed op key {text!r}: expected KIND:SPEC|BUILD|BxCxHxW|DTYPE") from exc

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Measurement:
    """Latency statistics of one op (milliseconds) and its memory (bytes)."""

    p10_ms: float
    p50_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    count: int
    param_bytes: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    peak_bytes: int | None = None
    peak_source: str = "unknown"
    rel_ci: float | None = None
    rounds_dropped: int = 0
    remeasured: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Measurement":
        """Parse and check values: finite non-negative latencies, p10 <= p50 <= p90, count >= 1
        (the full rules are in hwnas/schemas/lut.schema.json)."""
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict):
            raise LutError(f"measurement must be an object, got {type(data).__name__}")
        missing = {"p10_ms", "p50_ms", "p90_ms", "mean_ms", "std_ms", "count"} - set(data)
        if missing:
            raise LutError(f"measurement lacks {sorted(missing)}")
        problem = first_error(data, "lut", "measurement")
        if problem:
            raise LutError(problem)
        if not data["p10_ms"] <= data["p50_ms"] <= data["p90_ms"]:
            raise LutError(f"percentiles out of order: p10_ms {data['p10_ms']}, p50_ms {data['p50_ms']}, "
                           f"p90_ms {data['p90_ms']} (p10 <= p50 <= p90 must hold)")
        return cls(**{k: v for k, v in data.items() if k in names})


def _utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class LatencyTable:
    """A LUT: measurements of ops on one backend, device and options. Mutable while profiling."""

    backend: str
    backend_options: dict
    device: dict
    batch: int = 1
    dtype: str = "float32"
    spaces: list[str] = field(default_factory=list)
    resolutions: list[int] = field(default_factory=list)
    overhead_ms: float | None = None
    created: str = field(default_factory=_utc_now)
    entries: dict[str, Measurement] = field(default_factory=dict)
    calibration: dict | None = None
    statistics: dict | None = None
    reference: dict | None = None
    rounds: dict | None = None
    pending: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> DeviceFingerprint:
        """`device` as its typed record (checked; a LutError names a malformed key)."""
        return DeviceFingerprint.from_dict(self.device)

    # --- lookups ------------------------------------------------------------------------
    def __contains__(self, key: OpKey | str) -> bool:
        return str(key) in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: OpKey | str) -> Measurement:
        """The measurement of `key`; a missing key is a LutError saying how to fill it."""
        try:
            return self.entries[str(key)]
        except KeyError:
            space = self.spaces[0] if self.spaces else "SPACE"
            if self.device.get("published"):
                raise LutError(f"op {key} is not in this published table of {self.device.get('name')}, and no "
                               "profiler here can measure that device; import the source table that holds it") from None
            raise LutError(
                f"op {key} is not in the {self.backend} table; profile it with "
                f"`hwnas profile --space {space} --backend {self.backend} --out TABLE --resume`"
            ) from None

    def put(self, key: OpKey, measurement: Measurement) -> None:
        self.entries[str(key)] = measurement

    def note_space(self, space_name: str, resolution: int) -> None:
        if space_name not in self.spaces:
            self.spaces.append(space_name)
        if resolution not in self.resolutions:
            self.resolutions.append(resolution)

    # --- compatibility and merge --------------------------------------------------------
    def identity(self) -> dict:
        """What must be equal for two tables' numbers to be comparable."""
        return {
            "backend": self.backend,
            "backend_options": self.backend_options,
            "device": device_identity(self.device),
            "batch": self.batch,
            "dtype": self.dtype,
        }

    def first_difference(self, other: "LatencyTable") -> tuple[str, object, object] | None:
        """(field, mine, theirs) of the first identity field in which the tables differ, or None."""
        mine, theirs = self.identity(), other.identity()
        for field_name in mine:
            if mine[field_name] != theirs[field_name]:
                return field_name, mine[field_name], theirs[field_name]
        return None

    def check_compatible(self, other: "LatencyTable",
                         refusal: str = "tables differ in {name} ({mine!r} vs {theirs!r}); only tables from the same "
                                        "device, backend and options can be merged") -> None:
        """Refuse `other` where its identity differs: `refusal` is formatted with the first
        differing field's `name` and both values (`mine`, `theirs`)."""
        difference = self.first_difference(other)
        if difference:
            name, mine, theirs = difference
            raise LutError(refusal.format(name=name, mine=mine, theirs=theirs))

    def merge(self, other: "LatencyTable") -> "LatencyTable":
        """A new table with both tables' entries (`other` wins on overlap); refuses mismatches."""
        self.check_compatible(other)
        merged = LatencyTable.from_dict(self.to_dict())
        merged.entries.update(_rescaled_to(self.reference, other))
        for space in other.spaces:
            if space not in merged.spaces:
                merged.spaces.append(space)
        for res in other.resolutions:
            if res not in merged.resolutions:
                merged.resolutions.append(res)
        merged.calibration = None  # a calibration was fitted on one table's entries
        return merged

    # --- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": LUT_FORMAT,
            "version": LUT_VERSION,
            "backend": self.backend,
            "backend_options": self.backend_options,
            "device": self.device,
            "batch": self.batch,
            "dtype": self.dtype,
            "spaces": list(self.spaces),
            "resolutions": list(self.resolutions),
            "overhead_ms": self.overhead_ms,
            "created": self.created,
            "entries": {k: m.to_dict() for k, m in sorted(self.entries.items())},
            "calibration": self.calibration,
            "statistics": self.statistics,
            "reference": self.reference,
            "rounds": self.rounds,
            "pending": {k: self.pending[k] for k in sorted(self.pending)},
        }

    @classmethod
    def from_dict(cls, data: object, source: str = "latency table") -> "LatencyTable":
        if not isinstance(data, dict) or data.get("format") != LUT_FORMAT:
            raise LutError(f"{source} is not an hwnas latency table (format {LUT_FORMAT!r}); make one with `hwnas profile`")
        if data.get("version") != LUT_VERSION:
            raise LutError(f"{source}: table version {data.get('version')!r} is not supported (expected {LUT_VERSION})")
        remedy = ("delete that entry and re-measure it with `hwnas profile ... --out TABLE --resume`, or fix the value "
                  f"(the format: {SCHEMA_FILE})")
        problem = first_error(data, "lut")
        if problem:
            fix = remedy if problem.startswith("entries/") else f"the table is malformed: re-run `hwnas profile` or fix it (the format: {SCHEMA_FILE})"
            raise LutError(f"{source}: {problem}; {fix}")
        entries = {}
        for key, value in data["entries"].items():
            try:
                entries[str(OpKey.parse(key))] = Measurement.from_dict(value)
            except LutError as exc:
                raise LutError(f"{source}: entries/{key}: {exc}; {remedy}") from None
        try:
            return cls(
                backend=data["backend"],
                backend_options=dict(data["backend_options"]),
                device=dict(data["device"]),
                batch=int(data["batch"]),
                dtype=str(data["dtype"]),
                spaces=list(data.get("spaces", [])),
                resolutions=[int(r) for r in data.get("resolutions", [])],
                overhead_ms=data.get("overhead_ms"),
                created=str(data.get("created", "")),
                entries=entries,
                calibration=data.get("calibration"),
                statistics=data.get("statistics"),
                reference=data.get("reference"),
                rounds=data.get("rounds"),
                pending=dict(data.get("pending") or {}),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise LutError(f"{source} is malformed ({type(exc).__name__}: {exc}); re-run `hwnas profile`") from None

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyTable":
        try:
            data = read_json(path, "latency table")
        except LutError:
            raise
        except Exception as exc:
            raise LutError(str(exc)) from None
        return cls.from_dict(data, source=str(path))


_LATENCY_FIELDS = ("p10_ms", "p50_ms", "p90_ms", "mean_ms", "std_ms")


def _rescaled_to(reference: dict | None, other: "LatencyTable") -> dict[str, Measurement]:
    """`other`'s entries expressed at the time of `reference` (both tables must share the
    reference network; its time may differ between their profiles)."""
    theirs = other.reference
    if not reference or not theirs:
        if reference or theirs:
            raise LutError("one table has a reference network and the other has none; re-profile the older one")
        return dict(other.entries)
    same = ("space", "resolution", "num_classes", "choices")
    if any(reference.get(k) != theirs.get(k) for k in same):
        raise LutError("the tables were profiled against different reference networks; profile the second one "
                       "with --resume on a copy of the first instead of merging")
    if not reference.get("ms") or not theirs.get("ms"):
        return dict(other.entries)
    factor = float(reference["ms"]) / float(theirs["ms"])
    return {k: Measurement(**{**m.to_dict(), **{f: getattr(m, f) * factor for f in _LATENCY_FIELDS}})
            for k, m in other.entries.items()}


def device_identity(device: dict) -> dict:
    """The parts of a fingerprint that identify hardware and software, not the moment
    (`DeviceFingerprint.identity`)."""
    return DeviceFingerprint.from_dict(device).identity()
