"""`MODEL.export_report.json`: what was exported, how it was checked, and where.

Sections: `arch`, `weights`, `onnx` (exporter, opset, input/output shapes), `tensorrt` (or null),
`parity` (one record per checked backend), `sizes` (bytes), `versions`, `device`, and
`latency`: null until `--lut` fills it with predicted vs measured latency (see
`latency_section`, the one place that will change).
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from importlib import metadata, util

from pathlib import Path

from .. import __version__
from ..errors import ExportError
from ..jsonio import atomic_write_json

REPORT_FORMAT = "hwnas.export_report"
REPORT_VERSION = 1
REPORT_SUFFIX = ".export_report.json"


def report_name(onnx_path) -> str:
    """The report's file name, after its model (`model.onnx` -> `model.export_report.json`), so two
    models exported into one folder each keep their own."""
    return Path(onnx_path).stem + REPORT_SUFFIX
_PACKAGES = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "timm", "numpy")


def versions() -> dict:
    """Versions of the packages an export depends on (`tensorrt` only where importable)."""
    found = {"hwnas": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if util.find_spec("tensorrt") is not None:
        try:
            import tensorrt

            found["tensorrt"] = tensorrt.__version__
        except Exception:  # a broken install is reported as such, not raised
            found["tensorrt"] = "unusable"
    return found


def device_fingerprint() -> dict:
    """The exporting machine: the profilers' fingerprint (CPU, GPU when CUDA is usable, libraries)."""
    from ..profilers.fingerprint import device_fingerprint as full_fingerprint

    gpu_index = None
    try:
        import torch

        gpu_index = 0 if torch.cuda.is_available() else None
    except Exception:
        gpu_index = None
    return full_fingerprint(None, _PACKAGES, gpu_index=gpu_index)


def latency_prediction(table, arch, resolution: int, batch: int, num_classes: int):
    """Predict the exported network (its head at `num_classes`) before any export work: a table of
    another batch, or one without that head, fails fast."""
    from ..latency_tables.loading import space_for_table
    from ..latency_tables.predictor import LatencyPredictor

    if batch != table.batch:
        raise ExportError(f"the table was measured at batch {table.batch}, the export is at batch {batch}; "
                          f"export with --batch {table.batch} to compare latencies")
    space = space_for_table(table, arch.space, resolution, num_classes)
    return LatencyPredictor(table, space).predict(arch)


def latency_section(lut_path, table, prediction, arch, model, resolution: int, batch: int,
                    onnx_bytes: bytes) -> dict:
    """Predicted vs measured latency of the exported model on the LUT's backend.

    ONNX Runtime backends time the exported ONNX bytes themselves; PyTorch backends time the
    model they were exported from. The model is timed in interleaved rounds with the table's
    reference network (hwnas.latency_tables.validation), so that `measured_ms` is at the speed
    the table was profiled at, as the prediction is; `absolute_ms` is as timed now. The
    prediction is the calibrated one searches use.
    """
    import tempfile

    from ..latency_tables.loading import open_profiler
    from ..latency_tables.validation import END_TO_END, EndToEnd
    from ..profilers.interleaved import time_rounds
    from ..reference import reference_model, reference_ms

    shape = (batch, 3, resolution, resolution)
    r0 = reference_ms(table.reference)
    ref_model, ref_shape = reference_model(table.reference, table.batch)
    with open_profiler(table) as profiler, tempfile.TemporaryDirectory() as tmp:
        if hasattr(profiler, "prepare_onnx"):
            path = os.path.join(tmp, "model.onnx")
            with open(path, "wb") as f:
                f.write(onnx_bytes)
            runner, what = profiler.prepare_onnx(path, shape), "exported ONNX model"
        else:
            runner, what = profiler.prepare(model, shape), "PyTorch model"
        with runner, profiler.prepare(ref_model, ref_shape) as reference:
            (rounds,) = time_rounds({"model": runner.time_call}, reference.time_call, END_TO_END).values()
    measured = EndToEnd.from_rounds(arch, rounds, r0)
    error = (prediction.latency_ms - measured.measured_ms) / measured.measured_ms * 100.0
    return {
        "num_classes": int(model.num_classes),
        "lut": str(lut_path),
        "backend": table.backend,
        "backend_options": table.backend_options,
        "measured_what": what,
        "predicted_ms": prediction.latency_ms,
        "raw_sum_ms": prediction.raw_sum_ms,
        "stated_error_pct": prediction.error_pct,
        "coverage_note": prediction.coverage_note,
        "measured_ms": measured.measured_ms,
        "absolute_ms": measured.absolute_ms,
        "speed_vs_table": measured.speed,
        "rounds": len(rounds),
        "error_pct": error,
    }


def published_latency_section(lut_path, table, prediction, num_classes: int) -> dict:
    """The prediction of a published table, not measured: its device (a phone) is not this machine,
    so the exported model is to be timed there; the error of a published table is unknown."""
    return {
        "num_classes": int(num_classes),
        "lut": str(lut_path),
        "backend": table.backend,
        "backend_options": table.backend_options,
        "device": table.device.get("name"),
        "predicted_ms": prediction.latency_ms,
        "raw_sum_ms": prediction.raw_sum_ms,
        "stated_error_pct": None,
        "derived": prediction.derived,
        "measured_ms": None,
        "note": f"predicted from a published table of {table.device.get('name')}; not measured (this machine is not "
                "that device) and its error is unknown: time the exported model on that device",
    }


def build_report(*, source, onnx_spec, onnx_path, onnx_bytes: int, parity: dict, output_shape: list,
                 engine_spec=None, engine_path=None, engine_bytes: int | None = None,
                 latency: dict | None = None, replaced: dict | None = None) -> dict:
    """Assemble the report document (plain JSON types only). `replaced`: the files --force replaced
    ({kind: {path, sha256}}), so an overwrite can be traced."""
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "arch": {"ref": source.ref, "space": source.arch.space, "hash": source.arch.hash, "definition": source.arch.to_dict()},
        "weights": source.weights.to_dict() if source.weights else None,
        "model": {"num_classes": source.num_classes, "resolution": source.resolution, "params": source.params,
                  "preprocessing": source.preprocessing.to_dict()},
        "onnx": {
            "path": str(onnx_path),
            "exporter": onnx_spec.exporter,
            "opset": onnx_spec.opset,
            "input": {"name": "input", "shape": onnx_spec.input_shape(source.resolution), "dynamic_batch": onnx_spec.dynamic_batch},
            "output": {"name": "logits", "shape": output_shape},
        },
        "tensorrt": {"path": str(engine_path), **engine_spec.to_dict()} if engine_spec else None,
        "parity": parity,
        "sizes": {"onnx_bytes": onnx_bytes, "engine_bytes": engine_bytes},
        "latency": latency,
        "replaced": replaced,
        "versions": versions(),
        "device": device_fingerprint(),
    }


def write_report(path: str | os.PathLike, report: dict) -> None:
    atomic_write_json(path, report)
