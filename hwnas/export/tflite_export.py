"""The exported model as a LiteRT model (`.tflite`, float32, NCHW input) converted by litert-torch
(the runtime layer's conversion, hwnas.runtimes.litert.convert_tflite). Its preprocessing goes
into the same sidecar JSON as a `.pte`'s (hwnas.export.pte_export.sidecar_metadata)."""

from __future__ import annotations

import torch

from ..errors import BackendError, ExportError
from .model import ExportModel

#: parity with PyTorch: max abs diff / max |PyTorch logit| (XNNPACK fp32 kernels, another summation order)
TFLITE_FP32_TOLERANCE = 1e-4


def export_tflite(source: ExportModel, batch: int) -> bytes:
    """`source.model` at a fixed `batch` as `.tflite` bytes."""
    from ..runtimes.litert import convert_tflite

    example = torch.randn(batch, 3, source.resolution, source.resolution)
    try:
        return convert_tflite(source.model.eval(), example, what=source.ref)
    except BackendError as exc:
        raise ExportError(str(exc)) from None
