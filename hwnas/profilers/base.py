"""The profiler interface: measure a module at an input shape on one backend -> Measurement.

A backend implements `prepare(module, input_shape) -> Runner` (build a session or engine, make
inputs) and the Runner's `time_call()` (one synchronous call, its duration in ms) and
`memory()`; Runner is hwnas.runtimes.base's, the protocol export's parity checks use too, and
backends load their runners from the runtime registry (hwnas.runtimes). `Profiler.measure` is the same for every backend: prepare, the adaptive repeat
loop of `hwnas.profilers.statistics`, memory, release.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

from torch import nn

from .table import Measurement
from ..runtimes.base import Runner
from .statistics import StatsConfig, measure_adaptive


class Profiler(ABC):
    """One inference backend. Use as a context manager (`with get_profiler(...) as p:`).

    `options()` returns everything besides the device that changes latency (threads, graph
    optimisation level, precision, layout...); it is stored with every table the profiler fills,
    and tables with different options never merge.
    """

    name: str = ""
    #: distributions whose versions go into the fingerprint
    libraries: tuple[str, ...] = ("torch", "timm")

    def __init__(self, stats: StatsConfig | None = None):
        self.stats = stats or StatsConfig()

    def __enter__(self) -> "Profiler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release backend resources."""

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot run on this machine, or None when it can."""
        return None

    @property
    def dtype(self) -> str:
        """Input dtype of the measured ops (goes into op keys and the table)."""
        return "float32"

    @abstractmethod
    def options(self) -> dict:
        """Backend options that a table built with this profiler is only valid under."""

    @abstractmethod
    def fingerprint(self) -> dict:
        """Device fingerprint: CPU, GPU, driver and library versions."""

    @abstractmethod
    def prepare(self, module: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        """Put `module` (switched to eval mode) on the backend for inputs of `input_shape`."""

    def measure(self, module: nn.Module, input_shape: tuple[int, ...]) -> Measurement:
        """Latency and memory of `module` (in eval mode) on an input of `input_shape`."""
        return self.measure_runner(self.prepare(module, input_shape))

    def measure_runner(self, runner: Runner) -> Measurement:
        """Time a prepared runner with the adaptive statistics, then close it."""
        with runner:
            stats = measure_adaptive(runner.time_call, self.stats)
            memory = runner.memory()
        rel_ci = round(stats.rel_ci, 5) if math.isfinite(stats.rel_ci) else None
        return Measurement(**stats.summary(), **memory.fields(), rel_ci=rel_ci, rounds_dropped=stats.rounds_dropped)

    def overhead_ms(self) -> float | None:
        """Per-call overhead of the backend: median latency of an identity op on a tiny input."""
        with self.prepare(nn.Identity(), (1, 8, 8, 8)) as runner:
            return measure_adaptive(runner.time_call, self.stats).summary()["p50_ms"]
