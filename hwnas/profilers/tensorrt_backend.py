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
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..errors import BackendError
from ..export.tensorrt_engine import build_serialized, import_tensorrt
from .base import Profiler, Runner
from .fingerprint import device_fingerprint
from .memory import MemoryInfo, estimate_on_cpu
from .ort_backend import export_onnx
from .torch_backend import ThreadScope
from .statistics import StatsConfig

PRECISIONS = ("fp32", "fp16", "int8")
_INT8_RANGE = 4.0


def _torch_dtype(trt, dtype):
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    return table[dtype]


class TensorRTRunner(Runner):
    def __init__(self, profiler: "TensorRTProfiler", module: nn.Module, input_shape):
        trt = profiler.trt
        self.device = torch.device("cuda", profiler.device_index)
        module = module.eval()
        cpu_x = torch.randn(input_shape)
        path = profiler.new_path()
        with ThreadScope(1):
            _, cpu_memory = estimate_on_cpu(module, cpu_x)
            if profiler.strongly_typed_fp16:
                export_onnx(module.to(self.device).half(), cpu_x.to(self.device).half(), path)
            else:
                export_onnx(module, cpu_x, path)
        try:
            self.engine = profiler.build_engine(path)
        finally:
            path.unlink(missing_ok=True)
        self.context = self.engine.create_execution_context()
        self.buffers = {}
        io_bytes = {"input": 0, "output": 0}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(name))
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            tensor = (torch.randn(shape, device=self.device).to(dtype) if is_input
                      else torch.empty(shape, device=self.device, dtype=dtype))
            self.buffers[name] = tensor
            io_bytes["input" if is_input else "output"] += tensor.numel() * tensor.element_size()
            self.context.set_tensor_address(name, tensor.data_ptr())
        scratch = getattr(self.engine, "device_memory_size_v2", None)
        if scratch is None:
            scratch = self.engine.device_memory_size
        self._memory = MemoryInfo(cpu_memory.param_bytes, io_bytes["input"], io_bytes["output"],
                                  int(scratch) + io_bytes["input"] + io_bytes["output"], "tensorrt:device_memory")
        self.stream = torch.cuda.Stream(self.device)
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def time_call(self) -> float:
        self.start.record(self.stream)
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise BackendError("TensorRT execute_async_v3 failed")
        self.end.record(self.stream)
        self.end.synchronize()
        return float(self.start.elapsed_time(self.end))

    def memory(self) -> MemoryInfo:
        return self._memory

    def deactivate(self) -> None:
        self.stream.synchronize()
        self.context = self.engine = None
        self.buffers.clear()


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
        self.logger = self.trt.Logger(self.trt.Logger.ERROR)
        self._tmp = tempfile.TemporaryDirectory(prefix="hwnas-trt-")
        self._count = 0

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

    def new_path(self) -> Path:
        self._count += 1
        return Path(self._tmp.name) / f"op{self._count}.onnx"

    def build_engine(self, onnx_path: Path):
        """Build with hwnas' one TensorRT builder (hwnas.export.tensorrt_engine.build_serialized)."""
        trt = self.trt
        flags = {"fp16": () if self.strongly_typed_fp16 else ("FP16",), "int8": ("INT8",)}.get(self.precision, ())
        configure = (lambda builder, network, config: self._set_int8_ranges(network)) if self.precision == "int8" else None
        with torch.cuda.device(self.device_index):
            plan = build_serialized(trt, onnx_path.read_bytes(), workspace_mb=self.workspace_mb, set_flags=flags,
                                    configure=configure, error=BackendError, quiet=True)
            engine = trt.Runtime(self.logger).deserialize_cuda_engine(plan)
        if engine is None:
            raise BackendError("TensorRT could not deserialise the engine it built")
        return engine

    @staticmethod
    def _set_int8_ranges(network) -> None:
        tensors = [network.get_input(i) for i in range(network.num_inputs)]
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            tensors += [layer.get_output(j) for j in range(layer.num_outputs)]
        for tensor in tensors:
            tensor.set_dynamic_range(-_INT8_RANGE, _INT8_RANGE)

    def prepare(self, module: nn.Module, input_shape) -> Runner:
        with torch.cuda.device(self.device_index):
            return TensorRTRunner(self, module, input_shape)

    def close(self) -> None:
        self._tmp.cleanup()
