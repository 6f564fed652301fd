"""TensorRT: the one engine builder of hwnas (ONNX bytes -> serialized engine) and its runner.

`tensorrt` is imported lazily: everything else in hwnas works without it. Device buffers are
torch CUDA tensors (no pycuda / cuda-python here). `hwnas export` (hwnas.export.tensorrt_engine:
precision plans, int8 calibration) and the `tensorrt` profiler both build through
`build_serialized` and run through `TensorRTRunner`: `infer(x)` binds any batch the engine
accepts; with `timing=True` the runner also binds fixed buffers at the engine's static shapes
and `time_call()` runs `execute_async_v3` on its stream, timed with CUDA events.
Versions: requirements-gpu.txt pins tensorrt>=10,<12; features are detected (`TrtFeatures`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import BackendError, ExportError, MissingDependencyError
from .base import Runner
from .memory import MemoryInfo
from .onnx_model import INPUT_NAME

SUPPORTED_MAJORS = (10, 11)


def import_tensorrt(needed_by: str = "--tensorrt"):
    """The `tensorrt` module (a supported version), or MissingDependencyError saying how to get it."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the package is there but libnvinfer is not
        detail = "" if isinstance(exc, ModuleNotFoundError) else f" ({str(exc).strip()[:200]})"
        raise MissingDependencyError(
            f"{needed_by} needs the TensorRT Python package, which is not usable here{detail}; on a machine with an "
            "NVIDIA GPU run `.venv/bin/pip install -r requirements-gpu.txt` (ONNX export and the CPU backends work "
            "without it)"
        ) from None
    major = TrtFeatures.of(tensorrt).major
    if major not in SUPPORTED_MAJORS:
        raise MissingDependencyError(
            f"TensorRT {tensorrt.__version__} is not supported: hwnas builds with TensorRT "
            f"{' and '.join(f'{m}.x' for m in SUPPORTED_MAJORS)}; install a version from requirements-gpu.txt"
        )
    return tensorrt


@dataclass(frozen=True)
class TrtFeatures:
    """What the installed TensorRT offers, detected on its module (10.x and 11.x differ)."""

    version: str
    major: int
    fp16_flag: bool
    int8_flag: bool
    tf32_flag: bool
    strongly_typed_flag: bool
    legacy_calibrator: bool

    @classmethod
    def of(cls, trt) -> "TrtFeatures":
        flags = getattr(trt, "BuilderFlag", None)
        creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
        version = str(getattr(trt, "__version__", "0"))
        try:
            major = int(version.split(".")[0])
        except ValueError:
            major = 0
        return cls(version, major, hasattr(flags, "FP16"), hasattr(flags, "INT8"), hasattr(flags, "TF32"),
                   hasattr(creation, "STRONGLY_TYPED"), hasattr(trt, "IInt8EntropyCalibrator2"))


def require_gpu() -> None:
    """BackendError unless torch sees a CUDA device (engines are built and checked on it)."""
    import torch

    if not torch.cuda.is_available():
        raise BackendError(
            "--tensorrt needs an NVIDIA GPU with a working CUDA driver, and torch sees none here; "
            "export ONNX only, or build the engine on the target machine"
        )


def make_logger(trt, quiet: bool = False):
    """A TensorRT logger that prints warnings to stderr (unless `quiet`) and keeps errors for our message."""

    class CollectingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
            if not quiet and int(severity) <= int(trt.ILogger.Severity.WARNING):
                print(f"[TensorRT] {msg}", file=sys.stderr)

    return CollectingLogger()


def build_serialized(trt, onnx_bytes: bytes, *, workspace_mb: int, strongly_typed: bool = False,
                     set_flags: Sequence[str] = (), clear_flags: Sequence[str] = (), profile_shapes: dict | None = None,
                     configure: Callable | None = None, error: type[Exception] = ExportError, quiet: bool = False) -> bytes:
    """Parse ONNX bytes, configure and build a serialized engine: the one TensorRT build of hwnas.

    `configure(builder, network, config)` adds what a caller needs beyond flags and shapes (the
    legacy int8 calibrator, or the profiler's fixed int8 ranges). Failures raise `error`.
    """
    logger = make_logger(trt, quiet)
    builder = trt.Builder(logger)
    creation = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        creation = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(creation)  # explicit batch is the only mode in TensorRT 10+
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)).strip() for i in range(parser.num_errors))
        raise error(f"TensorRT's ONNX parser rejected the model: {errors[:400]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for name in clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    for name in set_flags:
        if not hasattr(trt.BuilderFlag, name):
            raise error(f"TensorRT {trt.__version__} has no BuilderFlag.{name}; choose another precision")
        config.set_flag(getattr(trt.BuilderFlag, name))
    if profile_shapes:
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, profile_shapes["min"], profile_shapes["opt"], profile_shapes["max"])
        config.add_optimization_profile(profile)
    if configure is not None:
        configure(builder, network, config)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = "; ".join(logger.errors[-3:]) or "no error logged"
        raise error(f"TensorRT could not build the engine: {detail[:400]}")
    return bytes(serialized)


def _torch_dtype(trt, dtype):
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    return table[dtype]


