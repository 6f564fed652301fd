"""Eager PyTorch backends: `torch-cpu` and `torch-cuda`, under `torch.inference_mode()`.

The runners are the runtime layer's (hwnas.runtimes.torch_eager): CPU calls are timed with the
chosen clock around the forward call alone, CUDA calls with CUDA events. The thread count is
fixed (default 1) for the duration of each measurement and restored afterwards.

On the CPU, denormal floats are flushed to zero while measuring (`flush_denormal`, default on).
Randomly initialised blocks fed random inputs produce denormals depending on the seed, and
eager PyTorch's kernels then slow down by up to 4x: the same fbnet block measured 0.61 ms with
one seed and 2.37 ms with another, and a table of such entries predicts nothing. (ONNX Runtime's
timings of the same blocks did not depend on the seed.) Deploy with `torch.set_flush_denormal(True)`
to get the latency the table measured.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import BackendError
from ..runtimes import load_runner
from ..runtimes.torch_eager import (CLOCKS, DTYPES, PRECISION_ALIASES, FlushDenormalScope, ThreadScope, check_clock,
                                    check_threads)
from .base import Profiler, Runner
from ..runtimes.fingerprint import device_fingerprint
from .statistics import StatsConfig

__all__ = ["CLOCKS", "FlushDenormalScope", "ThreadScope", "TorchCPUProfiler", "TorchCUDAProfiler", "check_clock",
           "check_threads"]


class TorchCPUProfiler(Profiler):
    """Eager PyTorch on the CPU, float32, a fixed number of intra-op threads, denormals flushed."""

    name = "torch-cpu"

    def __init__(self, threads: int = 1, channels_last: bool = False, flush_denormal: bool = True,
                 clock: str | None = None, stats: StatsConfig | None = None):
        super().__init__(stats)
        self.threads = check_threads(threads)
        self.channels_last = bool(channels_last)
        self.flush_denormal = bool(flush_denormal)
        self.clock = check_clock(clock, self.threads)

    def options(self) -> dict:
        return {"threads": self.threads, "channels_last": self.channels_last, "flush_denormal": self.flush_denormal,
                "mode": "eager+inference_mode", "clock": self.clock}

    def fingerprint(self) -> dict:
        return device_fingerprint(self.threads, self.libraries)

    def prepare(self, module: nn.Module, input_shape) -> Runner:
        return load_runner(self.name, module, input_shape, threads=self.threads, channels_last=self.channels_last,
                           flush_denormal=self.flush_denormal, clock=self.clock)


class TorchCUDAProfiler(Profiler):
    """Eager PyTorch on a CUDA GPU: CUDA-event timing, optional fp16/bf16 and channels_last."""

    name = "torch-cuda"

    def __init__(self, threads: int = 1, precision: str = "fp32", channels_last: bool = False,
                 device: int = 0, cudnn_benchmark: bool = True, stats: StatsConfig | None = None):
        super().__init__(stats)
        self.threads = check_threads(threads)
        self._dtype = PRECISION_ALIASES.get(precision, precision)
        if self._dtype not in DTYPES:
            raise BackendError(f"torch-cuda precision must be fp32, fp16 or bf16, not {precision!r}")
        if not torch.cuda.is_available():
            raise BackendError("torch-cuda needs a CUDA device; torch.cuda.is_available() is False here")
        if not 0 <= device < torch.cuda.device_count():
            raise BackendError(f"CUDA device {device} does not exist; this machine has {torch.cuda.device_count()}")
        self.device_index = device
        self.channels_last = bool(channels_last)
        self.cudnn_benchmark = bool(cudnn_benchmark)
        self._saved = (torch.backends.cudnn.benchmark,)
        torch.backends.cudnn.benchmark = self.cudnn_benchmark

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None if torch.cuda.is_available() else "no CUDA device (torch.cuda.is_available() is False)"

    @property
    def dtype(self) -> str:
        return self._dtype

    def options(self) -> dict:
        return {
            "threads": self.threads,
            "precision": self._dtype,
            "channels_last": self.channels_last,
            "cudnn_benchmark": self.cudnn_benchmark,
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "device_index": self.device_index,
            "mode": "eager+inference_mode",
        }

    def fingerprint(self) -> dict:
        return device_fingerprint(self.threads, self.libraries, gpu_index=self.device_index)

    def prepare(self, module: nn.Module, input_shape) -> Runner:
        return load_runner(self.name, module, input_shape, device=self.device_index, precision=self._dtype,
                           channels_last=self.channels_last, threads=self.threads)

    def close(self) -> None:
        (torch.backends.cudnn.benchmark,) = self._saved
