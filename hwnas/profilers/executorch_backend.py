"""ExecuTorch backend `executorch`: every op lowered to its own `.pte` program with the XNNPACK
delegate and timed through the ExecuTorch runtime, single-threaded by default.

Per-op timing lowers each op module separately (as the ONNX Runtime backends export each op),
because ETDump names XNNPACK's own operators ("Convolution (NHWC, F32) IGEMM #1"), not the
torch modules they came from: a whole network's ETDump cannot be cut back into our ops. ETDump
(read by executorch.devtools.Inspector) gives a whole network's kernel breakdown instead:
`hwnas.runtimes.executorch.etdump_breakdown`. Each lowered op is checked against the torch
module's output before it is timed. The fingerprint records ExecuTorch's version, the backends
of its build and the options (`runtime`).
"""

from __future__ import annotations

from torch import nn

from ..runtimes import load_runner
from ..runtimes.executorch import executorch_facts, executorch_missing
from ..runtimes.fingerprint import device_fingerprint
from ..runtimes.torch_eager import check_clock, check_threads
from .base import Profiler, Runner
from .statistics import StatsConfig


class ExecuTorchProfiler(Profiler):
    """ExecuTorch with the XNNPACK delegate (float32), a fixed XNNPACK thread pool (default 1)."""

    name = "executorch"
    libraries = ("executorch", "torch", "timm")
    verify_tolerance = 1e-3

    def __init__(self, threads: int = 1, clock: str | None = None, stats: StatsConfig | None = None):
        super().__init__(stats)
        self.threads = check_threads(threads)
        self.clock = check_clock(clock, self.threads)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return executorch_missing()

    def options(self) -> dict:
        return {"threads": self.threads, "delegate": "xnnpack", "precision": "fp32", "clock": self.clock}

    def fingerprint(self) -> dict:
        return {**device_fingerprint(self.threads, self.libraries), "runtime": executorch_facts(self.options())}

    def prepare(self, module: nn.Module, input_shape) -> Runner:
        """The module lowered to XNNPACK and checked against torch, loaded in the ExecuTorch runtime."""
        return load_runner(self.name, module, input_shape, threads=self.threads, clock=self.clock,
                           verify_tolerance=self.verify_tolerance)

    def prepare_program(self, pte: bytes, input_shape) -> Runner:
        """A runner of an existing `.pte` program (the exported model) as it is, with this backend's settings."""
        return load_runner(self.name, bytes(pte), input_shape, threads=self.threads, clock=self.clock)
