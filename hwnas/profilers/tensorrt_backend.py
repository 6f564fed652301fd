"""Native TensorRT backend (`tensorrt`): ONNX parser -> engine -> CUDA-event timing.

TensorRT is imported lazily; without it `get_profiler("tensorrt")` says how to install it.
Buffers are torch CUDA tensors (no pycuda), bound by name (`set_tensor_address`) and run with
`execute_async_v3` on a torch stream, timed with CUDA events recorded on that stream.

Precision (TensorRT 10 and 11 differ):
  fp32  an fp32 ONNX graph, no precision flag.
  fp16  TensorRT 10: `BuilderFlag.FP16` on the fp32 graph (inputs stay fp32). TensorRT 11
        removed precision flags (networks are strongly typed): the op is exported in fp16,
        so inputs are fp16 and the table's dtype says so.
  int8  TensorRT 10 only: `BuilderFlag.INT8` with a dynamic range of [-4, 4] set on every
        tensor, which is enough to time int8 kernels (the numbers are not meant to be
        accurate). TensorRT 11 needs explicitly quantized (Q/DQ) graphs: refused.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from ..errors import BackendError
from ..runtimes import load_runner
from ..runtimes.tensorrt import build_serialized, import_tensorrt
from .base import Profiler, Runner
from ..runtimes.fingerprint import device_fingerprint
from .statistics import StatsConfig

PRECISIONS = ("fp32", "fp16", "int8")
_INT8_RANGE = 4.0


class TensorRTProfiler(Profiler):
    """NVIDIA TensorRT through its Python API; one engine per op."""

    name = "tensorrt"
    libraries = ("tensorrt", "onnx", "torch", "timm")

    def __init__(self, precision: str = "fp32", device: int = 0, workspace_mb: int = 1024,
                 stats: StatsConfig | None = None):
        super().__init__(stats)
        if precision not in PRECISIONS:
            raise BackendError(f"tensorrt precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.trt = import_tensorrt("the tensorrt backend")
        if not torch.cuda.is_available():
            raise BackendError("the tensorrt backend needs a CUDA device; torch.cuda.is_available() is False here")
        self.precision = precision
        self.device_index = int(device)
        self.workspace_mb = int(workspace_mb)
        self.strongly_typed_fp16 = precision == "fp16" and not hasattr(self.trt.BuilderFlag, "FP16")
        if precision == "int8" and not hasattr(self.trt.BuilderFlag, "INT8"):
            raise BackendError(f"TensorRT {self.trt.__version__} has no implicit int8 (it needs explicitly "
                               "quantized Q/DQ graphs); profile fp16 or fp32")

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if importlib.util.find_spec("tensorrt") is None:
            return "tensorrt is not installed (see requirements-gpu.txt)"
        if not torch.cuda.is_available():
            return "no CUDA device"
        return None

    @property
    def dtype(self) -> str:
        return "float16" if self.strongly_typed_fp16 else "float32"

    def options(self) -> dict:
        return {"precision": self.precision, "device_index": self.device_index, "workspace_mb": self.workspace_mb,
                "strongly_typed": self.strongly_typed_fp16, "exporter": "torchscript"}

    def fingerprint(self) -> dict:
        return device_fingerprint(None, self.libraries, gpu_index=self.device_index)

    def build_engine(self, onnx_bytes: bytes) -> bytes:
        """A serialized engine of one op, built with hwnas' one TensorRT builder
        (hwnas.runtimes.tensorrt.build_serialized) at this profiler's precision."""
        flags = {"fp16": () if self.strongly_typed_fp16 else ("FP16",), "int8": ("INT8",)}.get(self.precision, ())
        configure = (lambda builder, network, config: self._set_int8_ranges(network)) if self.precision == "int8" else None
        return build_serialized(self.trt, onnx_bytes, workspace_mb=self.workspace_mb, set_flags=flags,
                                configure=configure, error=BackendError, quiet=True)

    @staticmethod
    def _set_int8_ranges(network) -> None:
        tensors = [network.get_input(i) for i in range(network.num_inputs)]
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            tensors += [layer.get_output(j) for j in range(layer.num_outputs)]
        for tensor in tensors:
            tensor.set_dynamic_range(-_INT8_RANGE, _INT8_RANGE)

    def prepare(self, module: nn.Module, input_shape) -> Runner:
        return load_runner(self.name, module, input_shape, build=self.build_engine, device=self.device_index,
                           half=self.strongly_typed_fp16)
