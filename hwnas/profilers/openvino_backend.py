"""OpenVINO backend: `openvino` (the CPU plugin).

Per-op tables time each op module converted (`openvino.convert_model`) and compiled on its own,
as the other backends do, checked against the torch module before it is timed; whole networks
(calibrate, validate, the search's on-device check, `export --lut`) are converted and compiled
whole, so OpenVINO's fusions across ops are in their times. The per-layer counters of
`get_profiling_info()` (PERF_COUNT is on) give the breakdown of an end-to-end run
(hwnas.runtimes.openvino.OpenVinoRunner.layer_times, written to the export report).

Compiled with INFERENCE_NUM_THREADS 1 by default, one stream, the LATENCY hint, and
INFERENCE_PRECISION_HINT f32 (`--precision bf16|f16` to measure those: on CPUs with AMX the
plugin's default is bf16). Modules are converted by OpenVINO's PyTorch frontend, or with
`--exporter torchscript|dynamo` from their ONNX graph (2-4x faster for whole networks); the
table records which (`converter`), and `export --lut` converts the same way. The runtime's build string, the plugin's name of the CPU, its
capabilities and the compile properties go into the table's device fingerprint.
"""

from __future__ import annotations

import importlib.util

from torch import nn

from ..errors import BackendError
from ..runtimes import load_runner
from ..runtimes.onnx_model import check_exporter
from ..runtimes.fingerprint import device_fingerprint, openvino_runtime
from ..runtimes.openvino import INSTALL_HINT, OpenVinoSettings, check_precision, converter_name
from ..runtimes.torch_eager import check_clock, check_threads
from .base import Profiler, Runner
from .statistics import StatsConfig

__all__ = ["OpenVinoProfiler"]


class OpenVinoProfiler(Profiler):
    """OpenVINO on the CPU: convert_model, f32 precision hint, fixed inference threads, per-layer counters."""

    name = "openvino"
    libraries = ("openvino", "torch", "timm")

    def __init__(self, threads: int = 1, precision: str = "f32", clock: str | None = None, exporter: str | None = None,
                 stats: StatsConfig | None = None):
        super().__init__(stats)
        if exporter is not None:
            check_exporter(exporter, BackendError)
        self.exporter = exporter
        self.threads = check_threads(threads)
        self.precision = check_precision(precision)
        self.clock = check_clock(clock, self.threads)
        self.settings = OpenVinoSettings(threads=self.threads, precision=self.precision)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if importlib.util.find_spec("openvino") is None:
            return f"openvino is not installed ({INSTALL_HINT})"
        import openvino as ov

        if "CPU" not in ov.Core().available_devices:
            return f"OpenVINO {ov.get_version()} finds no CPU device"
        return None

    def options(self) -> dict:
        return {"threads": self.threads, "precision": self.precision, "clock": self.clock, "device": "CPU",
                "num_streams": 1, "performance_hint": "LATENCY", "exporter": self.exporter,
                "converter": converter_name(self.exporter)}

    def fingerprint(self) -> dict:
        return device_fingerprint(self.threads, self.libraries, runtime=openvino_runtime(self.settings.config()))

    def runtime_options(self) -> dict:
        """This profiler's settings as keywords of the OpenVINO runtime (hwnas.runtimes.openvino.openvino_runner)."""
        return {"threads": self.threads, "precision": self.precision, "clock": self.clock, "exporter": self.exporter}

    def prepare(self, module: nn.Module, input_shape) -> Runner:
        """The module converted, checked against torch and compiled; or an openvino.Model / IR file as it is."""
        return load_runner(self.name, module, input_shape, **self.runtime_options())
