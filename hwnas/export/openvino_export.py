"""The OpenVINO IR export (`hwnas export ARCH --format openvino --out MODEL.xml`): torch ->
`openvino.convert_model` -> IR (.xml + .bin), deployment metadata in the IR's rt_info, parity
against PyTorch, and optionally int8 by NNCF post-training quantization.

Weights are saved as float32 (`save_model(compress_to_fp16=False)`: OpenVINO's default would
halve them to fp16). The metadata is the ONNX export's (`hwnas.arch`, `hwnas.mean`, `hwnas.std`,
`hwnas.resize`, ...), under rt_info `hwnas/<key>`; `read_metadata` reads it back.

Parity tolerances (max abs diff / max |PyTorch logit|), compiled on the CPU plugin with
INFERENCE_PRECISION_HINT f32:
  f32   1e-4  as ONNX Runtime's: only the kernels' summation order differs
  int8  0.25  int8 against the f32 IR, on real images (calibration ones), as TensorRT int8
int8: `nncf.quantize` (post-training, default preset: symmetric weights and activations,
per-channel weights) calibrated on real images, by default the training data; nncf is an
optional dependency (requirements-mobile.txt), imported only here.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..errors import ExportError, MissingDependencyError
from ..runtimes.onnx_model import INPUT_NAME
from ..runtimes.openvino import convert as convert_module
from ..runtimes.openvino import converter_name, import_openvino
from .model import ExportModel
from .onnx_export import OUTPUT_NAME

TOLERANCES = {"f32": 1e-4, "int8": 0.25}
META = "hwnas"


@dataclass(frozen=True)
class IrFiles:
    """An IR as bytes: the graph (.xml) and its weights (.bin)."""

    xml: bytes
    bin: bytes


def metadata(source: ExportModel, precision: str, exporter: str | None = None) -> dict[str, str]:
    """What a deployment needs besides the graph (the keys of the ONNX export's metadata)."""
    return {
        "hwnas.arch": json.dumps(source.arch.to_dict(), sort_keys=True),
        "hwnas.arch_hash": source.arch.hash,
        "hwnas.space": source.arch.space,
        "hwnas.resolution": str(source.resolution),
        "hwnas.num_classes": str(source.num_classes),
        **source.preprocessing.metadata(),
        "hwnas.weights_sha256": source.weights.sha256 if source.weights else "untrained",
        "hwnas.converter": converter_name(exporter),
        "hwnas.precision": precision,
    }


def convert(source: ExportModel, batch: int, exporter: str | None = None):
    """The model as an openvino.Model: input `input` [batch, 3, R, R], output `logits`; converted
    as the `openvino` backend converts (hwnas.runtimes.openvino.convert: OpenVINO's PyTorch
    frontend, or the ONNX graph of `exporter`)."""
    example = torch.randn(batch, 3, source.resolution, source.resolution)
    model = convert_module(source.model, example, source.ref, exporter, ExportError)
    model.inputs[0].get_tensor().set_names({INPUT_NAME})
    model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
    return model


def set_metadata(model, values: dict[str, str]) -> None:
    for key, value in values.items():
        model.set_rt_info(value, [META, key])


def read_metadata(model) -> dict[str, str]:
    """The `hwnas.*` metadata of an IR (an openvino.Model read with `Core().read_model`)."""
    if not model.has_rt_info([META]):
        return {}
    info = model.get_rt_info()[META]
    return {key: str(info[key].astype(str)) for key in info}


def serialize(model) -> IrFiles:
    """The IR bytes of `model`, float32 weights kept."""
    ov = import_openvino()
    with tempfile.TemporaryDirectory(prefix="hwnas-ir-") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        return IrFiles(xml.read_bytes(), xml.with_suffix(".bin").read_bytes())


def load(files: IrFiles):
    """The openvino.Model of IR bytes (what will be written, read back)."""
    ov = import_openvino()
    return ov.Core().read_model(files.xml, ov.Tensor(np.frombuffer(files.bin, dtype=np.uint8).copy()))


def import_nncf():
    try:
        import nncf
    except ImportError as exc:
        raise MissingDependencyError(f"nncf is not importable ({exc}); pip install -r requirements-mobile.txt "
                                     "(nncf), or drop --int8") from None
    return nncf


def quantize_int8(model, batches: Iterable[np.ndarray], count: int):
    """`nncf.quantize` post-training int8 of an openvino.Model, calibrated on `count` images
    (`batches` of NCHW float32 at the model's batch size)."""
    nncf = import_nncf()
    data = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
    if not data:
        raise ExportError("int8 quantization saw no calibration batch; give more --calib-data images")
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            nncf.set_log_level(40)  # the progress bars and info lines
            return nncf.quantize(model, nncf.Dataset(data), subset_size=min(count, len(data) * data[0].shape[0]))
    except Exception as exc:
        raise ExportError(f"nncf.quantize failed: {type(exc).__name__}: {str(exc)[:300]}") from None
