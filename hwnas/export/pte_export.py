"""The exported model as an ExecuTorch program (`.pte`, XNNPACK delegate), fp32 or int8, with the
data an int8 model is calibrated and judged on.

fp32: the runtime layer's lowering (hwnas.runtimes.executorch.lower_pte). int8: post-training
quantisation with the PT2E XNNPACK quantizer (symmetric int8, weights per channel), calibrated on
the training data. A `.pte` carries no free-form metadata, so the preprocessing, classes and
architecture go into a sidecar JSON beside it (`sidecar_metadata`, the ONNX metadata's keys).

Calibration data (`calibration_data`): a built-in dataset name (`digits`, `cifar10`) or an
ImageFolder tree with train/ and val/ (calibrate on train images, report accuracy on val), or a
flat folder of images (calibration only, read by hwnas.export.int8_calibration.ImageBatches).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import BackendError, ExportError
from .model import ExportModel

#: parity of the fp32 program with PyTorch: max abs diff / max |PyTorch logit| (XNNPACK's fp32
#: kernels sum in another order and fuse BatchNorm: ~1e-6 measured on fbnet and tiny)
PTE_FP32_TOLERANCE = 1e-4
#: int8 against PyTorch fp32 on real images: quantisation error, not a bug, up to this share of the logit scale
PTE_INT8_TOLERANCE = 0.25
SIDECAR_SUFFIX = ".meta.json"


@dataclass(frozen=True)
class CalibrationData:
    """Images to calibrate int8 on (`batches`) and, where labelled, the held-out split to judge
    accuracy on (`labelled`: (images, labels) batches; None for an unlabelled folder)."""

    source: str
    batches: Callable[[], Iterator[np.ndarray]]
    count: int
    labelled: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]] | None
    labelled_count: int

    def to_dict(self) -> dict:
        return {"source": self.source, "calibration_images": self.count,
                "accuracy_images": self.labelled_count if self.labelled else None}


def calibration_data(source: str, model: ExportModel, count: int, batch: int = 32) -> CalibrationData:
    """`source`: `digits`/`cifar10` or a folder with train/ and val/ (labelled), else a flat image folder."""
    from ..train.data import BUILTIN, load_data

    folder = Path(source)
    if source in BUILTIN or ((folder / "train").is_dir() and (folder / "val").is_dir()):
        data = load_data(source, resolution=model.resolution)
        if data.num_classes != model.num_classes:
            raise ExportError(f"--calib-data {source} has {data.num_classes} classes, the model {model.num_classes}; "
                              "give the data the model was trained on")
        if data.preprocessing != model.preprocessing:
            raise ExportError(f"--calib-data {source} is normalised as {data.preprocessing.to_dict()}, the model "
                              "expects "
                              f"{model.preprocessing.to_dict()}; give the data the model was trained on")
        from ..train.data import without_augmentation

        train, val = without_augmentation(data.train), data.val
        n = min(count, len(train))
        order = np.random.default_rng(0).permutation(len(train))[:n]

        def batches():
            for start in range(0, n, batch):
                yield torch.stack([train[int(i)][0] for i in order[start:start + batch]]).numpy()

        def labelled():
            for start in range(0, len(val), batch):
                items = [val[i] for i in range(start, min(start + batch, len(val)))]
                yield torch.stack([x for x, _ in items]).numpy(), np.asarray([y for _, y in items])

        return CalibrationData(source, batches, n, labelled, len(val))
    from .int8_calibration import ImageBatches

    images = ImageBatches(source, model.resolution, 1, count, preprocessing=model.preprocessing)
    return CalibrationData(source, lambda: iter(images), len(images), None, 0)


def export_pte(source: ExportModel, batch: int, calibration: CalibrationData | None = None):
    """`source.model` at a fixed `batch` as an ExecuTorch program with its ETRecord
    (hwnas.runtimes.executorch.Lowered; int8 when `calibration` is given)."""
    from ..runtimes.executorch import lower_pte, quantize_pt2e

    example = torch.randn(batch, 3, source.resolution, source.resolution)
    model = source.model.eval()
    try:
        if calibration is not None:
            model = quantize_pt2e(model, example, calibration.batches())
        return lower_pte(model, example, etrecord=True, what=source.ref)
    except BackendError as exc:
        raise ExportError(str(exc)) from None


def kernel_breakdown(lowered, batch: int, resolution: int, top: int = 10) -> dict:
    """The report's `kernels` section: the program's XNNPACK kernels as ETDump timed them on one
    thread (Inspector with the ETRecord): their count, their sum, the slowest `top`, and `Method::execute`."""
    from ..runtimes.executorch import etdump_breakdown

    kernels, execute_ms = etdump_breakdown(lowered, (batch, 3, resolution, resolution))
    total = sum(k.p50_ms for k in kernels)
    slowest = sorted(kernels, key=lambda k: -k.p50_ms)[:top]
    return {"source": "ETDump (executorch.devtools.Inspector with the ETRecord), 1 thread, 20 calls, "
                      "ExecuTorch's wall clock with event tracing on (not the timed latency)",
            "execute_ms": round(execute_ms, 5), "kernels": len(kernels),
            "delegated": sum(k.delegated for k in kernels), "kernels_ms": round(total, 5),
            "slowest": [k.to_dict() for k in slowest]}


def sidecar_metadata(source: ExportModel, fmt: str, precision: str) -> dict:
    """What a deployment needs besides the program (the ONNX export's metadata keys)."""
    return {
        "hwnas.format": fmt,
        "hwnas.precision": precision,
        "hwnas.arch": source.arch.to_dict(),
        "hwnas.arch_hash": source.arch.hash,
        "hwnas.space": source.arch.space,
        "hwnas.resolution": source.resolution,
        "hwnas.num_classes": source.num_classes,
        "hwnas.input_layout": "NCHW float32",
        **{k: json.loads(v) if v.startswith("[") else v for k, v in source.preprocessing.metadata().items()},
        "hwnas.weights_sha256": source.weights.sha256 if source.weights else "untrained",
    }


def sidecar_path(model_path) -> Path:
    """`model.pte` -> `model.pte.meta.json`."""
    return Path(str(model_path) + SIDECAR_SUFFIX)


def accuracy(infer: Callable[[np.ndarray], np.ndarray], labelled: Iterator[tuple[np.ndarray, np.ndarray]],
             batch: int) -> float:
    """Top-1 (%) of `infer` over labelled batches, run `batch` images at a time (a fixed-batch program)."""
    correct = total = 0
    for images, labels in labelled:
        for start in range(0, len(images) - batch + 1, batch):
            logits = infer(images[start:start + batch])
            correct += int(np.sum(np.argmax(logits, axis=1) == labels[start:start + batch]))
            total += batch
    if total == 0:
        raise ExportError("no labelled image to measure accuracy on")
    return 100.0 * correct / total
