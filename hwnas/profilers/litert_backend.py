"""LiteRT backend `litert`: each op (or whole network) converted to its own `.tflite` model with
litert-torch and timed end to end in the ai-edge-litert interpreter (its XNNPACK delegate),
single-threaded by default.

The Python interpreter reports no per-op times, so a space's table is built as the other
backends build theirs: every op converted and timed on its own (a conversion takes seconds).
Each converted op is checked against the torch module's output before it is timed. The
fingerprint records the interpreter's and the converter's versions and the options (`runtime`).
"""

from __future__ import annotations

from torch import nn

from ..runtimes import load_runner
from ..runtimes.fingerprint import device_fingerprint
from ..runtimes.litert import litert_facts, litert_missing
from ..runtimes.torch_eager import check_clock, check_threads
from .base import Profiler, Runner
from .statistics import StatsConfig


class LiteRTProfiler(Profiler):
    """LiteRT (TensorFlow Lite) interpreter, float32, models converted by litert-torch, end to end."""

    name = "litert"
    libraries = ("ai-edge-litert", "litert-torch", "torch", "timm")
    verify_tolerance = 1e-3

    def __init__(self, threads: int = 1, clock: str | None = None, stats: StatsConfig | None = None):
        super().__init__(stats)
        self.threads = check_threads(threads)
        self.clock = check_clock(clock, self.threads)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return litert_missing()

    def options(self) -> dict:
        return {"threads": self.threads, "precision": "fp32", "clock": self.clock}

    def fingerprint(self) -> dict:
        return {**device_fingerprint(self.threads, self.libraries), "runtime": litert_facts(self.options())}

    def prepare(self, module: nn.Module, input_shape) -> Runner:
        """The module converted to .tflite and checked against torch, in a LiteRT interpreter."""
        return load_runner(self.name, module, input_shape, threads=self.threads, clock=self.clock,
                           verify_tolerance=self.verify_tolerance)

    def prepare_program(self, tflite: bytes, input_shape) -> Runner:
        """A runner of an existing `.tflite` model (the exported model) as it is, with this backend's settings."""
        return load_runner(self.name, bytes(tflite), input_shape, threads=self.threads, clock=self.clock)
