"""Eager PyTorch backends: `torch-cpu` and `torch-cuda`, under `torch.inference_mode()`.

CPU calls are timed with `time.perf_counter_ns` around the forward call alone. CUDA calls are
timed with CUDA events recorded around the call on the current stream, then synchronised
(the host clock would measure the launch, not the kernels). The thread count is fixed
(default 1) for the duration of each measurement and restored afterwards.

On the CPU, denormal floats are flushed to zero while measuring (`flush_denormal`, default on).
Randomly initialised blocks fed random inputs produce denormals depending on the seed, and
eager PyTorch's kernels then slow down by up to 4x: the same fbnet block measured 0.61 ms with
one seed and 2.37 ms with another, and a table of such entries predicts nothing. (ONNX Runtime's
timings of the same blocks did not depend on the seed.) Deploy with `torch.set_flush_denormal(True)`
to get the latency the table measured.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ..errors import BackendError
from .base import Profiler, Runner
from .fingerprint import device_fingerprint
from .memory import MemoryInfo, cuda_peak_bytes, estimate_on_cpu, tensor_bytes
from .statistics import StatsConfig

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PRECISION_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def check_threads(threads: int) -> int:
    if not isinstance(threads, int) or threads < 1:
        raise BackendError(f"threads must be a positive integer, got {threads!r}; use e.g. --threads 1")
    return threads


#: how a CPU call is timed: `thread`, the calling thread's CPU time (single-threaded inference runs in
#: the calling thread, so this is its latency without the time other processes took the core from
#: it); `wall`, the host's monotonic clock (what a call takes now, preemption included)
CLOCKS = {"thread": time.thread_time_ns, "wall": time.perf_counter_ns}


def check_clock(clock: str | None, threads: int) -> str:
    """The CPU clock: `thread` by default with 1 thread; refused with more (it would miss the others)."""
    if clock is None:
        return "thread" if threads == 1 else "wall"
    if clock not in CLOCKS:
        raise BackendError(f"unknown clock {clock!r}; choose one of: {', '.join(CLOCKS)}")
    if clock == "thread" and threads != 1:
        raise BackendError(f"--clock thread times one thread's CPU time (use it with 1 thread), but --threads is "
                           f"{threads}; use --clock wall")
    return clock


class ThreadScope:
    """Set torch's intra-op thread count, restore the previous one on `restore()` / exit.

    Also used around the torch work other backends do (export, memory estimate, output check):
    torch's default of one thread per core crawls on a machine whose cores are busy.
    """

    def __init__(self, threads: int):
        self.threads = threads
        self.previous = torch.get_num_threads()
        torch.set_num_threads(threads)

    def restore(self) -> None:
        torch.set_num_threads(self.previous)

    def __enter__(self) -> "ThreadScope":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


class FlushDenormalScope:
    """Flush denormal floats to zero on the CPU until `restore()`, which turns flushing off again
    (torch's default; torch offers no way to read the current setting)."""

    def __init__(self, enabled: bool):
        self.enabled = bool(enabled) and torch.set_flush_denormal(True)

    def restore(self) -> None:
        if self.enabled:
            torch.set_flush_denormal(False)


class TorchCPURunner(Runner):
    def __init__(self, module: nn.Module, input_shape, threads: int, channels_last: bool, flush_denormal: bool = True,
                 clock: str = "wall"):
        self.clock_ns = CLOCKS[clock]
        self._threads = ThreadScope(threads)
        self._denormals = FlushDenormalScope(flush_denormal)
        self.module = module.eval()
        self.x = torch.randn(input_shape)
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        _, self._memory = estimate_on_cpu(self.module, self.x)

    def time_call(self) -> float:
        with torch.inference_mode():
            start = self.clock_ns()
            self.module(self.x)
            end = self.clock_ns()
        return (end - start) / 1e6

    def infer(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    def memory(self) -> MemoryInfo:
        return self._memory

    def deactivate(self) -> None:
        self._denormals.restore()
        self._threads.restore()


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
        return TorchCPURunner(module, input_shape, self.threads, self.channels_last, self.flush_denormal, self.clock)


class TorchCUDARunner(Runner):
    def __init__(self, module: nn.Module, input_shape, device: torch.device, dtype: torch.dtype,
                 channels_last: bool, threads: int):
        self._threads = ThreadScope(threads)
        self.device = device
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        cpu_module = module.eval()
        _, cpu_memory = estimate_on_cpu(cpu_module, torch.randn(input_shape))
        self.module = cpu_module.to(device=device, dtype=dtype, memory_format=fmt)
        self.x = torch.randn(input_shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
        self.input_bytes = tensor_bytes(input_shape, dtype)
        elem = torch.empty((), dtype=dtype).element_size()
        self.output_bytes = cpu_memory.output_bytes // 4 * elem
        self.param_bytes = cpu_memory.param_bytes // 4 * elem
        self.stream = torch.cuda.current_stream(device)
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def _call(self) -> None:
        with torch.inference_mode(), torch.cuda.device(self.device):
            self.module(self.x)

    def time_call(self) -> float:
        with torch.inference_mode(), torch.cuda.device(self.device):
            self.start.record(self.stream)
            self.module(self.x)
            self.end.record(self.stream)
        self.end.synchronize()
        return float(self.start.elapsed_time(self.end))

    def memory(self) -> MemoryInfo:
        peak = cuda_peak_bytes(self._call, self.device, self.input_bytes)
        return MemoryInfo(self.param_bytes, self.input_bytes, self.output_bytes, peak, "cuda:max_memory_allocated")

    def deactivate(self) -> None:
        del self.module, self.x
        self._threads.restore()


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
        device = torch.device("cuda", self.device_index)
        return TorchCUDARunner(module, input_shape, device, DTYPES[self._dtype], self.channels_last, self.threads)

    def close(self) -> None:
        (torch.backends.cudnn.benchmark,) = self._saved
