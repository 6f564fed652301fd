"""Eager PyTorch runtimes, `torch-cpu` and `torch-cuda`: run a module under `torch.inference_mode()`.

CPU calls are timed with the chosen clock (`CLOCKS`) around the forward call alone. CUDA calls
are timed with CUDA events recorded around the call on the current stream, then synchronised
(the host clock would measure the launch, not the kernels). The thread count is fixed for the
runner's life and restored when it is closed; on the CPU denormals are flushed to zero
(see hwnas.profilers.torch_backend for why).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ..errors import BackendError
from .base import Runner
from .memory import MemoryInfo, cuda_peak_bytes, estimate_on_cpu, tensor_bytes

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
    """An eval-mode module on the CPU with a fixed thread count, denormals flushed; its memory
    estimated once (hooks) at construction."""

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


class TorchCUDARunner(Runner):
    """An eval-mode module on a CUDA device, in `dtype`, timed by CUDA events."""

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

    def infer(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.cuda.device(self.device):
            x = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.x.dtype)
            return self.module(x).float().cpu().numpy()

    def memory(self) -> MemoryInfo:
        peak = cuda_peak_bytes(self._call, self.device, self.input_bytes)
        return MemoryInfo(self.param_bytes, self.input_bytes, self.output_bytes, peak, "cuda:max_memory_allocated")

    def deactivate(self) -> None:
        del self.module, self.x
        self._threads.restore()


def torch_cpu_runner(module: nn.Module, input_shape, *, threads: int = 1, channels_last: bool = False,
                     flush_denormal: bool = True, clock: str = "wall") -> TorchCPURunner:
    """The `torch-cpu` runtime's runner of `module` for inputs of `input_shape`."""
    return TorchCPURunner(module, input_shape, threads, channels_last, flush_denormal, clock)


def torch_cuda_runner(module: nn.Module, input_shape, *, device: int = 0, precision: str = "float32",
                      channels_last: bool = False, threads: int = 1) -> TorchCUDARunner:
    """The `torch-cuda` runtime's runner of `module` (precision: float32, float16 or bfloat16)."""
    dtype = DTYPES[PRECISION_ALIASES.get(precision, precision)]
    return TorchCUDARunner(module, input_shape, torch.device("cuda", device), dtype, channels_last, threads)
