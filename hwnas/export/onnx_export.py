"""The exported model: torch -> ONNX in memory (the runtime layer's one exporter,
hwnas.runtimes.onnx_model.export_onnx), deployment metadata, then `onnx.checker` and a
structural check of what came out.

Exporter choice: `dynamo` is the default (torch 2.14's default, the maintained one; a symbolic
batch with `dynamic_shapes`), opset 18 or newer; lower opsets are refused here and served by
`torchscript` (opsets 9-20). The model is written only after every check passes (see commands/export).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import onnx
import torch

from ..errors import ExportError
from ..runtimes.onnx_model import BATCH_DIM, INPUT_NAME, check_exporter, export_onnx
from .model import ExportModel

OUTPUT_NAME = "logits"
DEFAULT_OPSET = 18


@dataclass(frozen=True)
class OnnxSpec:
    """How to export: a fixed `batch`, or a symbolic batch when `batch` is None."""

    batch: int | None = 1
    opset: int = DEFAULT_OPSET
    exporter: str = "dynamo"

    @property
    def dynamic_batch(self) -> bool:
        return self.batch is None

    def validate(self) -> None:
        low, high = check_exporter(self.exporter).opsets
        if not low <= self.opset <= high:
            hint = " (use --exporter torchscript for opsets below 18)" if self.exporter == "dynamo" and self.opset < low else ""
            raise ExportError(f"opset {self.opset} is not available with the {self.exporter} exporter: use {low}..{high}{hint}")
        if self.batch is not None and self.batch < 1:
            raise ExportError(f"batch must be >= 1, got {self.batch}")

    def input_shape(self, resolution: int) -> list:
        """The declared input shape; the batch entry is the name of the symbolic dimension when dynamic."""
        return [BATCH_DIM if self.dynamic_batch else self.batch, 3, resolution, resolution]


def export_model(source: ExportModel, spec: OnnxSpec) -> bytes:
    """Export `source.model` to a checked ONNX model (bytes), input `input`, output `logits`."""
    spec.validate()
    # a symbolic batch is traced at batch 2: torch.export specialises dimensions of size 0 and 1
    example_batch = 2 if spec.dynamic_batch else spec.batch
    example = torch.randn(example_batch, 3, source.resolution, source.resolution)
    proto = export_onnx(source.model, example, spec.exporter, spec.opset, dynamic_batch=spec.dynamic_batch,
                        output_name=OUTPUT_NAME, what=source.ref)
    _add_metadata(proto, source, spec)
    check_onnx(proto, spec, source)
    return proto.SerializeToString()


def _add_metadata(proto: onnx.ModelProto, source: ExportModel, spec: OnnxSpec) -> None:
    """What a deployment needs besides the graph: preprocessing, classes, the architecture."""
    props = {
        "hwnas.arch": json.dumps(source.arch.to_dict(), sort_keys=True),
        "hwnas.arch_hash": source.arch.hash,
        "hwnas.space": source.arch.space,
        "hwnas.resolution": str(source.resolution),
        "hwnas.num_classes": str(source.num_classes),
        **source.preprocessing.metadata(),  # hwnas.mean, hwnas.std, hwnas.resize, hwnas.interpolation
        "hwnas.weights_sha256": source.weights.sha256 if source.weights else "untrained",
        "hwnas.exporter": spec.exporter,
    }
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = f"hwnas {source.arch.space} architecture {source.arch.hash} ({source.ref})"


def check_onnx(proto: onnx.ModelProto, spec: OnnxSpec, source: ExportModel) -> None:
    """`onnx.checker` (with shape inference), then names, opset and shapes as requested."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # ValidationError, InferenceError
        raise ExportError(f"onnx.checker rejected the exported model: {str(exc).strip().splitlines()[0][:300]}") from None
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset != spec.opset:
        raise ExportError(f"the exporter wrote opset {opset}, not the requested {spec.opset}; choose another --opset")
    inputs = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise ExportError(f"exported graph has inputs {inputs} and outputs {outputs}, expected [{INPUT_NAME!r}] and [{OUTPUT_NAME!r}]")
    got = _shape(proto.graph.input[0])
    want = spec.input_shape(source.resolution)
    batch_ok = isinstance(got[0], str) if spec.dynamic_batch else got[0] == spec.batch
    if not batch_ok or got[1:] != want[1:]:
        raise ExportError(f"exported input shape is {got}, expected {want}")


def _shape(value_info) -> list:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in dims]

