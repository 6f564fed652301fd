"""Latency of a task model: the whole detector or segmenter exported to ONNX and timed on ONNX
Runtime (CPU, 1 thread by default), its backbone timed the same way, the head's cost being the
difference; and, given a LUT, the backbone's prediction with the head's measured cost beside it.

Export and timing reuse the profilers: `ort_backend.export_onnx` (the exporter the LUT's ops go
through), `OrtProfiler.session` (threads, graph optimisation, provider check) and
`Profiler.measure_runner` (the adaptive repeat loop). The only new piece is a Runner whose
outputs may change size from call to call (a detector's box count), so it calls `session.run`
rather than binding a fixed output buffer.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..arch import Arch
from ..latency_tables.loading import space_for_table
from ..latency_tables.predictor import LatencyPredictor
from ..latency_tables.table import LatencyTable
from ..profilers import StatsConfig, get_profiler
from ..profilers.base import Runner
from ..profilers.memory import MemoryInfo, param_bytes
from ..profilers.ort_backend import OrtProfiler, export_onnx
from .backbone import BackboneSource, arch_source
from .export import TaskOutput


class SessionRunner(Runner):
    """A module exported to ONNX, run with `session.run` on one fixed input."""

    def __init__(self, profiler: OrtProfiler, module: nn.Module, image: torch.Tensor):
        self.path = profiler.new_path()
        export_onnx(module.eval(), image, self.path, profiler.exporter)
        self.session = profiler.session(self.path)
        self.feeds = {self.session.get_inputs()[0].name: image.numpy()}
        self._params = param_bytes(module)
        self._in_bytes = image.numel() * 4

    def time_call(self) -> float:
        start = time.perf_counter_ns()
        self._outputs = self.session.run(None, self.feeds)
        return (time.perf_counter_ns() - start) / 1e6

    def memory(self) -> MemoryInfo:
        out_bytes = sum(int(np.asarray(o).nbytes) for o in getattr(self, "_outputs", []))
        return MemoryInfo(self._params, self._in_bytes, out_bytes, None, "unknown")

    def close(self) -> None:
        self.session = None
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class TaskLatency:
    """Measured (p50, ms) whole model and backbone, the head as their difference, and the
    backbone predicted from a LUT where one was given."""

    backend: str
    threads: int
    resolution: int
    total_ms: float
    backbone_ms: float
    head_ms: float
    predicted_backbone_ms: float | None = None
    predicted_total_ms: float | None = None
    lut: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _p50(profiler: OrtProfiler, module: nn.Module, image: torch.Tensor) -> float:
    return float(profiler.measure_runner(SessionRunner(profiler, module, image)).p50_ms)


def measure_task_latency(model: nn.Module, image: torch.Tensor, task: str, backbone: nn.Module,
                         threads: int = 1, stats: StatsConfig | None = None) -> tuple[float, float]:
    """(whole model p50 ms, backbone p50 ms) on ONNX Runtime CPU for one image [1, 3, R, R]."""
    with torch.no_grad(), get_profiler("ort-cpu", threads=threads, stats=stats) as profiler:
        total = _p50(profiler, TaskOutput(model.eval(), task), image)
        body = _p50(profiler, backbone.eval(), image)
    return total, body


def lut_backbone_ms(arch: Arch, lut: str, resolution: int) -> float:
    """The LUT's calibrated prediction of the architecture minus its classifier head's cost: stem and
    blocks, the part a task model keeps."""
    table = LatencyTable.load(lut)
    space = space_for_table(table, arch.space, resolution)
    predictor = LatencyPredictor(table, space)
    head_op = space.ops(arch.arch_def(space))[-1]
    return predictor.latency_ms(arch) - predictor.op_cost_ms(head_op)


def task_latency(model: nn.Module, backbone: nn.Module, task: str, resolution: int, arch: Arch | None = None,
                 lut: str | None = None, image: torch.Tensor | None = None, threads: int = 1,
                 stats: StatsConfig | None = None) -> TaskLatency:
    """Measure the task model and its backbone; add the LUT's backbone prediction when `lut` is given."""
    if image is None:
        image = torch.rand(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    total, body = measure_task_latency(model, image, task, backbone, threads, stats)
    head = total - body
    predicted = lut_backbone_ms(arch, lut, resolution) if (lut and arch is not None) else None
    return TaskLatency("ort-cpu", threads, resolution, total, body, head, predicted,
                       None if predicted is None else predicted + head, lut)


def task_head_cost_ms(arch: Arch, head: str, resolution: int, num_classes: int = 2, threads: int = 1,
                      stats: StatsConfig | None = None, source: BackboneSource | None = None) -> float:
    """Measured cost (ms, ONNX Runtime CPU) of `head` on `arch`'s backbone: whole task model minus
    backbone. A search adds it to every backbone prediction to budget the whole task model (the
    head's cost depends a little on the backbone's widths; measure it on a typical architecture)."""
    from .heads import build_task_model, head_task

    task = head_task(head)
    torch.manual_seed(0)
    source = source or arch_source(arch, resolution=resolution)
    model = build_task_model(source, head, num_classes, resolution)
    result = task_latency(model, backbone_of(model), task, resolution, threads=threads, stats=stats)
    return result.head_ms


def backbone_of(model: nn.Module) -> nn.Module:
    """The FeatureBackbone inside a task model (the part the LUT predicts)."""
    from .backbone import FeatureBackbone

    for module in model.modules():
        if isinstance(module, FeatureBackbone):
            return module
    raise ValueError("the model holds no FeatureBackbone")
