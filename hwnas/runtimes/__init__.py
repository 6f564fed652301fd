"""The runtime layer: build a model for a runtime and run it, below profiling and export.

One module per job: `base` the runner protocol (activate / infer / deactivate, a context manager,
time_call and memory for timing), `onnx_model` the one torch -> ONNX exporter and its table,
`ort` the one ONNX Runtime session builder and runner, `tensorrt` the one TensorRT engine builder
and runner, `torch_eager` eager PyTorch on CPU and CUDA, `memory` what a runner reports.

`RUNTIMES` maps a backend name (the name a LUT records) to its `Runtime`: how to load a model
into an active runner with that backend's options. Profilers prepare every op through it, and
`hwnas.profilers.end_to_end.measure_end_to_end` every whole network; a further runtime
(ExecuTorch, OpenVINO, LiteRT) plugs in with `register`. Nothing here imports hwnas' profilers,
export, tables or search; GPU libraries are imported only when their runtime loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import BackendError
from .base import Runner


@dataclass(frozen=True)
class Runtime:
    """One backend's runtime. `load(model, input_shape, **options) -> Runner` returns an active
    runner timed on a seeded input of `input_shape`; `model` is a torch module, or ONNX bytes
    where `runs_onnx` (the runtime then runs that very graph)."""

    name: str
    load: Callable[..., Runner]
    runs_onnx: bool = False


RUNTIMES: dict[str, Runtime] = {}


def register(runtime: Runtime) -> Runtime:
    """Add (or replace) the runtime of backend `runtime.name`."""
    RUNTIMES[runtime.name] = runtime
    return runtime


def get_runtime(name: str) -> Runtime:
    """The runtime of backend `name`, or BackendError naming the registered ones."""
    try:
        return RUNTIMES[name]
    except KeyError:
        raise BackendError(f"no runtime for backend {name!r}; registered: {', '.join(RUNTIMES)}") from None


def load_runner(backend: str, model, input_shape, **options) -> Runner:
    """An active runner of `model` on `backend`'s runtime with `options` (the runtime's keywords)."""
    return get_runtime(backend).load(model, input_shape, **options)


def _torch_cpu(model, input_shape, **options):
    from .torch_eager import torch_cpu_runner

    return torch_cpu_runner(model, input_shape, **options)


def _torch_cuda(model, input_shape, **options):
    from .torch_eager import torch_cuda_runner

    return torch_cuda_runner(model, input_shape, **options)


def _ort(model, input_shape, **options):
    from .ort import ort_runner

    return ort_runner(model, input_shape, **options)


def _tensorrt(model, input_shape, **options):
    from .tensorrt import tensorrt_runner

    return tensorrt_runner(model, input_shape, **options)


def _openvino(model, input_shape, **options):
    from .openvino import openvino_runner

    return openvino_runner(model, input_shape, **options)


def _remote(model, input_shape, **options):
    from .remote import remote_runner

    return remote_runner(model, input_shape, **options)


def _executorch(model, input_shape, **options):
    from .executorch import executorch_runner

    return executorch_runner(model, input_shape, **options)


def _litert(model, input_shape, **options):
    from .litert import litert_runner

    return litert_runner(model, input_shape, **options)


for _runtime in (Runtime("torch-cpu", _torch_cpu), Runtime("torch-cuda", _torch_cuda),
                 Runtime("ort-cpu", _ort, runs_onnx=True), Runtime("ort-cuda", _ort, runs_onnx=True),
                 Runtime("ort-trt", _ort, runs_onnx=True), Runtime("tensorrt", _tensorrt), Runtime("openvino", _openvino),
                 Runtime("executorch", _executorch), Runtime("litert", _litert), Runtime("remote", _remote)):
    register(_runtime)

__all__ = ["RUNTIMES", "Runner", "Runtime", "get_runtime", "load_runner", "register"]
