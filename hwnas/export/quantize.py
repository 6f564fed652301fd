"""ONNX graph rewrites for TensorRT precisions that need them, done on CPU with ONNX Runtime's tools.

int8, explicit quantization: `quantize_qdq` inserts QuantizeLinear/DequantizeLinear pairs
(`onnxruntime.quantization.quantize_static`, QDQ format) with scales calibrated on real images:
symmetric int8 activations and per-channel symmetric int8 weights, zero points 0, which is what
TensorRT's explicit-quantization path accepts. The implicit calibrator (IInt8EntropyCalibrator2)
is deprecated since TensorRT 10.1 and gone in 11.
fp16 on a strongly typed network (TensorRT 11 has no FP16 builder flag): `to_fp16` converts the
graph's float tensors to float16, keeping float32 inputs and outputs (casts at the edges).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx

from ..errors import ExportError
from ..runtimes.onnx_model import INPUT_NAME


def quantize_qdq(onnx_bytes: bytes, batches: Iterable[np.ndarray]) -> bytes:
    """The model with Q/DQ nodes, activation ranges calibrated (min/max) on `batches` of real images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)
            self.seen = 0

        def get_next(self):
            batch = next(self._it, None)
            if batch is None:
                return None
            self.seen += 1
            return {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}

    reader = Reader()
    with tempfile.TemporaryDirectory(prefix="hwnas-qdq-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "qdq.onnx"
        src.write_bytes(onnx_bytes)
        try:
            quantize_static(
                str(src), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
            )
        except Exception as exc:  # ORT raises many types
            raise ExportError(f"explicit int8 quantization (Q/DQ) failed: {type(exc).__name__}: {str(exc)[:300]}") from None
        if reader.seen == 0:
            raise ExportError("explicit int8 quantization saw no calibration batch; give more --calib-data images")
        return dst.read_bytes()


def to_fp16(onnx_bytes: bytes) -> bytes:
    """float32 -> float16 inside the graph, float32 at its input and output."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load_from_string(onnx_bytes), keep_io_types=True)
    return model.SerializeToString()


def count_qdq(onnx_bytes: bytes) -> int:
    """Number of QuantizeLinear nodes (0: not explicitly quantized)."""
    return sum(node.op_type == "QuantizeLinear" for node in onnx.load_from_string(onnx_bytes).graph.node)
