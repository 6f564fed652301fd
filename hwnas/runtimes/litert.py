"""LiteRT (TensorFlow Lite): the one place hwnas converts a module to a `.tflite` model, and its runner.

Conversion (`convert_tflite`): `litert_torch.convert(module, (example,))` (torch.export, then the
LiteRT converter), the flatbuffer from `model_content()`. The input stays NCHW float32 (the
converter inserts the transposes), so the same arrays feed PyTorch and LiteRT.

Running (`LiteRTRunner`): `ai_edge_litert.interpreter.Interpreter(model_content=...,
num_threads=threads)` (its default XNNPACK delegate on the CPU), a fixed seeded input set once,
`invoke()` timed by the chosen clock. End to end only: the Python interpreter reports no per-op times.

Both packages are optional (requirements-mobile.txt; litert-torch in its own environment, see
there) and imported only here, when a model is converted or run.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import time
import warnings

import numpy as np

from ..errors import BackendError, MissingDependencyError
from .base import Runner
from .memory import MemoryInfo
from .module_check import check_against_module

INSTALL_HINT = ("pip install ai-edge-litert==2.3.0 litert-torch==0.10.0 (see requirements-mobile.txt: litert-torch "
                "pins typing-extensions<4.13, so give it its own environment)")


def litert_missing() -> str | None:
    """Why LiteRT cannot convert and run here, or None."""
    for module, dist in (("ai_edge_litert", "ai-edge-litert"), ("litert_torch", "litert-torch")):
        if importlib.util.find_spec(module) is None:
            return f"{dist} is not installed ({INSTALL_HINT})"
    return None


def litert_facts(options: dict) -> dict:
    """LiteRT's part of a device fingerprint: the interpreter's and the converter's versions, the options."""
    versions = {}
    for dist in ("ai-edge-litert", "litert-torch"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {"name": "litert", "version": versions["ai-edge-litert"], "converter": versions["litert-torch"],
            "delegate": "xnnpack (the interpreter's default)", "options": dict(options)}


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise MissingDependencyError(f"ai-edge-litert is not importable ({exc}); {INSTALL_HINT}") from None
    return Interpreter


def convert_tflite(module, example, what: str = "the model") -> bytes:
    """`module` (eval mode) at `example`'s shape as `.tflite` bytes; the converter's progress muted."""
    try:
        import litert_torch
    except ImportError as exc:
        raise MissingDependencyError(f"litert-torch is not importable ({exc}); {INSTALL_HINT}") from None
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            model = litert_torch.convert(module.eval(), (example,))
            return bytes(model.model_content())
    except MissingDependencyError:
        raise
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise BackendError(f"litert-torch could not convert {what}: {type(exc).__name__}: {detail}") from None


class LiteRTRunner(Runner):
    """A `.tflite` model in a LiteRT interpreter with `threads` threads: `infer(x) -> first output`;
    `time_call()` invokes on a fixed seeded input of `timing_shape`. Activated lazily (`with`)."""

    def __init__(self, model: bytes, *, threads: int = 1, timing_shape=None, clock=None,
                 memory: MemoryInfo | None = None):
        self.model = bytes(model)
        self.threads = int(threads)
        self.timing_shape = tuple(timing_shape) if timing_shape is not None else None
        self.clock_ns = clock or time.perf_counter_ns
        self._memory = memory
        self.interpreter = None

    def activate(self) -> "LiteRTRunner":
        if self.interpreter is None:
            try:
                self.interpreter = _interpreter_class()(model_content=self.model, num_threads=self.threads)
                self.interpreter.allocate_tensors()
            except MissingDependencyError:
                raise
            except Exception as exc:
                self.interpreter = None
                raise BackendError(f"LiteRT could not load the model: {type(exc).__name__}: {str(exc)[:300]}") from None
            self._input = self.interpreter.get_input_details()[0]
            self._output = self.interpreter.get_output_details()[0]
            if self.timing_shape is not None:
                self.timing_input = np.random.default_rng(0).standard_normal(self.timing_shape, dtype=np.float32)
                self.interpreter.set_tensor(self._input["index"], self.timing_input)
        return self

    def time_call(self) -> float:
        if self.interpreter is None:
            raise RuntimeError("call activate() (or use the runner as a context manager) first")
        start = self.clock_ns()
        self.interpreter.invoke()
        end = self.clock_ns()
        return (end - start) / 1e6

    def infer(self, x: np.ndarray) -> np.ndarray:
        if self.interpreter is None:
            raise RuntimeError("call activate() (or use the runner as a context manager) first")
        self.interpreter.set_tensor(self._input["index"], np.ascontiguousarray(x, dtype=np.float32))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._output["index"]).copy()
        if self.timing_input is not None:  # time_call runs on the timing input again
            self.interpreter.set_tensor(self._input["index"], self.timing_input)
        return out

    def memory(self) -> MemoryInfo:
        if self._memory is not None:
            return self._memory
        self.activate()
        in_bytes = int(np.prod(self._input["shape"])) * 4
        out_bytes = int(np.prod(self._output["shape"])) * 4
        return MemoryInfo(len(self.model), in_bytes, out_bytes, None, "unknown")

    def deactivate(self) -> None:
        self.interpreter = None


def litert_runner(model, input_shape, *, threads: int = 1, clock: str | None = "wall",
                  verify_tolerance: float | None = 1e-3, what: str = "the op") -> LiteRTRunner:
    """The `litert` runtime's runner (active): `model` is `.tflite` bytes, run as they are, or a torch
    module, converted, its memory estimated and its output checked against the module's."""
    if isinstance(clock, str):
        from .torch_eager import CLOCKS

        clock = CLOCKS[clock]
    if isinstance(model, (bytes, bytearray)):
        return LiteRTRunner(model, threads=threads, timing_shape=input_shape, clock=clock).activate()
    import torch

    from .memory import estimate_on_cpu
    from .torch_eager import ThreadScope

    with ThreadScope(threads):
        module = model.eval()
        x = torch.randn(input_shape)
        _, memory = estimate_on_cpu(module, x)
        tflite = convert_tflite(module, x, what=what)
    runner = LiteRTRunner(tflite, threads=threads, timing_shape=input_shape, clock=clock, memory=memory).activate()
    if verify_tolerance:
        check_against_module(runner, module, verify_tolerance, "litert", "the lowered program")
    return runner

