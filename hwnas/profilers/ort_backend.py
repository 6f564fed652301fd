"""ONNX Runtime backends: `ort-cpu`, `ort-cuda`, `ort-trt` (CPU, CUDA, TensorRT providers).

Each op is exported to its own ONNX graph (in memory) and run in its own session with
fixed intra-op threads, one inter-op thread and sequential execution. The graph optimisation
level is an option recorded with the table: it changes CPU latency up to 2x, so a table is
only valid at the level it was built with.

Exporter: `torchscript` (the default) is torch's legacy TorchScript-based exporter
(`dynamo=False`, opset 17). It exports one of our blocks in 10-70 ms, against about 2 s for the
torch.export-based `dynamo` exporter (opset 18), which torch 2.9+ makes the default; profiling
fbnet's 98 ops would spend over 3 minutes on export alone. The legacy exporter is deprecated
but present in torch 2.14; `--exporter dynamo` switches. Each exported graph is checked
against the torch module's output before it is timed.

Sessions, the export and the IOBinding timing are the runtime layer's (hwnas.runtimes.ort,
hwnas.runtimes.onnx_model): these profilers turn their options into the runtime's settings.
ONNX Runtime falls back to the CPU silently (a log line) when a GPU provider fails to load:
`hwnas.runtimes.ort.check_providers` refuses to time a session whose first provider is not the requested one.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from ..errors import BackendError
from .table import Measurement
from ..runtimes import load_runner
from ..runtimes.onnx_model import EXPORTERS, check_exporter, identity_graph
from ..runtimes.ort import OPT_LEVELS, import_ort
from ..runtimes.torch_eager import check_clock, check_threads
from .base import Profiler, Runner
from ..runtimes.fingerprint import device_fingerprint
from .statistics import StatsConfig

__all__ = ["OrtCPUProfiler", "OrtCUDAProfiler", "OrtProfiler", "OrtTensorRTProfiler"]


class OrtProfiler(Profiler):
    """Shared code of the ONNX Runtime backends; subclasses name the provider."""

    provider = "CPUExecutionProvider"
    libraries = ("onnxruntime", "onnx", "torch", "timm")
    verify_tolerance: float | None = 1e-3
    clock = "wall"  # GPU providers: the host clock around a synchronised call

    def __init__(self, threads: int = 1, opt_level: str = "all", exporter: str = "torchscript",
                 stats: StatsConfig | None = None):
        super().__init__(stats)
        self.threads = check_threads(threads)
        if opt_level not in OPT_LEVELS:
            raise BackendError(f"unknown graph optimisation level {opt_level!r}; choose one of: {', '.join(OPT_LEVELS)}")
        check_exporter(exporter, BackendError)
        self.opt_level = opt_level
        self.exporter = exporter
        self.ort = import_ort()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed"
        ort = import_ort()
        if cls.provider not in ort.get_available_providers():
            return (f"onnxruntime {ort.__version__} has no {cls.provider} (a CPU-only build; install "
                    "onnxruntime-gpu, see requirements-gpu.txt)")
        if cls.provider != "CPUExecutionProvider" and not torch.cuda.is_available():
            return "no CUDA device"
        return None

    # --- what subclasses adjust -------------------------------------------------------
    @property
    def io_device(self) -> tuple[str, int]:
        return ("cpu", 0)

    def providers(self) -> list:
        return ["CPUExecutionProvider"]

    def provider_options(self) -> dict:
        return {}

    # --- common -----------------------------------------------------------------------
    def options(self) -> dict:
        return {
            "threads": self.threads,
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            "graph_optimization_level": self.opt_level,
            "exporter": self.exporter,
            "opset": EXPORTERS[self.exporter].profile_opset,
            "provider": self.provider,
            **self.provider_options(),
        }

    def fingerprint(self) -> dict:
        gpu = self.io_device[1] if self.io_device[0] != "cpu" else None
        return device_fingerprint(self.threads, self.libraries, gpu_index=gpu)

    def runtime_options(self) -> dict:
        """This profiler's settings as keywords of the ONNX Runtime runtime (hwnas.runtimes.ort.ort_runner)."""
        return {"threads": self.threads, "opt_level": self.opt_level, "providers": tuple(self.providers()),
                "required": self.provider, "io_device": self.io_device, "name": self.name,
                "exporter": self.exporter, "verify_tolerance": self.verify_tolerance, "clock": self.clock}

    def prepare(self, module: nn.Module, input_shape) -> Runner:
        """The module exported to ONNX and checked against torch, in a session of this backend."""
        return load_runner(self.name, module, input_shape, **self.runtime_options())

    def measure_onnx(self, model, input_shape) -> Measurement:
        """Latency of an existing ONNX model (bytes or a file, e.g. the exported model) with this backend's settings."""
        return self.measure_runner(self.prepare_onnx(model, input_shape))

    def prepare_onnx(self, model, input_shape) -> Runner:
        """A runner of an existing ONNX model (bytes or a file) as it is, with this backend's settings."""
        data = model if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
        return load_runner(self.name, bytes(data), input_shape, **self.runtime_options())

    def overhead_ms(self) -> float | None:
        from .statistics import measure_adaptive

        shape = (1, 8, 8, 8)
        with self.prepare_onnx(identity_graph(shape), shape) as runner:
            return measure_adaptive(runner.time_call, self.stats).summary()["p50_ms"]


