"""Export an architecture (and its trained weights) to a checked ONNX model, optionally a TensorRT
engine, and a report; with a latency table, the exported model measured against its prediction.

Every check (ONNX checker, ONNX Runtime parity, engine parity) runs on in-memory bytes; files are
written, atomically, only once all of them pass. Bad input writes nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExportError
from ..options import record_from
from ..export.onnx_export import DEFAULT_OPSET, OnnxSpec, export_model
from ..export.parity import FP32_TOLERANCE, OnnxRuntimeRunner, compare, random_inputs, torch_reference
from ..export.report import build_report, report_name, write_report
from ..jsonio import atomic_write_bytes, sha256_file
from ..latency_tables.validation import exported_latency, exported_prediction
from ..locks import hold_all
from ..profilers.table import LatencyTable
from ..runs import check_writable
from ..runtimes.onnx_model import EXPORTERS
from ..runtimes.tensorrt import TensorRTRunner

#: what `hwnas export --format` writes: an ONNX model (optionally a TensorRT engine beside it), an OpenVINO IR
FORMATS = ("onnx", "openvino")
DYNAMIC_PARITY_BATCHES = (1, 3)
DEFAULT_MAX_BATCH = 16
DEFAULT_CALIB_COUNT = 512


@dataclass(frozen=True)
class ExportRequest:
    """What to export and where (the flags of `hwnas export`, by the same names)."""

    arch: str
    onnx: str | None = None
    format: str = "onnx"
    out: str | None = None
    weights: str | None = None
    resolution: int | None = None
    batch: int | None = None
    dynamic_batch: bool = False
    opset: int | None = None
    exporter: str | None = None
    lut: str | None = None
    report: str | None = None
    force: bool = False
    tensorrt: str | None = None
    fp16: bool = False
    int8: bool = False
    int8_mode: str | None = None
    calib_data: str | None = None
    calib_count: int = DEFAULT_CALIB_COUNT
    max_batch: int | None = None
    workspace_mb: int | None = None

    @classmethod
    def from_args(cls, args) -> "ExportRequest":
        return record_from(cls, vars(args))

    @property
    def model_path(self) -> str:
        """The model file: --onnx, else --out."""
        return self.onnx or self.out or ""

    @property
    def report_path(self) -> Path:
        return Path(self.report) if self.report else Path(self.model_path).parent / report_name(self.model_path)

    def outputs(self) -> list[str]:
        weights = str(Path(self.out).with_suffix(".bin")) if self.format == "openvino" and self.out else None
        return [str(p) for p in (self.model_path, weights, self.tensorrt, self.report_path) if p]


@dataclass(frozen=True)
class Exported:
    """What an export wrote and found: the report (as written), the parity records, and sizes."""

    request: ExportRequest
    report: dict
    parity: dict
    onnx_spec: OnnxSpec
    onnx_bytes: int
    engine_bytes: int | None
    engine_precision: str | None
    weights: bool


def check_request(request: ExportRequest) -> None:
    """Cross-option rules argparse cannot express, and the outputs; one-line errors before any work."""
    r = request
    if r.format not in FORMATS:
        raise ExportError(f"unknown export format {r.format!r}; choose one of: {', '.join(FORMATS)}")
    if r.format == "onnx" and bool(r.onnx) == bool(r.out):
        raise ExportError("give the ONNX file to write: --onnx FILE (or --out FILE), one of them")
    if r.format == "openvino":
        check_openvino_request(r)
    elif not r.tensorrt:
        given = [flag for flag, on in (("--fp16", r.fp16), ("--int8", r.int8), ("--calib-data", r.calib_data),
                                       ("--max-batch", r.max_batch), ("--workspace-mb", r.workspace_mb),
                                       ("--int8-mode", r.int8_mode)) if on]
        if given:
            raise ExportError(f"{given[0]} applies to a TensorRT engine; add --tensorrt FILE")
    if r.int8 and not r.calib_data:
        raise ExportError("--int8 needs calibration images: add --calib-data DIR (an ImageFolder-style folder)")
    if r.int8_mode and not r.int8:
        raise ExportError("--int8-mode applies to --int8 engines; add --int8 or drop --int8-mode")
    if r.calib_data and not r.int8:
        raise ExportError("--calib-data is used by --int8 only; add --int8 or drop --calib-data")
    if r.max_batch is not None and not r.dynamic_batch:
        raise ExportError("--max-batch applies to --dynamic-batch engines; a fixed-batch engine uses --batch")
    if r.max_batch is not None and r.max_batch < 1:
        raise ExportError(f"--max-batch must be >= 1, got {r.max_batch}")
    if r.workspace_mb is not None and r.workspace_mb < 1:
        raise ExportError(f"--workspace-mb must be >= 1, got {r.workspace_mb}")
    outputs = [Path(p).resolve() for p in r.outputs()]
    if len(set(outputs)) != len(outputs):
        raise ExportError("--onnx, --tensorrt and the report must be different files")
    check_outputs(r)


def check_openvino_request(r: ExportRequest) -> None:
    """`--format openvino`: --out MODEL.xml, a fixed batch, no ONNX or TensorRT flags; --int8 with --calib-data."""
    if not r.out or Path(r.out).suffix != ".xml":
        raise ExportError("--format openvino writes an IR: give --out MODEL.xml (MODEL.bin is written beside it)")
    given = [flag for flag, on in (("--onnx", r.onnx), ("--tensorrt", r.tensorrt), ("--fp16", r.fp16),
                                   ("--dynamic-batch", r.dynamic_batch), ("--opset", r.opset is not None),
                                   ("--int8-mode", r.int8_mode), ("--max-batch", r.max_batch),
                                   ("--workspace-mb", r.workspace_mb)) if on]
    if given:
        raise ExportError(f"{given[0]} does not apply to --format openvino; drop it (or export with --format onnx)")
    if r.int8 and not r.calib_data:
        raise ExportError("--int8 needs calibration images: add --calib-data digits|DIR (the training data: a "
                          "built-in name or an ImageFolder with train/ and val/, or a folder of images)")
    if r.calib_data and not r.int8:
        raise ExportError("--calib-data is used by --int8 only; add --int8 or drop --calib-data")
    if r.calib_count < 1:
        raise ExportError(f"--calib-count must be >= 1, got {r.calib_count}")


def check_outputs(request: ExportRequest) -> None:
    """No output is a directory, none exists without --force, every folder is writable."""
    for path in request.outputs():
        if Path(path).is_dir():
            raise ExportError(f"output {path} is a directory; give a file path")
        if Path(path).exists() and not request.force:
            raise ExportError(f"{path} exists; pass --force to replace it (atomically, its sha256 recorded in the report) "
                              "or choose another path")
    for flag, path in (("--onnx", request.onnx), ("--out", request.out), ("--tensorrt", request.tensorrt),
                       ("--report", request.report_path)):
        if path:
            check_writable(path, flag)


def export(request: ExportRequest) -> Exported:
    """Check the request, then export under a lock on every output (a second export of the same
    files waits its turn and is refused if they appeared meanwhile)."""
    check_request(request)
    with hold_all(request.outputs(), "export output"):
        check_outputs(request)
        if request.format == "openvino":
            from .export_openvino import export_openvino

            replaced = _replaced(request) if request.force else None  # before anything is written
            report, parity, size, weights = export_openvino(request, replaced, _torch_threads())
            return Exported(request, report, parity, None, size, None, None, weights)
        return _export(request)


def _replaced(request: ExportRequest) -> dict | None:
    """{output kind: {path, sha256}} of the files --force is about to replace (None when none)."""
    kinds = {request.format: request.model_path, "tensorrt": request.tensorrt, "report": str(request.report_path)}
    if request.format == "openvino":
        kinds["openvino_bin"] = request.outputs()[1]
    found = {kind: {"path": str(path), "sha256": sha256_file(path)} for kind, path in kinds.items()
             if path and Path(path).is_file()}
    return found or None


def exporter_and_opset(request: ExportRequest, table: LatencyTable | None) -> tuple[str, int]:
    """The flags; else, with a --lut table, the exporter and opset its ops were measured with (ONNX
    Runtime tables), so that the deployed graph is the one the prediction is made of; else dynamo."""
    exporter, opset = request.exporter, request.opset
    if table is not None and exporter is None and opset is None:
        options = table.backend_options
        if options.get("exporter") in EXPORTERS and isinstance(options.get("opset"), int):
            return options["exporter"], options["opset"]
    return exporter or "dynamo", DEFAULT_OPSET if opset is None else opset


def _torch_threads() -> int:
    """ONNX Runtime checks use as many threads as torch does (tests pin torch to 1)."""
    import torch

    return torch.get_num_threads()


def _export(r: ExportRequest) -> Exported:
    from ..export.model import prepare_model

    batch = None if r.dynamic_batch else (1 if r.batch is None else r.batch)
    table = LatencyTable.load(r.lut) if r.lut else None
    exporter, opset = exporter_and_opset(r, table)
    onnx_spec = OnnxSpec(batch=batch, opset=opset, exporter=exporter)
    onnx_spec.validate()
    if r.tensorrt:
        from ..export import tensorrt_engine

        trt = tensorrt_engine.check_available()
    source = prepare_model(r.arch, weights=r.weights, resolution=r.resolution)
    prediction = None
    if table is not None:
        if onnx_spec.dynamic_batch:
            raise ExportError("--lut compares a fixed-batch model with the table; drop --dynamic-batch or --lut")
        prediction = exported_prediction(table, source.arch, source.resolution, onnx_spec.batch, source.num_classes)
    engine_spec, calibration = None, None
    if r.tensorrt:
        engine_spec = tensorrt_engine.EngineSpec(
            resolution=source.resolution, batch=onnx_spec.batch, max_batch=r.max_batch or DEFAULT_MAX_BATCH,
            fp16=r.fp16, int8=r.int8, workspace_mb=r.workspace_mb or tensorrt_engine.DEFAULT_WORKSPACE_MB,
            int8_mode=r.int8_mode or "qdq",
        )
        tensorrt_engine.plan_build(trt, engine_spec)  # a precision this TensorRT cannot build fails here
        if r.int8:
            from ..export.int8_calibration import ImageBatches

            calibration = ImageBatches(r.calib_data, source.resolution, engine_spec.calibration_batch, r.calib_count,
                                       preprocessing=source.preprocessing)

    onnx_bytes = export_model(source, onnx_spec)
    batches = DYNAMIC_PARITY_BATCHES if onnx_spec.dynamic_batch else (onnx_spec.batch,)
    inputs = random_inputs(batches, source.resolution)
    parity, engine = {}, None
    with OnnxRuntimeRunner(onnx_bytes, threads=_torch_threads()) as ort_runner:
        parity["onnxruntime"] = compare(
            torch_reference(source.model), ort_runner.infer, inputs, FP32_TOLERANCE,
            "pytorch", "onnxruntime (CPUExecutionProvider)",
        ).check()
        if engine_spec:
            engine = tensorrt_engine.build_engine(onnx_bytes, engine_spec, calibration)
            if calibration is not None:  # int8 ranges fit real images; noise would say little
                trt_inputs, kind = list(itertools.islice(iter(calibration), 2)), "calibration image"
            else:
                trt_inputs, kind = random_inputs(tensorrt_engine.engine_batches(engine_spec, batches), source.resolution), "random"
            with TensorRTRunner(engine) as trt_runner:
                parity["tensorrt"] = compare(
                    ort_runner.infer, trt_runner.infer, trt_inputs, engine_spec.tolerance,
                    "onnxruntime (CPUExecutionProvider)", f"tensorrt {engine_spec.precision}", kind,
                ).check()
    latency = None
    if table is not None:
        latency = exported_latency(r.lut, table, prediction, source.arch, source.model, source.resolution,
                                   onnx_spec.batch, onnx_bytes)

    replaced = _replaced(r) if r.force else None
    atomic_write_bytes(r.model_path, onnx_bytes)
    if engine is not None:
        atomic_write_bytes(r.tensorrt, engine)
    report = build_report(
        source=source, onnx_spec=onnx_spec, onnx_path=r.model_path, onnx_bytes=len(onnx_bytes),
        parity={k: v.to_dict() for k, v in parity.items()},
        output_shape=[onnx_spec.input_shape(source.resolution)[0], source.num_classes],
        engine_spec=engine_spec, engine_path=r.tensorrt, engine_bytes=len(engine) if engine is not None else None,
        latency=latency, replaced=replaced,
    )
    write_report(r.report_path, report)
    return Exported(r, report, parity, onnx_spec, len(onnx_bytes), None if engine is None else len(engine),
                    None if engine_spec is None else engine_spec.precision, bool(source.weights))
