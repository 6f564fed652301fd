"""ONNX -> serialized TensorRT engine (TensorRT 10 and 11), int8 by explicit quantization, a runner.

The one TensorRT builder of hwnas: `hwnas export` (`build_engine`) and the `tensorrt` profiler
(`build_serialized`) both build through it. `tensorrt` is imported lazily: everything else in
hwnas works without it. Device buffers are torch CUDA tensors (no pycuda / cuda-python here).

Versions (requirements-gpu.txt pins tensorrt>=10,<12). Features are detected, not assumed:
  TensorRT 10  precision builder flags (FP16, INT8, TF32) on a weakly typed network.
  TensorRT 11  no precision flags: networks are strongly typed, precision lives in the graph:
               fp16 converts the ONNX graph to float16 (float32 at its edges, quantize.to_fp16).
int8 is explicit quantization in both: Q/DQ nodes calibrated on real images are inserted in the
ONNX graph (quantize.quantize_qdq) and TensorRT builds them as written. `--int8-mode legacy`
(IInt8EntropyCalibrator2, deprecated since 10.1) is offered only where the installed TensorRT
still has BuilderFlag.INT8 and the calibrator class.

Parity tolerances against ONNX Runtime (max abs diff / max |ONNX Runtime logit|):
  fp32  1e-3  TF32 is switched off, so only GPU vs CPU summation order differs
  fp16  2e-2  10-bit mantissa activations and weights
  int8  0.25  8-bit activations; checked on real calibration images, not noise
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import BackendError, ExportError, MissingDependencyError
from ..runner import Runner
from .calibration import ImageBatches
from .onnx_export import INPUT_NAME

TOLERANCES = {"fp32": 1e-3, "fp16": 2e-2, "int8": 0.25}
DEFAULT_WORKSPACE_MB = 2048
SUPPORTED_MAJORS = (10, 11)
INT8_MODES = ("qdq", "legacy")


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


def check_available():
    """Preflight for `--tensorrt`: the package and a GPU. Returns the tensorrt module."""
    trt = import_tensorrt()
    require_gpu()
    return trt


@dataclass(frozen=True)
class EngineSpec:
    """Precision flags and input shapes of an engine. `batch` None: dynamic batch 1..max_batch.
    `int8_mode`: 'qdq' (explicit quantization, the default) or 'legacy' (implicit calibrator)."""

    resolution: int
    batch: int | None = 1
    max_batch: int = 16
    fp16: bool = False
    int8: bool = False
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    int8_mode: str = "qdq"

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
            "int8_mode": self.int8_mode if self.int8 else None,
        }


@dataclass(frozen=True)
class BuildPlan:
    """How an EngineSpec is built on one TensorRT: network typing, builder flags, graph rewrites."""

    tensorrt: str
    strongly_typed: bool
    set_flags: tuple[str, ...]
    clear_flags: tuple[str, ...]
    graph: tuple[str, ...]  # rewrites of the ONNX graph, in order: "qdq", "fp16"
    legacy_int8: bool

    def to_dict(self) -> dict:
        return {**asdict(self), "set_flags": list(self.set_flags), "clear_flags": list(self.clear_flags),
                "graph": list(self.graph)}


def plan_build(trt, spec: EngineSpec) -> BuildPlan:
    """The build of `spec` on this TensorRT (10: precision flags; 11: strongly typed, precision in
    the graph); an impossible combination is an ExportError before any work."""
    f = TrtFeatures.of(trt)
    if spec.int8_mode not in INT8_MODES:
        raise ExportError(f"--int8-mode must be one of {', '.join(INT8_MODES)}, not {spec.int8_mode!r}")
    if spec.int8 and spec.int8_mode == "legacy" and not (f.int8_flag and f.legacy_calibrator):
        raise ExportError(
            f"TensorRT {f.version} has no implicit int8 calibration (BuilderFlag.INT8 / IInt8EntropyCalibrator2 "
            "are gone); use the default --int8-mode qdq (explicit quantization)"
        )
    typed = (spec.fp16 and not f.fp16_flag) or (spec.int8 and not f.int8_flag)
    clear = ("TF32",) if spec.precision == "fp32" and f.tf32_flag else ()
    if not typed:
        flags = tuple(name for name, on in (("FP16", spec.fp16), ("INT8", spec.int8)) if on)
        graph = ("qdq",) if spec.int8 and spec.int8_mode == "qdq" else ()
        return BuildPlan(f.version, False, flags, clear, graph, spec.int8 and spec.int8_mode == "legacy")
    if spec.int8 and spec.fp16:
        raise ExportError(
            f"TensorRT {f.version} builds strongly typed networks only, where an int8 (Q/DQ) graph keeps its other "
            "layers in float32: drop --fp16 or --int8"
        )
    return BuildPlan(f.version, True, (), clear, ("qdq",) if spec.int8 else ("fp16",) if spec.fp16 else (), False)


def _make_logger(trt, quiet: bool = False):
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


def make_calibrator(trt, batches: ImageBatches):
    """An IInt8EntropyCalibrator2 that feeds `batches` (real images) through torch CUDA tensors
    (`--int8-mode legacy`; deprecated since TensorRT 10.1, absent in 11)."""
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


def build_serialized(trt, onnx_bytes: bytes, *, workspace_mb: int, strongly_typed: bool = False,
                     set_flags: Sequence[str] = (), clear_flags: Sequence[str] = (), profile_shapes: dict | None = None,
                     configure: Callable | None = None, error: type[Exception] = ExportError, quiet: bool = False) -> bytes:
    """Parse ONNX bytes, configure and build a serialized engine: the one TensorRT build of hwnas.

    `configure(builder, network, config)` adds what a caller needs beyond flags and shapes (the
    legacy int8 calibrator, or the profiler's fixed int8 ranges). Failures raise `error`.
    """
    logger = _make_logger(trt, quiet)
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


def build_engine(onnx_bytes: bytes, spec: EngineSpec, calibration: ImageBatches | None = None) -> bytes:
    """Plan the build for the installed TensorRT, rewrite the graph where the plan says (Q/DQ int8
    calibrated on `calibration`'s real images, fp16), and build a serialized engine."""
    from . import quantize

    trt = check_available()
    plan = plan_build(trt, spec)
    if spec.int8 and calibration is None:
        raise ExportError("an int8 engine needs calibration images (--calib-data DIR)")
    graph = onnx_bytes
    if "qdq" in plan.graph:
        graph = quantize.quantize_qdq(graph, calibration)
    if "fp16" in plan.graph:
        graph = quantize.to_fp16(graph)
    configure = _legacy_int8(trt, spec, calibration) if plan.legacy_int8 else None
    try:
        return build_serialized(trt, graph, workspace_mb=spec.workspace_mb, strongly_typed=plan.strongly_typed,
                                set_flags=plan.set_flags, clear_flags=plan.clear_flags,
                                profile_shapes=spec.profile_shapes(), configure=configure)
    except ExportError as exc:
        raise ExportError(f"{spec.precision} engine: {exc}") from None


def _legacy_int8(trt, spec: EngineSpec, calibration: ImageBatches) -> Callable:
    """Configure step of the implicit (deprecated) int8 path: the entropy calibrator."""

    def configure(builder, network, config) -> None:
        config.int8_calibrator = make_calibrator(trt, calibration)
        shapes = spec.profile_shapes()
        if shapes:  # calibration runs at one fixed shape: the calibrator's batch
            fixed = spec.shape(calibration.batch_size)
            calib_profile = builder.create_optimization_profile()
            calib_profile.set_shape(INPUT_NAME, fixed, fixed, fixed)
            config.set_calibration_profile(calib_profile)

    return configure


class TensorRTRunner(Runner):
    """A deserialized engine and one execution context; `infer(x) -> first output` (hwnas.runner)."""

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


def engine_batches(spec: EngineSpec, batches: Sequence[int]) -> list[int]:
    """The parity batch sizes that the engine accepts (dynamic engines stop at max_batch)."""
    if spec.batch is not None:
        return [spec.batch]
    return sorted({min(b, spec.max_batch) for b in batches})
