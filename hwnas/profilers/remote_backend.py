"""The `remote` backend: ops and networks timed on another device by a command template
(hwnas.runtimes.remote): `adb`, `ssh`, or any command that runs the model there and prints its time.

Every op (and every network of calibrate, validate, the search's on-device check) is written in
`--remote-format` (onnx by the TorchScript exporter by default, or an OpenVINO IR), copied by the
optional `--remote-setup` command, and timed by running `--remote-command` once per timed call; the
time is what the command prints (`--time-pattern`, `--time-unit`). The templates and the format
are the table's options; its device fingerprint names the device (`--device-name`) and holds the
templates, besides this host's facts (the host that reaches the device).

Profile a phone with TFLite's benchmark_model (the model format it needs comes from a converter
registered in hwnas.runtimes.remote.MODEL_FORMATS), or a board over ssh; calibrate and validate
then run on the same device with the same commands, read from the table.
"""

from __future__ import annotations

from torch import nn

from ..errors import BackendError
from ..runtimes import load_runner
from ..runtimes.fingerprint import device_fingerprint
from ..runtimes.onnx_model import check_exporter
from ..runtimes.remote import RemoteSettings
from .base import Profiler, Runner
from .statistics import StatsConfig

__all__ = ["RemoteProfiler"]


class RemoteProfiler(Profiler):
    """A remote device, timed by a command template (adb, ssh, ...) that prints the model's time."""

    name = "remote"
    libraries = ("onnx", "torch", "timm")

    def __init__(self, remote_command: str | None = None, remote_setup: str | None = None,
                 remote_format: str = "onnx", time_pattern: str | None = None, time_unit: str = "ms",
                 device_name: str | None = None, exporter: str = "torchscript", stats: StatsConfig | None = None):
        super().__init__(stats)
        check_exporter(exporter, BackendError)
        self.settings = RemoteSettings(remote_command or "", remote_setup, remote_format, time_pattern, time_unit)
        self.device_name = device_name or "remote"
        self.exporter = exporter

    def options(self) -> dict:
        s = self.settings
        return {"remote_command": s.command, "remote_setup": s.setup, "remote_format": s.model_format,
                "time_pattern": s.pattern, "time_unit": s.unit, "device_name": self.device_name,
                "exporter": self.exporter}

    def fingerprint(self) -> dict:
        s = self.settings
        runtime = {"name": "remote", "command": s.command, "setup": s.setup, "format": s.model_format}
        return device_fingerprint(None, self.libraries, runtime=runtime, name=self.device_name)

    def runtime_options(self) -> dict:
        s = self.settings
        return {"command": s.command, "setup": s.setup, "model_format": s.model_format, "pattern": s.pattern,
                "unit": s.unit, "timeout_s": s.timeout_s, "exporter": self.exporter}

    def prepare(self, module: nn.Module, input_shape) -> Runner:
        """The module written in the remote format; or a model file (an exported one) as it is."""
        return load_runner(self.name, module, input_shape, **self.runtime_options())

    def overhead_ms(self) -> float | None:
        """Not measured: each call is a command on the device; its own overhead is in its figure."""
        return None
