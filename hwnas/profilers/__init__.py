"""Profiling backends, chosen by name: `get_profiler("ort-cpu", threads=1)`.

A profiler turns a backend's options into its runtime's settings (hwnas.runtimes, which loads
and runs the model) and times what the runtime runs: ops (`Profiler.measure`, `session`) and
whole networks (`end_to_end.measure_end_to_end`). GPU libraries (onnxruntime-gpu, tensorrt)
are imported only when their backend is used.
"""

from __future__ import annotations

import inspect

from ..errors import BackendError
from .base import Profiler, Runner
from .executorch_backend import ExecuTorchProfiler
from .litert_backend import LiteRTProfiler
from .openvino_backend import OpenVinoProfiler
from .ort_backend import OrtCPUProfiler, OrtCUDAProfiler, OrtTensorRTProfiler
from .remote_backend import RemoteProfiler
from .statistics import StatsConfig
from .tensorrt_backend import TensorRTProfiler
from .torch_backend import TorchCPUProfiler, TorchCUDAProfiler

PROFILERS: dict[str, type[Profiler]] = {
    cls.name: cls
    for cls in (TorchCPUProfiler, TorchCUDAProfiler, OrtCPUProfiler, OrtCUDAProfiler, OrtTensorRTProfiler,
                TensorRTProfiler, OpenVinoProfiler, ExecuTorchProfiler, LiteRTProfiler, RemoteProfiler)
}


def available_backends() -> dict[str, str | None]:
    """Every registered backend -> None if it can run here, else the reason it cannot."""
    reasons = {}
    for name, cls in PROFILERS.items():
        try:
            reasons[name] = cls.unavailable_reason()
        except Exception as exc:  # a broken optional install must not hide the other backends
            reasons[name] = f"{type(exc).__name__}: {exc}"
    return reasons


def describe_availability(reasons: dict[str, str | None] | None = None) -> str:
    """`torch-cpu, ort-cpu (torch-cuda: no CUDA device; ...)` for error messages."""
    reasons = available_backends() if reasons is None else reasons
    ok = [n for n, r in reasons.items() if r is None]
    missing = [f"{n}: {r}" for n, r in reasons.items() if r is not None]
    text = ", ".join(ok) or "none"
    return f"{text} ({'; '.join(missing)})" if missing else text


def backend_options(name: str) -> tuple[str, ...]:
    """Keyword options a backend takes (besides `stats`)."""
    params = inspect.signature(PROFILERS[name].__init__).parameters
    return tuple(p for p in params if p not in ("self", "stats"))


def get_profiler(name: str, stats: StatsConfig | None = None, **options) -> Profiler:
    """Instantiate backend `name`; unknown or unavailable backends and foreign options raise
    BackendError naming what is available here."""
    if name not in PROFILERS:
        raise BackendError(f"unknown backend {name!r}; available here: {describe_availability()}")
    reason = PROFILERS[name].unavailable_reason()
    if reason is not None:
        raise BackendError(f"backend {name!r} is not available here: {reason}; available here: {describe_availability()}")
    accepted = backend_options(name)
    for key in options:
        if key not in accepted:
            raise BackendError(f"backend {name!r} does not take option {key!r}; it takes: {', '.join(accepted)}")
    return PROFILERS[name](stats=stats, **options)


__all__ = ["PROFILERS", "Profiler", "Runner", "StatsConfig", "available_backends", "backend_options",
           "describe_availability", "get_profiler"]
