"""What a finished transfer run adds to its directory: the predictions PNG, an ONNX file checked
against torch, and the task model's latency; each is merged into metrics.json."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..core.arch import Arch
from ..errors import HwnasError
from ..jsonio import atomic_write_bytes, atomic_write_json, read_json
from ..profilers.table import LatencyTable
from .data import TaskData
from .export import TaskParity, export_task_onnx, task_parity
from .latency import TaskLatency, backbone_of, task_latency
from .pipeline import TransferConfig
from .plots import predictions_png


def export_checked(model: nn.Module, cfg: TransferConfig, arch: Arch | None, data: TaskData,
                   path: str | Path) -> TaskParity:
    """Export the whole task model to ONNX, compare it with torch on up to two validation images,
    and write it only when they agree."""
    if arch is None:
        raise HwnasError(f"--onnx exports hwnas architectures (the ONNX metadata carries the arch); {cfg.arch} has none")
    onnx_bytes = export_task_onnx(model, cfg.task, cfg.head, arch, cfg.arch, data.num_classes, cfg.resolution)
    images = [data.val[i][0] for i in range(min(2, len(data.val)))]
    parity = task_parity(model, onnx_bytes, cfg.task, images).check()
    atomic_write_bytes(path, onnx_bytes)
    return parity


def run_latency(model: nn.Module, cfg: TransferConfig, arch: Arch | None, data: TaskData, lut: str | None = None,
                threads: int = 1, stats=None, clock: str = "wall") -> TaskLatency:
    """Latency of the task model, timed on the first validation image: on the `lut` table's backend
    and options (at its speed) where one is given, so that the head's cost adds to that table's
    backbone prediction; else, and for a published table (see head_on_device), on ONNX Runtime
    CPU with `threads` and `clock`."""
    image = data.val[0][0][None] if len(data.val) else None
    with torch.no_grad():
        return task_latency(model, backbone_of(model), cfg.task, cfg.resolution, arch=arch, lut=lut, image=image,
                            threads=threads, stats=stats, clock=clock,
                            table=LatencyTable.load(lut) if lut else None)


def add_to_metrics(run_dir: str | Path, **fields) -> None:
    """Merge `fields` into RUN_DIR/metrics.json (atomically)."""
    path = Path(run_dir) / "metrics.json"
    doc = read_json(path, "metrics file")
    doc.update(fields)
    atomic_write_json(path, doc)


def write_predictions(model: nn.Module, data: TaskData, run_dir: str | Path) -> Path:
    path = Path(run_dir) / "predictions.png"
    predictions_png(model, data, path)
    return path
