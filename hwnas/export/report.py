"""`export_report.json`: what was exported, how it was checked, and where.

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

from .. import __version__
from ..jsonio import atomic_write_json

REPORT_FORMAT = "hwnas.export_report"
REPORT_VERSION = 1
REPORT_NAME = "export_report.json"
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


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_fingerprint() -> dict:
    """Fingerprint-lite of the exporting machine: platform, CPU model, cores, GPU if any."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:
        gpu = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "gpu": gpu,
    }


def latency_section(**_unused) -> dict | None:
    """Predicted vs measured latency of the exported model: null for now.

    `hwnas export --lut FILE` (issue 6, item 3) will return here
    `{"lut": path, "backend": ..., "predicted_ms": ..., "measured_ms": ..., "error_pct": ...}`.
    """
    return None


def build_report(*, source, onnx_spec, onnx_path, onnx_bytes: int, parity: dict, output_shape: list,
                 engine_spec=None, engine_path=None, engine_bytes: int | None = None,
                 latency: dict | None = None) -> dict:
    """Assemble the report document (plain JSON types only)."""
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "arch": {"ref": source.ref, "space": source.arch.space, "hash": source.arch.hash, "definition": source.arch.to_dict()},
        "weights": source.weights.to_dict() if source.weights else None,
        "model": {"num_classes": source.num_classes, "resolution": source.resolution, "params": source.params},
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
        "versions": versions(),
        "device": device_fingerprint(),
    }


def write_report(path: str | os.PathLike, report: dict) -> None:
    atomic_write_json(path, report)
