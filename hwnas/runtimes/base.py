"""The one runner protocol of hwnas, shared by profiling (timing ops and models) and export (parity).

Every runtime of `hwnas.runtimes` implements it; the profilers time through it.

A runner is a model prepared on one backend (Polygraphy's pattern): `activate()` loads it,
`infer(x)` runs a numpy batch and returns the first output, `deactivate()` releases it; a
runner is its own context manager. For timing, `time_call()` runs one synchronous call on the
input the runner prepared (`timing_input`) and returns its duration in milliseconds: by the host
clock here; runners on asynchronous devices override it (CUDA events, IOBinding). `memory()`
reports parameter, input/output and peak bytes where the backend knows them. `close()` is
`deactivate()` (the name profiling code uses). No torch import: deploy-like code can use it.
"""

from __future__ import annotations

import time

import numpy as np


class Runner:
    """Base of every runner: activate / infer / deactivate, a context manager, and time_call."""

    #: the input `time_call` runs on (set by runners that are timed)
    timing_input: np.ndarray | None = None

    def activate(self) -> "Runner":
        """Load the model; runners ready at construction (the profilers') return themselves."""
        return self

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run a batch and return the first output."""
        raise NotImplementedError(f"{type(self).__name__} only times its prepared input (time_call)")

    def deactivate(self) -> None:
        """Release the session / engine / buffers."""

    def close(self) -> None:
        self.deactivate()

    def time_call(self) -> float:
        """One synchronous call on the prepared input; its duration in milliseconds (host clock)."""
        if self.timing_input is None:
            raise RuntimeError(f"{type(self).__name__} has no timing input; set timing_input first")
        start = time.perf_counter_ns()
        self.infer(self.timing_input)
        return (time.perf_counter_ns() - start) / 1e6

    def memory(self):
        """Parameter, input/output and peak bytes (a hwnas.runtimes.memory.MemoryInfo)."""
        raise NotImplementedError(f"{type(self).__name__} does not report memory")

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()
