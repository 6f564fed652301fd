"""torch -> ONNX: the one exporter call of hwnas and the one table of exporters.

`export_onnx` serves `hwnas export` (which adds metadata and checks, hwnas.export.onnx_export),
the ONNX Runtime and TensorRT runtimes (each op or network exported before it is run) and the
task models of hwnas.transfer.

Exporters: `dynamo` (torch.export + onnxscript) is torch 2.14's default and the maintained one;
it writes opset 18 or newer only (asked for less, it silently keeps 18, so lower opsets are
refused) and exports a symbolic batch with `dynamic_shapes`. `torchscript`, the older
TorchScript exporter (deprecated since torch 2.9; opsets 9-20, `dynamic_axes`), exports one of
our blocks in 10-70 ms against about 2 s for `dynamo`, so the profilers use it by default.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import onnx
import torch

from ..errors import ExportError

INPUT_NAME = "input"
BATCH_DIM = "batch"


@dataclass(frozen=True)
class Exporter:
    """One torch.onnx exporter: the opsets it writes, and the opset ops are profiled at."""

    name: str
    opsets: tuple[int, int]
    profile_opset: int


#: every exporter hwnas offers, by name (the order of the `--exporter` choices)
EXPORTERS: dict[str, Exporter] = {
    "dynamo": Exporter("dynamo", (18, 23), 18),
    "torchscript": Exporter("torchscript", (9, 20), 17),
}


def check_exporter(exporter: str, error: type[Exception] = ExportError) -> Exporter:
    """The exporter called `exporter`, or `error` naming the choices."""
    if exporter not in EXPORTERS:
        raise error(f"unknown ONNX exporter {exporter!r}; choose one of: {', '.join(EXPORTERS)}")
    return EXPORTERS[exporter]


def export_onnx(module: torch.nn.Module, example: torch.Tensor, exporter: str = "dynamo", opset: int | None = None,
                *, dynamic_batch: bool = False, output_name: str = "output", what: str = "the model") -> onnx.ModelProto:
    """The one torch -> ONNX call of hwnas: input `input`, one output `output_name`, traced at
    `example`'s shape (a symbolic batch with `dynamic_batch`), at `opset` (default: the
    exporter's profiling opset), the exporters' chatter muted. Failures raise ExportError."""
    spec = check_exporter(exporter)
    opset = spec.profile_opset if opset is None else opset
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


def identity_graph(shape: tuple[int, ...]) -> bytes:
    """An ONNX graph of one Identity node: the per-call cost of a runtime itself."""
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, list(shape))
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, list(shape))
    graph = helper.make_graph([helper.make_node("Identity", [INPUT_NAME], ["output"])], "identity", [inp], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    return model.SerializeToString()
