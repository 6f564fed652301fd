"""`MODEL.export_report.json`: what was exported, how it was checked, and where.

Sections: `arch`, `weights`, `onnx` (exporter, opset, input/output shapes; null for an OpenVINO
export, which has `openvino` instead: IR files, precision, int8 accuracy and speed-up, per-layer
times), `tensorrt` (or null),
`parity` (one record per checked backend), `sizes` (bytes), `versions`, `device`, and
`latency`: null until `--lut` fills it with predicted vs measured latency (measured end to end on
the table's backend: hwnas.latency_tables.validation.exported_latency).
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from importlib import metadata, util

from pathlib import Path

from .. import __version__
from ..jsonio import atomic_write_json

REPORT_FORMAT = "hwnas.export_report"
REPORT_VERSION = 1
REPORT_SUFFIX = ".export_report.json"


def report_name(onnx_path) -> str:
    """The report's file name, after its model (`model.onnx` -> `model.export_report.json`), so two
    models exported into one folder each keep their own."""
    return Path(onnx_path).stem + REPORT_SUFFIX
_PACKAGES = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "timm", "numpy", "openvino", "nncf")


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
    from ..runtimes.fingerprint import device_fingerprint as full_fingerprint

    gpu_index = None
    try:
        import torch

        gpu_index = 0 if torch.cuda.is_available() else None
    except Exception:
        gpu_index = None
    return full_fingerprint(None, _PACKAGES, gpu_index=gpu_index)


def build_report(*, source, onnx_spec, onnx_path, onnx_bytes: int | None, parity: dict, output_shape: list,
                 engine_spec=None, engine_path=None, engine_bytes: int | None = None,
                 latency: dict | None = None, replaced: dict | None = None, openvino: dict | None = None,
                 sizes: dict | None = None) -> dict:
    """Assemble the report document (plain JSON types only). `replaced`: the files --force replaced
    ({kind: {path, sha256}}), so an overwrite can be traced. An OpenVINO export has `onnx` null and
    its `openvino` section (IR paths, precision, int8 accuracy and speed-up, per-layer times)."""
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
        } if onnx_spec is not None else None,
        "openvino": openvino,
        "tensorrt": {"path": str(engine_path), **engine_spec.to_dict()} if engine_spec else None,
        "parity": parity,
        "sizes": sizes or {"onnx_bytes": onnx_bytes, "engine_bytes": engine_bytes},
        "latency": latency,
        "replaced": replaced,
        "versions": versions(),
        "device": device_fingerprint(),
    }


def write_report(path: str | os.PathLike, report: dict) -> None:
    atomic_write_json(path, report)