class TensorRTRunner(Runner):
    """A deserialized engine and one execution context on CUDA device `device`: `infer(x) -> first
    output` at any shape the engine accepts. With `timing`, fixed buffers at the engine's static
    shapes (random inputs) are bound once and `time_call()` is one `execute_async_v3`, timed by
    CUDA events on the runner's stream. Failures raise `error`."""

    def __init__(self, engine_bytes: bytes, *, device: int = 0, timing: bool = False, quiet: bool = False,
                 error: type[Exception] = ExportError, param_bytes: int = 0):
        self.engine_bytes = engine_bytes
        self.device_index = int(device)
        self.timing = timing
        self.quiet = quiet
        self.error = error
        self.param_bytes = param_bytes
        self._context = None
        self.buffers: dict = {}

    def activate(self) -> "TensorRTRunner":
        import torch

        if self._context is not None:
            return self
        trt = import_tensorrt()
        require_gpu()
        self.device = torch.device("cuda", self.device_index)
        self._logger = make_logger(trt, self.quiet)
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(self.engine_bytes)
            if self._engine is None:
                raise self.error(f"TensorRT could not load the engine: {'; '.join(self._logger.errors[-2:])[:300]}")
            self._context = self._engine.create_execution_context()
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            self._outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            self._dtypes = {n: _torch_dtype(trt, self._engine.get_tensor_dtype(n)) for n in names}
            self._stream = torch.cuda.Stream(self.device)
            if self.timing:
                self._bind_fixed()
        return self

    def _bind_fixed(self) -> None:
        """Buffers at the engine's static shapes, bound by name, for `time_call`."""
        import torch

        self._io_bytes = {"input": 0, "output": 0}
        for name in self._inputs + self._outputs:
            shape = tuple(self._engine.get_tensor_shape(name))
            dtype = self._dtypes[name]
            is_input = name in self._inputs
            tensor = (torch.randn(shape, device=self.device).to(dtype) if is_input
                      else torch.empty(shape, device=self.device, dtype=dtype))
            self.buffers[name] = tensor
            self._io_bytes["input" if is_input else "output"] += tensor.numel() * tensor.element_size()
            self._context.set_tensor_address(name, tensor.data_ptr())
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def time_call(self) -> float:
        if not self.buffers:
            raise RuntimeError("this TensorRTRunner was not made for timing (timing=True)")
        self.start.record(self._stream)
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise self.error("TensorRT execute_async_v3 failed")
        self.end.record(self._stream)
        self.end.synchronize()
        return float(self.start.elapsed_time(self.end))

    def memory(self) -> MemoryInfo:
        scratch = getattr(self._engine, "device_memory_size_v2", None)
        if scratch is None:
            scratch = self._engine.device_memory_size
        io = getattr(self, "_io_bytes", {"input": 0, "output": 0})
        return MemoryInfo(self.param_bytes, io["input"], io["output"], int(scratch) + io["input"] + io["output"],
                          "tensorrt:device_memory")

    def infer(self, x: np.ndarray) -> np.ndarray:
        import torch

        if self._context is None:
            raise RuntimeError("call activate() (or use the runner as a context manager) first")
        (name,) = self._inputs
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            inp = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self._dtypes[name]).contiguous()
            if not self._context.set_input_shape(name, tuple(inp.shape)):
                raise self.error(f"the engine does not accept input shape {tuple(inp.shape)} (see its batch range)")
            self._context.set_tensor_address(name, inp.data_ptr())
            outputs = {}
            for out in self._outputs:
                outputs[out] = torch.empty(tuple(self._context.get_tensor_shape(out)), dtype=self._dtypes[out],
                                           device=self.device)
                self._context.set_tensor_address(out, outputs[out].data_ptr())
            ok = self._context.execute_async_v3(self._stream.cuda_stream)
        self._stream.synchronize()
        if self.buffers:  # put the timing buffers back
            for buf_name, tensor in self.buffers.items():
                self._context.set_tensor_address(buf_name, tensor.data_ptr())
        if not ok:
            raise self.error(f"TensorRT inference failed: {'; '.join(self._logger.errors[-2:])[:300]}")
        return outputs[self._outputs[0]].float().cpu().numpy()

    def deactivate(self) -> None:
        if self._context is not None:
            self._stream.synchronize()
        self._context = None
        self._engine = None
        self._runtime = None
        self.buffers.clear()


def tensorrt_runner(module, input_shape, *, build: Callable[[bytes], bytes], device: int = 0,
                    half: bool = False) -> TensorRTRunner:
    """The `tensorrt` runtime's runner (active, for timing) of a torch module: exported to ONNX at
    `input_shape` (in float16 on the GPU with `half`: a strongly typed TensorRT 11 fp16 engine),
    built by `build(onnx_bytes) -> engine bytes` (the caller's precision and flags)."""
    import torch

    from .memory import estimate_on_cpu
    from .onnx_model import export_onnx
    from .torch_eager import ThreadScope

    module = module.eval()
    cpu_x = torch.randn(input_shape)
    with ThreadScope(1):
        _, cpu_memory = estimate_on_cpu(module, cpu_x)
        try:
            if half:
                gpu = torch.device("cuda", device)
                proto = export_onnx(module.to(gpu).half(), cpu_x.to(gpu).half(), "torchscript", what="the op")
            else:
                proto = export_onnx(module, cpu_x, "torchscript", what="the op")
        except ExportError as exc:
            raise BackendError(f"ONNX export failed: {exc}") from None
    with torch.cuda.device(device):
        engine = build(proto.SerializeToString())
    return TensorRTRunner(engine, device=device, timing=True, quiet=True, error=BackendError,
                          param_bytes=cpu_memory.param_bytes).activate()
