"""OpenVINO (CPU): the one place hwnas converts and compiles models for OpenVINO, and its runner.

A torch module is converted by `openvino.convert_model` (OpenVINO's PyTorch frontend, traced at a
seeded example input) and compiled on the CPU plugin with what changes latency fixed and
recorded (`OpenVinoSettings.config`): `INFERENCE_NUM_THREADS` (1 by default), one stream, the
LATENCY hint, and `INFERENCE_PRECISION_HINT` f32 by default: on CPUs with AMX the plugin's
default is bf16, which would silently change what is measured (and the outputs), so the
precision is an option of the table. `PERF_COUNT` is on, so every inference request keeps
per-layer times (`OpenVinoRunner.layer_times`, from `get_profiling_info()`, whose counters
average over all of a request's inferences, its weight-repacking first one included).

With one inference thread the CPU plugin runs a request in the calling thread (measured here:
thread CPU time within 1% of wall time on an idle core), so the `thread` clock serves as for
ONNX Runtime. openvino is an optional dependency (requirements-mobile.txt), imported only when a
model is converted or compiled.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BackendError, MissingDependencyError
from .base import Runner
from .memory import MemoryInfo
from .module_check import check_against_module

INSTALL_HINT = "pip install -r requirements-mobile.txt (openvino)"
#: INFERENCE_PRECISION_HINT values offered (the CPU plugin's names) and their short aliases
PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}


def import_openvino():
    """The openvino package, imported lazily with an install hint."""
    try:
        import openvino
    except ImportError as exc:
        raise MissingDependencyError(f"openvino is not importable ({exc}); {INSTALL_HINT}") from None
    return openvino


def check_precision(precision: str) -> str:
    """The CPU plugin's name of `precision` (f32, bf16, f16; fp32/fp16 accepted), or BackendError."""
    if precision not in PRECISIONS:
        raise BackendError(f"openvino precision must be one of f32, bf16, f16 (INFERENCE_PRECISION_HINT), "
                           f"not {precision!r}")
    return PRECISIONS[precision]


def converter_name(exporter: str | None) -> str:
    """How modules are converted, as a table records it."""
    return "openvino.convert_model" + (f"(onnx:{exporter})" if exporter else "(pytorch)")


@dataclass(frozen=True)
class OpenVinoSettings:
    """How a model is compiled: device, inference threads, precision hint, per-layer counters."""

    threads: int = 1
    precision: str = "f32"
    perf_count: bool = True
    device: str = "CPU"

    def config(self) -> dict:
        """The compile_model properties (what a table records as the backend's options)."""
        return {"INFERENCE_NUM_THREADS": self.threads, "INFERENCE_PRECISION_HINT": check_precision(self.precision),
                "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": self.perf_count}


def convert(module, example, what: str = "the model", exporter: str | None = None, error=BackendError):
    """`openvino.convert_model` of an eval-mode torch module traced at `example` (a tensor), its
    input shape fixed to the example's: by OpenVINO's PyTorch frontend (`exporter` None), or of
    the module's ONNX graph by `exporter` (torchscript, dynamo: hwnas.runtimes.onnx_model; 2-4x
    faster for whole networks, measured here). Failures raise `error` in one line."""
    ov = import_openvino()
    import torch

    source, kwargs = module.eval(), {"example_input": example, "input": [tuple(example.shape)]}
    if exporter is not None:
        from .onnx_model import export_onnx

        source, kwargs = io.BytesIO(export_onnx(module, example, exporter, what=what).SerializeToString()), {}
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # torch.jit.trace deprecation, tracer warnings
            return ov.convert_model(source, **kwargs)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise error(f"openvino.convert_model could not convert {what}: {first}") from None


def read_model(path):
    """An OpenVINO model read from an IR (.xml beside its .bin) or an ONNX file."""
    ov = import_openvino()
    return ov.Core().read_model(str(path))


def compile_model(model, settings: OpenVinoSettings = OpenVinoSettings(), error=BackendError, what: str = "the model"):
    """`model` (an openvino.Model or a file) compiled on `settings.device` with `settings.config()`."""
    ov = import_openvino()
    core = ov.Core()
    source = str(model) if isinstance(model, (str, Path)) else model
    try:
        return core.compile_model(source, settings.device, settings.config())
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise error(f"OpenVINO could not compile {what} for {settings.device}: {first}") from None


@dataclass(frozen=True)
class LayerTime:
    """One executed layer of the last inference (`get_profiling_info()`): its name, operation
    type, the kernel that ran it, and its time in ms."""

    name: str
    type: str
    exec_type: str
    ms: float


