"""torch -> ONNX in memory, then `onnx.checker` and a structural check of what came out.

Exporter choice: torch.onnx's `dynamo` exporter (torch.export + onnxscript) is the default: it is
torch 2.14's default, the maintained one, and exports every network of our spaces with a
symbolic batch dimension (`dynamic_shapes`). It writes opset 18 or newer only: asked for less,
it silently keeps 18, so lower opsets are refused here and served by `torchscript`, the older
TorchScript exporter (deprecated since torch 2.9; opsets 9-20, `dynamic_axes`), which is also
~15x faster to export. The model is written only after every check passes (see commands/export).
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass

import onnx
import torch

from ..errors import ExportError
from .model import ExportModel

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18
OPSET_RANGE = {"dynamo": (18, 23), "torchscript": (9, 20)}
# the preprocessing the exported network expects (recorded in the ONNX metadata for deploy/)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        if self.exporter not in EXPORTERS:
            raise ExportError(f"unknown exporter {self.exporter!r}; choose one of: {', '.join(EXPORTERS)}")
        low, high = OPSET_RANGE[self.exporter]
        if not low <= self.opset <= high:
            hint = " (use --exporter torchscript for opsets below 18)" if self.exporter == "dynamo" and self.opset < low else ""
            raise ExportError(f"opset {self.opset} is not available with the {self.exporter} exporter: use {low}..{high}{hint}")
        if self.batch is not None and self.batch < 1:
            raise ExportError(f"batch must be >= 1, got {self.batch}")

    def input_shape(self, resolution: int) -> list:
        """The declared input shape; the batch entry is the name of the symbolic dimension when dynamic."""
        return [BATCH_DIM if self.dynamic_batch else self.batch, 3, resolution, resolution]


def export_onnx(source: ExportModel, spec: OnnxSpec) -> bytes:
    """Export `source.model` to a checked ONNX model (bytes), input `input`, output `logits`."""
    spec.validate()
    # a symbolic batch is traced at batch 2: torch.export specialises dimensions of size 0 and 1
    example_batch = 2 if spec.dynamic_batch else spec.batch
    example = torch.randn(example_batch, 3, source.resolution, source.resolution)
    try:
        with torch.no_grad():
            if spec.exporter == "dynamo":
                proto = _export_dynamo(source.model, example, spec)
            else:
                proto = _export_torchscript(source.model, example, spec)
    except ExportError:
        raise
    except Exception as exc:  # the exporters raise many types; keep the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        other = "torchscript" if spec.exporter == "dynamo" else "dynamo"
        raise ExportError(
            f"torch.onnx ({spec.exporter}) could not export {source.ref}: {type(exc).__name__}: {first[:300]}; "
            f"try --exporter {other}"
        ) from None
    _add_metadata(proto, source, spec)
    check_onnx(proto, spec, source)
    return proto.SerializeToString()


def _export_dynamo(model, example: torch.Tensor, spec: OnnxSpec) -> onnx.ModelProto:
    dynamic_shapes = ({0: torch.export.Dim(BATCH_DIM, min=1)},) if spec.dynamic_batch else None
    program = torch.onnx.export(
        model, (example,), None, dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_shapes=dynamic_shapes, opset_version=spec.opset, optimize=True, verbose=False,
    )
    return program.model_proto


def _export_torchscript(model, example: torch.Tensor, spec: OnnxSpec) -> onnx.ModelProto:
    dynamic_axes = {INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}} if spec.dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # chosen on purpose with --exporter torchscript
        torch.onnx.export(
            model, (example,), buffer, dynamo=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes, opset_version=spec.opset, do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())


def _add_metadata(proto: onnx.ModelProto, source: ExportModel, spec: OnnxSpec) -> None:
    """What a deployment needs besides the graph: preprocessing, classes, the architecture."""
    props = {
        "hwnas.arch": json.dumps(source.arch.to_dict(), sort_keys=True),
        "hwnas.arch_hash": source.arch.hash,
        "hwnas.space": source.arch.space,
        "hwnas.resolution": str(source.resolution),
        "hwnas.num_classes": str(source.num_classes),
        "hwnas.mean": json.dumps(list(IMAGENET_MEAN)),
        "hwnas.std": json.dumps(list(IMAGENET_STD)),
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

