"""A task model as one tensor-in, tensor-out graph, exported by `hwnas.export` and checked on ONNX Runtime.

`TaskOutput` gives the exporters a plain signature: an image batch [1, 3, R, R] in [0, 1] ->
detections [N, 6] (x1, y1, x2, y2, score, label) or class scores [1, C, R, R]. The ONNX file
comes from `hwnas.export.onnx_export.export_model` (the TorchScript exporter: torchvision's
detection post-processing traces there) with the task's layout added to its metadata.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torch import nn

from ..core.arch import Arch
from ..errors import ExportError
from ..export.model import ExportModel
from ..export.onnx_export import OnnxSpec, export_model
from ..export.parity import FP32_TOLERANCE, OnnxRuntimeRunner, compare

TASK_OPSET = 17
LAYOUTS = {
    "detection": "detections [N, 6]: x1, y1, x2, y2 (pixels), score, label (1..K; 0 is the background)",
    "segmentation": "class scores [1, C, R, R] (argmax over C gives the mask; class 0 is the background)",
}


class TaskOutput(nn.Module):
    """Wraps a torchvision detector (list in, dicts out) or segmenter (dict out) as tensor -> tensor."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.task == "segmentation":
            return self.model(x)["out"]
        out = self.model([x[0]])[0]
        return torch.cat([out["boxes"], out["scores"][:, None], out["labels"][:, None].to(out["boxes"].dtype)], 1)


@dataclass(frozen=True)
class TaskParity:
    """Largest torch-vs-ONNX Runtime difference over the check images (relative to the output scale)."""

    task: str
    images: int
    max_abs_diff: float
    rel_diff: float
    tolerance: float
    agreement: float  # detections: same label per box; segmentation: same argmax class per pixel

    @property
    def passed(self) -> bool:
        close = bool(np.isfinite(self.rel_diff) and self.rel_diff <= self.tolerance)
        return close and (self.task == "segmentation" or self.agreement == 1.0)  # pixel ties may flip an argmax

    def check(self) -> "TaskParity":
        """Raise ExportError when over tolerance (nothing has been written yet at that point)."""
        if not self.passed:
            raise ExportError(f"parity check failed: ONNX Runtime differs from torch by {self.max_abs_diff:.3g} "
                              f"({self.rel_diff:.3g} of the output scale, tolerance {self.tolerance:g}; agreement "
                              f"{self.agreement:.0%}); nothing was written")
        return self

    def to_dict(self) -> dict:
        return {"task": self.task, "images": self.images, "max_abs_diff": self.max_abs_diff, "rel_diff": self.rel_diff,
                "tolerance": self.tolerance, "agreement": self.agreement, "passed": self.passed}


def export_task_onnx(model: nn.Module, task: str, head: str, arch: Arch, ref: str, num_classes: int,
                     resolution: int) -> bytes:
    """Checked ONNX bytes of the whole task model (batch 1, opset 17), task layout in the metadata."""
    wrapped = TaskOutput(model.eval(), task).eval()
    source = ExportModel(ref, arch, wrapped, num_classes, resolution, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings of torchvision's post-processing: shapes are fixed here
        exported = export_model(source, OnnxSpec(batch=1, opset=TASK_OPSET, exporter="torchscript"))
    proto = onnx.load_from_string(exported)
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({"hwnas.task": task, "hwnas.head": head, "hwnas.output": LAYOUTS[task], "hwnas.input_range": "0..1"})
    onnx.helper.set_model_props(proto, props)
    return proto.SerializeToString()


def _rows(task: str, out: np.ndarray) -> np.ndarray:
    """Detections as they are; class scores as one row per pixel (so argmax over axis 1 is the class)."""
    if task == "detection":
        return out
    return np.ascontiguousarray(out.transpose(0, 2, 3, 1).reshape(-1, out.shape[1]))


def task_parity(model: nn.Module, onnx_bytes: bytes, task: str, images: list[torch.Tensor],
                tolerance: float = FP32_TOLERANCE) -> TaskParity:
    """Run torch and ONNX Runtime on the same images; fail when they differ beyond `tolerance`."""
    wrapped = TaskOutput(model.eval(), task).eval()
    inputs = [img[None].numpy().astype(np.float32) for img in images]

    def reference(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return _rows(task, wrapped(torch.from_numpy(x)).numpy())

    with OnnxRuntimeRunner(onnx_bytes, threads=1) as runner:
        def candidate(x: np.ndarray) -> np.ndarray:
            return _rows(task, runner.infer(x))

        # compare() refuses outputs of different shapes (a detector that kept other boxes)
        diff = compare(reference, candidate, inputs, tolerance, "torch", "onnxruntime", "validation")
        column = 5 if task == "detection" else None
        agree = [_agreement(reference(x), candidate(x), column) for x in inputs]
    return TaskParity(task, len(inputs), diff.max_abs_diff, diff.rel_diff, tolerance, min(agree, default=1.0))


def _agreement(ref: np.ndarray, got: np.ndarray, label_column: int | None) -> float:
    if label_column is not None:
        return float(np.mean(ref[:, label_column] == got[:, label_column])) if len(ref) else 1.0
    return float(np.mean(ref.argmax(1) == got.argmax(1)))
