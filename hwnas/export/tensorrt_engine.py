"""ONNX -> serialized TensorRT engine (TensorRT 10 Python API), int8 calibration, and a runner.

`tensorrt` is imported lazily: everything else in hwnas works without it. Device buffers are
torch CUDA tensors (torch is already a dependency; no pycuda / cuda-python needed here).

Parity tolerances against ONNX Runtime (max abs diff / max |ONNX Runtime logit|):
  fp32  1e-3  TF32 is switched off, so only GPU vs CPU summation order differs
  fp16  2e-2  10-bit mantissa activations and weights
  int8  0.25  8-bit activations; checked on real calibration images, not noise
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import BackendError, ExportError, MissingDependencyError
from .calibration import ImageBatches
from .onnx_export import INPUT_NAME

TOLERANCES = {"fp32": 1e-3, "fp16": 2e-2, "int8": 0.25}
DEFAULT_WORKSPACE_MB = 2048


def import_tensorrt():
    """The `tensorrt` module, or MissingDependencyError saying how to get it."""
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the package is there but libnvinfer is not
        detail = "" if isinstance(exc, ModuleNotFoundError) else f" ({str(exc).strip()[:200]})"
        raise MissingDependencyError(
            f"--tensorrt needs the TensorRT Python package, which is not usable here{detail}; on a machine with an "
            "NVIDIA GPU run `.venv/bin/pip install -r requirements-gpu.txt` (ONNX export works without it)"
        ) from None
    return tensorrt


def require_gpu() -> None:
    """BackendError unless torch sees a CUDA device (engines are built and checked on it)."""
    import torch

    if not torch.cuda.is_available():
        raise BackendError(
            "--tensorrt needs an NVIDIA GPU with a working CUDA driver, and torch sees none here; "
            "export ONNX only, or build the engine on the target machine"
        )


def check_available():
    """Preflight for `--tensorrt`: the package and a GPU. Returns the tensorrt module."""
    trt = import_tensorrt()
    require_gpu()
    return trt


@dataclass(frozen=True)
class EngineSpec:
    """Precision flags and input shapes of an engine. `batch` None: dynamic batch 1..max_batch."""

    resolution: int
    batch: int | None = 1
    max_batch: int = 16
    fp16: bool = False
    int8: bool = False
    workspace_mb: int = DEFAULT_WORKSPACE_MB

    @property
    def precision(self) -> str:
        return "+".join(p for p, on in (("int8", self.int8), ("fp16", self.fp16)) if on) or "fp32"

    @property
    def tolerance(self) -> float:
        return TOLERANCES["int8" if self.int8 else "fp16" if self.fp16 else "fp32"]

    @property
    def calibration_batch(self) -> int:
        return self.max_batch if self.batch is None else self.batch

    def shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, 3, self.resolution, self.resolution)

    def profile_shapes(self) -> dict | None:
        """min/opt/max input shapes of the optimisation profile (kernels tuned for max_batch)."""
        if self.batch is not None:
            return None
        return {"min": self.shape(1), "opt": self.shape(self.max_batch), "max": self.shape(self.max_batch)}

    def to_dict(self) -> dict:
        profile = self.profile_shapes()
        return {
            "precision": self.precision, "tolerance": self.tolerance, "workspace_mb": self.workspace_mb,
            "batch": self.batch, "max_batch": self.max_batch if self.batch is None else self.batch,
            "profile": {k: list(v) for k, v in profile.items()} if profile else None,
            "tf32": False if self.precision == "fp32" else None,
        }


def _make_logger(trt):
    """A TensorRT logger that prints warnings to stderr and keeps errors for our message."""

    class CollectingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                print(f"[TensorRT] {msg}", file=sys.stderr)

    return CollectingLogger()


def make_calibrator(trt, batches: ImageBatches):
    """An IInt8EntropyCalibrator2 that feeds `batches` (real images) through torch CUDA tensors.

    (TensorRT 10.1 deprecates implicit int8 calibration in favour of explicit Q/DQ quantization;
    it still works in TensorRT 10.)
    """
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(batches)
            self._device = None  # keeps the current batch alive while TensorRT reads it
            self.cache: bytes | None = None
            self.batches_read = 0

        def get_batch_size(self):
            return batches.batch_size

        def get_batch(self, names):
            try:
                batch = next(self._batches)
            except StopIteration:
                return None
            self._device = torch.from_numpy(batch).to("cuda").contiguous()
            torch.cuda.synchronize()
            self.batches_read += 1
            return [int(self._device.data_ptr())] * len(names)

        def read_calibration_cache(self):
            return self.cache

        def write_calibration_cache(self, cache):
            self.cache = bytes(cache)

    return EntropyCalibrator()


def build_engine(onnx_bytes: bytes, spec: EngineSpec, calibration: ImageBatches | None = None) -> bytes:
    """Parse the ONNX model, configure precision and shapes, and build a serialized engine."""
    trt = check_available()
    if spec.int8 and calibration is None:
        raise ExportError("an int8 engine needs calibration images (--calib-data DIR)")
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)).strip() for i in range(parser.num_errors))
        raise ExportError(f"TensorRT's ONNX parser rejected the model: {errors[:400]}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mb << 20)
    if spec.precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # a true fp32 engine, comparable with ONNX Runtime
    if spec.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    shapes = spec.profile_shapes()
    if shapes:
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, shapes["min"], shapes["opt"], shapes["max"])
        config.add_optimization_profile(profile)
    calibrator = None
    if spec.int8:
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = make_calibrator(trt, calibration)
        config.int8_calibrator = calibrator
        if shapes:  # calibration runs at one fixed shape: the calibrator's batch
            fixed = spec.shape(calibration.batch_size)
            calib_profile = builder.create_optimization_profile()
            calib_profile.set_shape(INPUT_NAME, fixed, fixed, fixed)
            config.set_calibration_profile(calib_profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = "; ".join(logger.errors[-3:]) or "no error logged"
        raise ExportError(f"TensorRT could not build the {spec.precision} engine: {detail[:400]}")
    return bytes(serialized)


class TensorRTRunner:
    """A deserialized engine and one execution context; `infer(x) -> first output` (Polygraphy style)."""

    def __init__(self, engine_bytes: bytes):
        self.engine_bytes = engine_bytes
        self._context = None

    def activate(self) -> "TensorRTRunner":
        import torch

        trt = check_available()
        self._logger = _make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_bytes)
        if self._engine is None:
            raise ExportError(f"TensorRT could not load the engine: {'; '.join(self._logger.errors[-2:])[:300]}")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: torch.from_numpy(np.empty(0, trt.nptype(self._engine.get_tensor_dtype(n)))).dtype for n in names}
        self._stream = torch.cuda.Stream()
        return self

    def infer(self, x: np.ndarray) -> np.ndarray:
        import torch

        if self._context is None:
            raise RuntimeError("call activate() (or use the runner as a context manager) first")
        (name,) = self._inputs
        with torch.cuda.stream(self._stream):
            inp = torch.from_numpy(np.ascontiguousarray(x)).to("cuda", self._dtypes[name]).contiguous()
            if not self._context.set_input_shape(name, tuple(inp.shape)):
                raise ExportError(f"the engine does not accept input shape {tuple(inp.shape)} (see its batch range)")
            self._context.set_tensor_address(name, inp.data_ptr())
            outputs = {}
            for out in self._outputs:
                outputs[out] = torch.empty(tuple(self._context.get_tensor_shape(out)), dtype=self._dtypes[out], device="cuda")
                self._context.set_tensor_address(out, outputs[out].data_ptr())
            ok = self._context.execute_async_v3(self._stream.cuda_stream)
        self._stream.synchronize()
        if not ok:
            raise ExportError(f"TensorRT inference failed: {'; '.join(self._logger.errors[-2:])[:300]}")
        return outputs[self._outputs[0]].float().cpu().numpy()

    def deactivate(self) -> None:
        self._context = None
        self._engine = None
        self._runtime = None

    def __enter__(self) -> "TensorRTRunner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()


def engine_batches(spec: EngineSpec, batches: Sequence[int]) -> list[int]:
    """The parity batch sizes that the engine accepts (dynamic engines stop at max_batch)."""
    if spec.batch is not None:
        return [spec.batch]
    return sorted({min(b, spec.max_batch) for b in batches})
