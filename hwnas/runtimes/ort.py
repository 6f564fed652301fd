"""ONNX Runtime: the one place hwnas builds sessions, and its runner.

`create_session` fixes what changes latency and must be recorded with a table: intra-op
threads, one inter-op thread, sequential execution, the graph optimisation level (it changes
CPU latency up to 2x). ONNX Runtime falls back to the CPU silently (a log line) when a GPU
provider fails to load: with `required` set, a session whose first provider is not that one is
refused (`check_providers`).

`OrtRunner` runs ONNX bytes: `infer(x)` is a plain session run. For timing it binds a fixed
input (and preallocated outputs where their shapes are static; a detector's box count is not,
so ONNX Runtime allocates those) on the provider's device through an IOBinding, so GPU timings
do not include host<->device copies; `run_with_iobinding` plus `synchronize_outputs` returns
when the GPU work is done, and the host clock times it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import BackendError, ExportError, MissingDependencyError
from .base import Runner
from .memory import MemoryInfo
from .module_check import check_against_module

OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}
CPU = "CPUExecutionProvider"


def import_ort():
    """onnxruntime, imported lazily (it is a pinned dependency, but keep the message clear)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(f"onnxruntime is not importable ({exc}); install it from requirements.txt") from None
    return onnxruntime


def check_providers(session, required: str, backend: str) -> None:
    """Refuse a session whose first active provider is not `required` (a silent CPU fallback)."""
    active = list(session.get_providers())
    if not active or active[0] != required:
        raise BackendError(
            f"{backend}: ONNX Runtime activated {', '.join(active) or 'no provider'} instead of {required} "
            f"(the provider failed to load; ORT only logs it); refusing to record those timings as {backend} "
            "ones: check the CUDA/cuDNN/TensorRT libraries onnxruntime-gpu needs"
        )


@dataclass(frozen=True)
class OrtSettings:
    """How a session is built. `threads` 0 lets ONNX Runtime choose; `providers` entries are names
    or (name, options) pairs; `required`: the provider that must come first (None: no check);
    `io_device`: where timing buffers live; `name`: who asks (in messages)."""

    threads: int = 1
    opt_level: str = "all"
    providers: tuple = (CPU,)
    required: str | None = None
    io_device: tuple[str, int] = ("cpu", 0)
    name: str = "onnxruntime"
    error: type[Exception] = field(default=BackendError, compare=False)

    def __post_init__(self) -> None:
        if self.opt_level not in OPT_LEVELS:
            raise BackendError(f"unknown graph optimisation level {self.opt_level!r}; choose one of: {', '.join(OPT_LEVELS)}")


def create_session(model, settings: OrtSettings = OrtSettings(), what: str = "the model"):
    """An InferenceSession of `model` (ONNX bytes or a path) built as `settings` say; failures
    raise `settings.error` in one line."""
    ort = import_ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[settings.opt_level])
    options.log_severity_level = 3  # the provider fallback is checked below, not printed
    source = model if isinstance(model, (bytes, bytearray)) else str(model)
    try:
        session = ort.InferenceSession(source, options, providers=list(settings.providers))
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise settings.error(f"{settings.name}: ONNX Runtime could not load {what}: {detail}") from None
    if settings.required is not None:
        check_providers(session, settings.required, settings.name)
    return session


def _static(shape) -> bool:
    return all(isinstance(d, int) and d > 0 for d in shape)