class OpenVinoRunner(Runner):
    """A compiled OpenVINO model: `infer(x) -> first output`; `time_call()` runs a seeded input of
    `timing_shape` on one inference request; `layer_times()` the per-layer breakdown of that input."""

    def __init__(self, model, settings: OpenVinoSettings = OpenVinoSettings(), *, timing_shape=None, clock=None,
                 memory: MemoryInfo | None = None, error=BackendError, what: str = "the model"):
        self.model = model
        self.settings = settings
        self.timing_shape = tuple(timing_shape) if timing_shape is not None else None
        self.clock_ns = clock or time.perf_counter_ns
        self._memory = memory
        self.error = error
        self.what = what
        self.compiled = self.request = None

    def activate(self) -> "OpenVinoRunner":
        if self.compiled is None:
            self.compiled = compile_model(self.model, self.settings, self.error, self.what)
            self.request = self.compiled.create_infer_request()
            if self.timing_shape is not None:
                ov = import_openvino()
                self.timing_input = np.random.default_rng(0).standard_normal(self.timing_shape, dtype=np.float32)
                self.request.set_input_tensor(ov.Tensor(self.timing_input))
        return self

    def time_call(self) -> float:
        start = self.clock_ns()
        self.request.infer()
        end = self.clock_ns()
        return (end - start) / 1e6

    def infer(self, x: np.ndarray) -> np.ndarray:
        if self.compiled is None:
            raise RuntimeError("call activate() (or use the runner as a context manager) first")
        request = self.compiled.create_infer_request()  # the timing request keeps its bound input
        request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return np.array(request.get_output_tensor(0).data, copy=True)

    def layer_times(self, calls: int = 20, warmup: int = 3) -> list[LayerTime]:
        """Per-layer times (executed layers), each the mean of `calls` inferences of the timing
        input after `warmup` ones, on a model compiled afresh for this. The CPU plugin's counters
        hold, per layer, the mean over every inference of the compiled model so far (all its
        requests), and the first one repacks weights (measured here: 10 ms for a head whose later
        calls take microseconds), so the warm-up's share is taken out:
        (mean after all x all - mean after warm-up x warm-up) / calls."""
        ov = import_openvino()
        compiled = compile_model(self.model, self.settings, self.error, self.what)
        request = compiled.create_infer_request()
        request.set_input_tensor(ov.Tensor(self.timing_input))

        def means(n: int) -> dict:
            for _ in range(n):
                request.infer()
            return {(p.node_name, p.node_type, p.exec_type): p.real_time.total_seconds() * 1e3
                    for p in request.get_profiling_info() if str(p.status).endswith("EXECUTED")}

        before, after, total = means(warmup), means(calls), warmup + calls
        return [LayerTime(*key, max(0.0, (ms * total - before.get(key, 0.0) * warmup) / calls))
                for key, ms in after.items()]

    def memory(self) -> MemoryInfo:
        """What the runner was given (a module's hook estimate), else the model's constants and I/O."""
        if self._memory is not None:
            return self._memory
        model = self.compiled.get_runtime_model()
        params = sum(int(op.get_byte_size()) for op in model.get_ops() if op.get_type_name() == "Constant")
        in_bytes = int(np.prod(self.timing_shape)) * 4 if self.timing_shape else 0
        out_bytes = sum(int(np.prod(o.get_shape())) * 4 for o in self.compiled.outputs)
        return MemoryInfo(params, in_bytes, out_bytes, None, "unknown")

    def deactivate(self) -> None:
        self.compiled = self.request = None


def openvino_version() -> str:
    """The installed OpenVINO runtime's version (the full build string)."""
    return import_openvino().get_version()


def openvino_runner(model, input_shape, *, threads: int = 1, precision: str = "f32", perf_count: bool = True,
                    clock: str | None = "wall", exporter: str | None = None, verify_tolerance: float | None = 1e-3,
                    what: str = "the op") -> OpenVinoRunner:
    """The `openvino` runtime's runner (active): `model` is an openvino.Model or an IR/ONNX file,
    compiled as it is, or a torch module, converted (`convert`, under `threads` torch threads), its memory
    estimated and, with `verify_tolerance` (relative to the output's scale), its output checked
    against the module's before it is timed. bf16 and f16 precisions skip the check."""
    settings = OpenVinoSettings(threads=threads, precision=check_precision(precision), perf_count=perf_count)
    if isinstance(clock, str):
        from .torch_eager import CLOCKS

        clock = CLOCKS[clock]
    if not hasattr(model, "forward"):  # an openvino.Model or a file
        return OpenVinoRunner(model, settings, timing_shape=input_shape, clock=clock, what=what).activate()
    import torch

    from .memory import estimate_on_cpu
    from .torch_eager import ThreadScope

    with ThreadScope(threads):
        module = model.eval()
        x = torch.randn(input_shape)
        _, memory = estimate_on_cpu(module, x)
        ov_model = convert(module, x, what, exporter)
        runner = OpenVinoRunner(ov_model, settings, timing_shape=input_shape, clock=clock, memory=memory,
                                what=what).activate()
        if verify_tolerance and settings.precision == "f32":
            check_against_module(runner, module, verify_tolerance, "openvino", "the converted model")
    return runner