class OrtCPUProfiler(OrtProfiler):
    """ONNX Runtime, CPU execution provider."""

    name = "ort-cpu"

    def __init__(self, threads: int = 1, opt_level: str = "all", exporter: str = "torchscript",
                 clock: str | None = None, stats: StatsConfig | None = None):
        super().__init__(threads, opt_level, exporter, stats)
        self.clock = check_clock(clock, self.threads)

    def options(self) -> dict:
        return {**super().options(), "clock": self.clock}


class OrtCUDAProfiler(OrtProfiler):
    """ONNX Runtime, CUDA execution provider (float32 graphs), IOBinding on the GPU."""

    name = "ort-cuda"
    provider = "CUDAExecutionProvider"

    def __init__(self, threads: int = 1, opt_level: str = "all", exporter: str = "torchscript", device: int = 0,
                 stats: StatsConfig | None = None):
        super().__init__(threads, opt_level, exporter, stats)
        self.device_index = int(device)

    @property
    def io_device(self) -> tuple[str, int]:
        return ("cuda", self.device_index)

    def provider_options(self) -> dict:
        return {"device_id": self.device_index, "cudnn_conv_algo_search": "EXHAUSTIVE"}

    def providers(self) -> list:
        return [(self.provider, {k: str(v) for k, v in self.provider_options().items()}), "CPUExecutionProvider"]


class OrtTensorRTProfiler(OrtCUDAProfiler):
    """ONNX Runtime, TensorRT execution provider (CUDA, then CPU, for nodes TensorRT rejects)."""

    name = "ort-trt"
    provider = "TensorrtExecutionProvider"
    libraries = ("onnxruntime", "onnx", "tensorrt", "torch", "timm")

    def __init__(self, threads: int = 1, opt_level: str = "all", exporter: str = "torchscript", device: int = 0,
                 precision: str = "fp32", stats: StatsConfig | None = None):
        super().__init__(threads, opt_level, exporter, device, stats)
        if precision not in ("fp32", "fp16"):
            raise BackendError(f"ort-trt precision must be fp32 or fp16, not {precision!r} (int8 needs a "
                               "calibration table; use the tensorrt backend)")
        self.precision = precision
        if precision == "fp16":
            self.verify_tolerance = 5e-2

    def provider_options(self) -> dict:
        return {
            "device_id": self.device_index,
            "trt_fp16_enable": self.precision == "fp16",
            "trt_engine_cache_enable": False,
            "trt_max_workspace_size": 1 << 30,
        }

    def providers(self) -> list:
        trt_opts = {k: str(v) if not isinstance(v, bool) else ("True" if v else "False")
                    for k, v in self.provider_options().items()}
        cuda_opts = {"device_id": str(self.device_index)}
        return [(self.provider, trt_opts), ("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
