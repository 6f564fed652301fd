"""The engine `hwnas export` builds: a precision plan for the installed TensorRT (10 or 11), int8 by
explicit quantization calibrated on real images, the preflight of `--tensorrt`.

The builder itself (`build_serialized`) and the runner (`TensorRTRunner`) are the runtime
layer's (hwnas.runtimes.tensorrt), which the `tensorrt` profiler builds and runs through too.

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

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from ..errors import ExportError
from ..runtimes.onnx_model import INPUT_NAME
from ..runtimes.tensorrt import TrtFeatures, build_serialized, import_tensorrt, require_gpu
from .int8_calibration import ImageBatches

TOLERANCES = {"fp32": 1e-3, "fp16": 2e-2, "int8": 0.25}
DEFAULT_WORKSPACE_MB = 2048
INT8_MODES = ("qdq", "legacy")


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


def engine_batches(spec: EngineSpec, batches: Sequence[int]) -> list[int]:
    """The parity batch sizes that the engine accepts (dynamic engines stop at max_batch)."""
    if spec.batch is not None:
        return [spec.batch]
    return sorted({min(b, spec.max_batch) for b in batches})
