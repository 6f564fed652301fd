"""Export an architecture (and its trained weights) for a mobile runtime: an ExecuTorch program
(`--format pte`, XNNPACK; fp32, or int8 by PT2E post-training quantisation) or a LiteRT model
(`--format tflite`), checked against PyTorch, with a sidecar of its preprocessing and a report;
with a latency table of the format's backend, the exported file measured against its prediction.

Every check runs on in-memory bytes; the files are written, atomically, only once all pass. int8
(pte) also reports what quantisation costs and gains: top-1 of the fp32 and int8 programs on the
held-out split of the calibration data, and their latencies timed interleaved on one thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..export.parity import compare, random_inputs, torch_reference
from ..export.report import REPORT_SUFFIX, versions
from ..jsonio import atomic_write_bytes, atomic_write_json, sha256_file
from ..latency_tables.validation import exported_latency, exported_prediction
from ..locks import hold_all
from ..options import record_from
from ..profilers.table import LatencyTable
from ..runs import check_writable

#: format -> the backend that runs it (a --lut table must be of that backend)
FORMATS = {"pte": "executorch", "tflite": "litert"}
DEFAULT_CALIB_COUNT = 512
MOBILE_REPORT_FORMAT = "hwnas.mobile_export_report"


@dataclass(frozen=True)
class MobileExportRequest:
    """What to export and where (the flags of `hwnas export --format pte|tflite`, by the same names)."""

    arch: str
    format: str
    out: str
    weights: str | None = None
    resolution: int | None = None
    batch: int | None = None
    lut: str | None = None
    report: str | None = None
    force: bool = False
    int8: bool = False
    calib_data: str | None = None
    calib_count: int = DEFAULT_CALIB_COUNT

    @classmethod
    def from_args(cls, args) -> "MobileExportRequest":
        return record_from(cls, vars(args))

    @property
    def report_path(self) -> Path:
        return Path(self.report) if self.report else Path(self.out).parent / (Path(self.out).stem + REPORT_SUFFIX)

    @property
    def sidecar_path(self) -> Path:
        from ..export.pte_export import sidecar_path

        return sidecar_path(self.out)

    def outputs(self) -> list[str]:
        return [str(self.out), str(self.sidecar_path), str(self.report_path)]


@dataclass(frozen=True)
class MobileExported:
    """What an export wrote: the report (as written) and the file's size."""

    request: MobileExportRequest
    report: dict
    model_bytes: int


def check_request(r: MobileExportRequest) -> None:
    """Option rules and the outputs; one-line errors before any work."""
    if r.format not in FORMATS:
        raise ExportError(f"unknown mobile format {r.format!r}; choose one of: {', '.join(FORMATS)}")
    if r.int8 and r.format != "pte":
        raise ExportError(f"--int8 applies to --format pte (XNNPACK) and TensorRT engines, not {r.format}")
    if r.int8 and not r.calib_data:
        raise ExportError("--int8 needs calibration data: add --calib-data digits|cifar10|DIR (the training data)")
    if r.calib_data and not r.int8:
        raise ExportError("--calib-data is used by --int8 only; add --int8 or drop --calib-data")
    if r.calib_count < 1:
        raise ExportError(f"--calib-count must be >= 1, got {r.calib_count}")
    if r.batch is not None and r.batch < 1:
        raise ExportError(f"--batch must be >= 1, got {r.batch}")
    outputs = [Path(p).resolve() for p in r.outputs()]
    if len(set(outputs)) != len(outputs):
        raise ExportError("--out and --report must be different files")
    for path in r.outputs():
        if Path(path).is_dir():
            raise ExportError(f"output {path} is a directory; give a file path")
        if Path(path).exists() and not r.force:
            raise ExportError(f"{path} exists; pass --force to replace it or choose another path")
    for flag, path in (("--out", r.out), ("--report", r.report_path)):
        check_writable(path, flag)


def _check_table(r: MobileExportRequest, table: LatencyTable | None) -> None:
    if table is not None and table.backend != FORMATS[r.format]:
        raise ExportError(f"--lut {r.lut} was profiled on {table.backend}; a .{r.format} file is timed on "
                          f"{FORMATS[r.format]}: give an {FORMATS[r.format]} table (hwnas profile --backend "
                          f"{FORMATS[r.format]}) or drop --lut")
    if table is not None and r.int8:
        raise ExportError("--lut tables are fp32; the int8 report already times fp32 against int8: "
                          "drop --lut or --int8")


def export_mobile(request: MobileExportRequest) -> MobileExported:
    """Check the request, then export under a lock on every output."""
    check_request(request)
    with hold_all(request.outputs(), "export output"):
        check_request(request)
        return _export(request)