class OrtRunner(Runner):
    """ONNX bytes in an ONNX Runtime session: `infer(x) -> first output`; with `timing_shape`,
    `time_call()` runs a fixed seeded input through an IOBinding. Activated lazily (`with`)."""

    def __init__(self, model: bytes, settings: OrtSettings = OrtSettings(), *, timing_shape=None, clock=None,
                 memory: MemoryInfo | None = None, what: str = "the model"):
        self.model = bytes(model)
        self.settings = settings
        self.timing_shape = tuple(timing_shape) if timing_shape is not None else None
        self.clock_ns = clock or time.perf_counter_ns
        self._memory = memory
        self.what = what
        self.session = self.binding = None
        self._keep: list = []

    @property
    def active(self) -> bool:
        return self.session is not None

    def activate(self) -> "OrtRunner":
        if self.session is None:
            self.session = create_session(self.model, self.settings, self.what)
            self._input = self.session.get_inputs()[0].name
            if self.timing_shape is not None:
                self._bind(self.timing_shape)
        return self

    def _bind(self, shape) -> None:
        ort = import_ort()
        device, index = self.settings.io_device
        self.timing_input = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        self.binding = self.session.io_binding()
        self._keep = [ort.OrtValue.ortvalue_from_numpy(self.timing_input, device, index)]
        self.binding.bind_ortvalue_input(self._input, self._keep[0])
        for out in self.session.get_outputs():
            if _static(out.shape) and out.type == "tensor(float)":
                value = ort.OrtValue.ortvalue_from_shape_and_type([int(d) for d in out.shape], np.float32, device, index)
                self._keep.append(value)
                self.binding.bind_ortvalue_output(out.name, value)
            else:  # data-dependent size (a detector's boxes) or another type: ONNX Runtime allocates it
                self.binding.bind_output(out.name, device, index)
        self.gpu = device != "cpu"

    @property
    def static_outputs(self) -> bool:
        """Whether every output's shape is fixed (a detector's is not: its box count depends on the data)."""
        return all(_static(o.shape) for o in self.activate().session.get_outputs())

    def time_call(self) -> float:
        if self.binding is None:
            return super().time_call()
        start = self.clock_ns()
        self.session.run_with_iobinding(self.binding)
        if self.gpu:
            self.binding.synchronize_outputs()
        end = self.clock_ns()
        return (end - start) / 1e6

    def infer(self, x: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise RuntimeError("call activate() (or use the runner as a context manager) first")
        return self.session.run(None, {self._input: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def memory(self) -> MemoryInfo:
        """What the runner was given (a module's hook estimate), else the graph's parameters and I/O."""
        if self._memory is not None:
            return self._memory
        import onnx
        from onnx import numpy_helper

        params = sum(numpy_helper.to_array(t).nbytes for t in onnx.load_from_string(self.model).graph.initializer)
        in_bytes = int(np.prod(self.timing_shape)) * 4 if self.timing_shape else 0
        outputs = self.binding.get_outputs() if self.binding is not None else []
        out_bytes = sum(int(np.prod(v.shape())) * 4 for v in outputs)
        return MemoryInfo(params, in_bytes, out_bytes, None, "unknown")

    def deactivate(self) -> None:
        self.session = self.binding = None
        self._keep.clear()


def ort_runner(model, input_shape, *, threads: int = 1, opt_level: str = "all", providers=(CPU,),
               required: str | None = None, io_device=("cpu", 0), name: str = "ort-cpu", exporter: str = "torchscript",
               verify_tolerance: float | None = 1e-3, clock: str | None = "wall", what: str = "the op") -> OrtRunner:
    """The ONNX Runtime runtimes' runner (active): `model` is ONNX bytes, run as it is, or a torch
    module, exported with `exporter` (under `threads` torch threads), its memory estimated and,
    with `verify_tolerance`, its output checked against the module's before it is timed (not
    where the output's size depends on the data, as a detector's does)."""
    settings = OrtSettings(threads, opt_level, tuple(providers), required, tuple(io_device), name)
    if isinstance(clock, str):
        from .torch_eager import CLOCKS

        clock = CLOCKS[clock]  # "thread": the calling thread's CPU time, "wall": the host clock
    if isinstance(model, (bytes, bytearray)):
        return OrtRunner(model, settings, timing_shape=input_shape, clock=clock, what=what).activate()
    import torch

    from .memory import estimate_on_cpu
    from .onnx_model import export_onnx
    from .torch_eager import ThreadScope

    with ThreadScope(threads):
        module = model.eval()
        x = torch.randn(input_shape)
        _, memory = estimate_on_cpu(module, x)
        try:
            proto = export_onnx(module, x, exporter, what=what)
        except ExportError as exc:
            raise BackendError(f"ONNX export failed: {exc}") from None
        runner = OrtRunner(proto.SerializeToString(), settings, timing_shape=input_shape, clock=clock,
                           memory=memory, what=what).activate()
        if verify_tolerance and runner.static_outputs:
            check_against_module(runner, module, verify_tolerance, name, "the exported ONNX graph")
    return runner
