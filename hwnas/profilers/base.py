"""The profiler interface: measure a module at an input shape on one backend -> Measurement."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import nn

from ..latency_tables.table import Measurement


class Profiler(ABC):
    """One inference backend. Use as a context manager (`with get_profiler(...) as p:`).

    `options()` returns everything besides the device that changes latency (threads, graph
    optimisation level, precision, layout...); it is stored with every table the profiler fills,
    and tables with different options never merge.
    """

    name: str = ""

    def __enter__(self) -> "Profiler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release backend resources."""

    @abstractmethod
    def options(self) -> dict:
        """Backend options that a table built with this profiler is only valid under."""

    @abstractmethod
    def measure(self, module: nn.Module, input_shape: tuple[int, ...]) -> Measurement:
        """Latency and memory of `module` (in eval mode) on an input of `input_shape`."""

    @abstractmethod
    def fingerprint(self) -> dict:
        """Device fingerprint: CPU, GPU, driver and library versions."""

    def overhead_ms(self) -> float | None:
        """Per-call overhead of the backend (an empty / identity graph), or None if not defined."""
        return None