def _export(r: MobileExportRequest) -> MobileExported:
    from ..export.model import prepare_model
    from ..export.pte_export import (PTE_FP32_TOLERANCE, PTE_INT8_TOLERANCE, calibration_data, export_pte,
                                     kernel_breakdown, sidecar_metadata)

    table = LatencyTable.load(r.lut) if r.lut else None
    _check_table(r, table)
    batch = 1 if r.batch is None else r.batch
    source = prepare_model(r.arch, weights=r.weights, resolution=r.resolution)
    prediction = None
    if table is not None:
        prediction = exported_prediction(table, source.arch, source.resolution, batch, source.num_classes)
    calibration = calibration_data(r.calib_data, source, r.calib_count) if r.int8 else None

    if r.format == "tflite":
        from ..export.tflite_export import TFLITE_FP32_TOLERANCE, export_tflite
        from ..runtimes.litert import LiteRTRunner

        fp32 = export_tflite(source, batch)
        runner, key, name = LiteRTRunner(fp32, threads=1), "litert_fp32", "litert fp32"
        tolerance = TFLITE_FP32_TOLERANCE
    else:
        lowered = export_pte(source, batch)
        fp32 = lowered.pte
        runner, key, name, tolerance = _runner(fp32), "executorch_fp32", "executorch xnnpack fp32", PTE_FP32_TOLERANCE
    parity = {}
    with runner:
        parity[key] = compare(torch_reference(source.model), runner.infer, random_inputs((batch,), source.resolution),
                              tolerance, "pytorch", name).check().to_dict()
    program, int8, kernels = fp32, None, None
    if calibration is not None:
        lowered = export_pte(source, batch, calibration)
        program = lowered.pte
        int8 = _int8_section(source, fp32, program, calibration, batch, PTE_INT8_TOLERANCE)
        parity["executorch_int8"] = int8.pop("parity")
    if r.format == "pte":
        kernels = kernel_breakdown(lowered, batch, source.resolution)
    latency = None
    if table is not None:
        latency = exported_latency(r.lut, table, prediction, source.arch, source.model, source.resolution, batch,
                                   None, exported=(program, f"exported {table.backend} program"))

    replaced = {k: {"path": p, "sha256": sha256_file(p)} for k, p in zip(("model", "sidecar", "report"), r.outputs())
                if r.force and Path(p).is_file()} or None
    metadata = sidecar_metadata(source, r.format, "int8" if r.int8 else "fp32")
    atomic_write_bytes(r.out, program)
    atomic_write_json(r.sidecar_path, metadata)
    report = {
        "format": MOBILE_REPORT_FORMAT,
        "version": 1,
        "arch": {"ref": source.ref, "space": source.arch.space, "hash": source.arch.hash},
        "weights": source.weights.to_dict() if source.weights else None,
        "model": {"num_classes": source.num_classes, "resolution": source.resolution, "params": source.params,
                  "preprocessing": source.preprocessing.to_dict()},
        "export": {"format": r.format, "path": str(r.out), "bytes": len(program), "backend": FORMATS[r.format],
                   "delegate": "xnnpack" if r.format == "pte" else "the interpreter's default (xnnpack)",
                   "precision": "int8" if r.int8 else "fp32",
                   "input": {"shape": [batch, 3, source.resolution, source.resolution], "dtype": "float32"},
                   "output": {"shape": [batch, source.num_classes]}, "sidecar": str(r.sidecar_path)},
        "metadata": metadata,
        "parity": parity,
        "int8": int8,
        "kernels": kernels,
        "latency": latency,
        "replaced": replaced,
        "versions": {**versions(), **_mobile_versions()},
    }
    atomic_write_json(r.report_path, report)
    return MobileExported(r, report, len(program))


def _runner(pte: bytes, threads: int = 1):
    from ..runtimes.executorch import ExecuTorchRunner

    return ExecuTorchRunner(pte, threads=threads)


def _int8_section(source, fp32: bytes, int8: bytes, calibration, batch: int, tolerance: float) -> dict:
    """int8 against fp32: parity on calibration images, top-1 of both programs on the held-out
    split, and both timed interleaved on one thread (the executorch backend's rounds)."""
    from ..export.pte_export import accuracy
    from ..profilers.end_to_end import measure_end_to_end

    images = next(calibration.batches())
    inputs = [images[i:i + batch] for i in range(0, min(len(images), 4 * batch) - batch + 1, batch)]
    with _runner(int8) as runner:
        parity = compare(torch_reference(source.model), runner.infer, inputs, tolerance, "pytorch fp32",
                         "executorch xnnpack int8", "calibration image").check().to_dict()
        top1_int8 = accuracy(runner.infer, calibration.labelled(), batch) if calibration.labelled else None
    top1_fp32 = None
    if calibration.labelled:
        with _runner(fp32) as runner:
            top1_fp32 = accuracy(runner.infer, calibration.labelled(), batch)
    shape = (batch, 3, source.resolution, source.resolution)
    rounds = measure_end_to_end({"fp32": fp32, "int8": int8}, shape, "executorch", options={"threads": 1})
    fp32_ms = float(np.median([x.time_ms for x in rounds["fp32"]]))
    int8_ms = float(np.median([x.time_ms for x in rounds["int8"]]))
    ratios = [a.time_ms / b.time_ms for a, b in zip(rounds["fp32"], rounds["int8"])]
    return {
        "parity": parity,
        "quantizer": "XNNPACKQuantizer, get_symmetric_quantization_config(is_per_channel=True), PT2E",
        "calibration": calibration.to_dict(),
        "top1_fp32_pct": top1_fp32,
        "top1_int8_pct": top1_int8,
        "accuracy_drop_pct_points": None if top1_fp32 is None else top1_fp32 - top1_int8,
        "latency": {"threads": 1, "rounds": len(ratios), "fp32_ms": fp32_ms, "int8_ms": int8_ms,
                    "speedup": float(np.median(ratios)), "speedup_min": float(min(ratios)),
                    "speedup_max": float(max(ratios)), "clock": "thread"},
        "bytes": {"fp32": len(fp32), "int8": len(int8)},
    }


def _mobile_versions() -> dict:
    from importlib import metadata

    found = {}
    for name in ("executorch", "torchao", "ai-edge-litert", "litert-torch"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
