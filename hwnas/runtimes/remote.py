"""A remote device (a phone, a board): the model is timed by a command that runs it there.

The runner writes the model in the format the device's tool needs (`MODEL_FORMATS`: ONNX bytes,
an OpenVINO IR), runs an optional `setup` command once per model (e.g. `adb push {model}
/data/local/tmp/`), then, for every timed call, the `command` template (e.g. `adb shell
/data/local/tmp/benchmark_model --graph=/data/local/tmp/{name}`, or `ssh board python3
bench.py {model}`), and reads the time from what it prints: the last match of `pattern`'s first
group, in `unit` (ms, us or s). The stated convention without a pattern: the last number directly
followed by `ms` (`1.23 ms`, `1.23ms`). A call's time is the device's figure, not the round trip.

Placeholders: `{model}` the model file's local path (for an IR, its .xml; the .bin lies beside
it), `{name}` its file name, `{dir}` its folder, `{shape}` the input shape as `1,3,224,224`,
`{batch}`, `{resolution}`. Paths are shell-quoted; commands run through the shell (`sh -c`), so
`&&` and pipes work. A command that fails, times out or prints no time raises BackendError naming
the command and its last line of output.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import BackendError, ExportError
from .base import Runner
from .memory import MemoryInfo

#: the stated convention: the last number directly followed by "ms"
DEFAULT_PATTERN = r"(?<![\w.])([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*ms\b"
UNITS = {"ms": 1.0, "us": 1e-3, "s": 1e3}
PLACEHOLDERS = ("model", "name", "dir", "shape", "batch", "resolution")


def _write_onnx(module, example, folder: Path, exporter: str) -> Path:
    from .onnx_model import export_onnx

    path = folder / "model.onnx"
    path.write_bytes(export_onnx(module, example, exporter).SerializeToString())
    return path


def _write_openvino(module, example, folder: Path, exporter: str) -> Path:
    from .openvino import convert, import_openvino

    path = folder / "model.xml"
    import_openvino().save_model(convert(module, example, exporter=exporter), str(path), compress_to_fp16=False)
    return path


#: model format -> writer(module, example input, folder, ONNX exporter) -> the file `{model}` names
MODEL_FORMATS: dict[str, Callable[..., Path]] = {"onnx": _write_onnx, "openvino": _write_openvino}


def check_template(template: str, what: str) -> str:
    """Refuse a template with an unknown `{placeholder}` (or unbalanced braces) before any work."""
    try:
        template.format(**{k: "x" for k in PLACEHOLDERS})
    except (KeyError, IndexError, ValueError) as exc:
        raise BackendError(f"remote {what} template {template!r} is malformed ({type(exc).__name__}: {exc}); "
                           f"its placeholders: {', '.join('{' + k + '}' for k in PLACEHOLDERS)} (double other braces)") from None
    return template


@dataclass(frozen=True)
class RemoteSettings:
    """How the remote device is reached and read."""

    command: str
    setup: str | None = None
    model_format: str = "onnx"
    pattern: str | None = None
    unit: str = "ms"
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if not self.command:
            raise BackendError("the remote backend needs --remote-command TEMPLATE (e.g. \"adb shell ... {name}\")")
        check_template(self.command, "command")
        if self.setup:
            check_template(self.setup, "setup")
        if self.model_format not in MODEL_FORMATS:
            raise BackendError(f"unknown remote model format {self.model_format!r}; choose one of: {', '.join(MODEL_FORMATS)}")
        if self.unit not in UNITS:
            raise BackendError(f"unknown time unit {self.unit!r}; choose one of: {', '.join(UNITS)}")
        try:
            compiled = re.compile(self.pattern or DEFAULT_PATTERN)
        except re.error as exc:
            raise BackendError(f"--time-pattern {self.pattern!r} is not a regular expression ({exc})") from None
        if compiled.groups < 1:
            raise BackendError(f"--time-pattern {self.pattern!r} needs a group around the number, e.g. 'avg ([0-9.]+)'")


def run_command(command: str, timeout_s: float) -> str:
    """Run `command` through the shell; its stdout and stderr, or BackendError in one line."""
    try:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BackendError(f"remote command timed out after {timeout_s:g} s: {command}") from None
    output = (done.stdout or "") + (done.stderr or "")
    if done.returncode != 0:
        last = next((line for line in reversed(output.strip().splitlines()) if line.strip()), "no output")
        raise BackendError(f"remote command exited {done.returncode}: {command}: {last[:300]}")
    return output


def parse_time(output: str, pattern: str | None, unit: str, command: str) -> float:
    """The last match of `pattern` (its first group) in `output`, in milliseconds."""
    matches = re.findall(pattern or DEFAULT_PATTERN, output, flags=re.MULTILINE)
    if not matches:
        last = next((line for line in reversed(output.strip().splitlines()) if line.strip()), "no output")
        want = f"a match of {pattern!r}" if pattern else "a number followed by 'ms'"
        raise BackendError(f"remote command printed no time ({want}): {command}: last line {last[:200]!r}; "
                           "set --time-pattern to the regular expression of its time, the number in a group")
    value = matches[-1][0] if isinstance(matches[-1], tuple) else matches[-1]
    try:
        return float(value) * UNITS[unit]
    except ValueError:
        raise BackendError(f"remote command's time {value!r} is not a number (pattern {pattern!r})") from None


class RemoteRunner(Runner):
    """A model file timed by a command: `time_call()` runs the command once and returns the time it
    printed, in ms. The file lives in a temporary folder until `deactivate()`."""

    def __init__(self, model_path: Path, settings: RemoteSettings, input_shape, folder=None,
                 memory: MemoryInfo | None = None):
        self.path = Path(model_path)
        self.settings = settings
        self.input_shape = tuple(input_shape)
        self._folder = folder
        self._memory = memory
        shape = self.input_shape
        self.values = {"model": shlex.quote(str(self.path)), "name": shlex.quote(self.path.name),
                       "dir": shlex.quote(str(self.path.parent)), "shape": ",".join(map(str, shape)),
                       "batch": str(shape[0]), "resolution": str(shape[-1])}
        self.command = settings.command.format(**self.values)

    def activate(self) -> "RemoteRunner":
        if self.settings.setup:
            run_command(self.settings.setup.format(**self.values), self.settings.timeout_s)
        return self

    def time_call(self) -> float:
        output = run_command(self.command, self.settings.timeout_s)
        return parse_time(output, self.settings.pattern, self.settings.unit, self.command)

    def memory(self) -> MemoryInfo:
        if self._memory is not None:
            return self._memory
        size = sum(p.stat().st_size for p in self.path.parent.iterdir() if p.is_file())
        return MemoryInfo(size, int(np.prod(self.input_shape)) * 4, 0, None, "unknown")

    def deactivate(self) -> None:
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


def remote_runner(model, input_shape, *, command: str, setup: str | None = None, model_format: str = "onnx",
                  pattern: str | None = None, unit: str = "ms", timeout_s: float = 120.0,
                  exporter: str = "torchscript") -> RemoteRunner:
    """The `remote` runtime's runner (active): `model` is a torch module, written in `model_format`
    (ONNX by `exporter`) to a temporary folder, or the path of a model file already in that format
    (an exported model), used as it is."""
    settings = RemoteSettings(command, setup, model_format, pattern, unit, timeout_s)
    if isinstance(model, (str, os.PathLike)):
        return RemoteRunner(Path(model), settings, input_shape).activate()
    import torch

    from .memory import estimate_on_cpu
    from .torch_eager import ThreadScope

    folder = tempfile.TemporaryDirectory(prefix="hwnas-remote-")
    try:
        with ThreadScope(1):
            module = model.eval()
            x = torch.randn(input_shape)
            _, memory = estimate_on_cpu(module, x)
            path = MODEL_FORMATS[model_format](module, x, Path(folder.name), exporter)
        return RemoteRunner(path, settings, input_shape, folder, memory).activate()
    except ExportError as exc:
        folder.cleanup()
        raise BackendError(f"remote: could not write the {model_format} model: {exc}") from None
    except BaseException:
        folder.cleanup()
        raise
