"""torch -> ONNX in memory, then `onnx.checker` and a structural check of what came out.

Exporter choice: torch.onnx's `dynamo` exporter (torch.export + onnxscript) is the default: it is
torch 2.14's default, the maintained one, and exports every network of our spaces with a
symbolic batch dimension (`dynamic_shapes`). It writes opset 18 or newer only: asked for less,
it silently keeps 18, so lower opsets are refused here and served by `torchscript`, the older
TorchScript exporter (deprecated since torch 2.9; opsets 9-20, `dynamic_axes`), which is also
~15x faster to export. The model is written only after every check passes (see commands/export).
"""

from __future__ import annotations

import contextlib
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
    proto = export_module(source.model, example, spec.exporter, spec.opset, dynamic_batch=spec.dynamic_batch,
                          what=source.ref)
    _add_metadata(proto, source, spec)
    check_onnx(proto, spec, source)
    return proto.SerializeToString()


def export_module(module: torch.nn.Module, example: torch.Tensor, exporter: str = "dynamo", opset: int = DEFAULT_OPSET,
                  dynamic_batch: bool = False, output_name: str = OUTPUT_NAME, what: str = "the model") -> onnx.ModelProto:
    """The one torch -> ONNX call of hwnas (`hwnas export` and the ONNX Runtime and TensorRT
    profilers): input `input`, one output, traced at `example`'s shape, the exporters' chatter muted."""
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose one of: {', '.join(EXPORTERS)}")
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # deprecation of torchscript (chosen on purpose), tracer warnings
            if exporter == "dynamo":
                return _export_dynamo(module, example, opset, dynamic_batch, output_name)
            return _export_torchscript(module, example, opset, dynamic_batch, output_name)
    except ExportError:
        raise
    except Exception as exc:  # the exporters raise many types; keep the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        other = "torchscript" if exporter == "dynamo" else "dynamo"
        raise ExportError(
            f"torch.onnx ({exporter}) could not export {what}: {type(exc).__name__}: {first[:300]}; "
            f"try --exporter {other}"
        ) from None


def _export_dynamo(model, example: torch.Tensor, opset: int, dynamic_batch: bool, output_name: str) -> onnx.ModelProto:
    dynamic_shapes = ({0: torch.export.Dim(BATCH_DIM, min=1)},) if dynamic_batch else None
    program = torch.onnx.export(
        model, (example,), None, dynamo=True, input_names=[INPUT_NAME], output_names=[output_name],
        dynamic_shapes=dynamic_shapes, opset_version=opset, optimize=True, verbose=False,
    )
    return program.model_proto


def _export_torchscript(model, example: torch.Tensor, opset: int, dynamic_batch: bool, output_name: str) -> onnx.ModelProto:
    dynamic_axes = {INPUT_NAME: {0: BATCH_DIM}, output_name: {0: BATCH_DIM}} if dynamic_batch else None
    buffer = io.BytesIO()
    torch.onnx.export(
        model, (example,), buffer, dynamo=False, input_names=[INPUT_NAME], output_names=[output_name],
        dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True,
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

