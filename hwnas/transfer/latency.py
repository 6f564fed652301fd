"""Latency of a task model: the whole detector or segmenter exported to ONNX and timed on ONNX
Runtime (CPU, 1 thread by default), its backbone timed the same way, the head's cost being the
difference; and, given a LUT, the backbone's prediction with the head's measured cost beside it.

Export and timing reuse the profilers: `ort_backend.export_onnx` (the exporter the LUT's ops go
through), `OrtProfiler.session` (threads, graph optimisation, provider check) and
`measure_adaptive` (the profilers' repeat loop). The only new piece is a Runner whose
outputs may change size from call to call (a detector's box count), so it calls `session.run`
rather than binding a fixed output buffer.

Clocks: `wall` (the default, what the LUT's profilers record) or `thread`, the CPU time of the
calling thread. With one ONNX Runtime thread the whole graph runs on the caller, so `thread`
counts the work and not the time other processes held the core: on a shared machine it stays
near the quiet wall time while wall time grows with the load.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..arch import Arch
from ..latency_tables.loading import space_for_table
from ..latency_tables.predictor import LatencyPredictor
from ..latency_tables.published import is_published
from ..latency_tables.table import LatencyTable
from ..profilers import StatsConfig, get_profiler
from ..profilers.base import Runner
from ..profilers.memory import MemoryInfo, param_bytes
from ..profilers.ort_backend import OrtProfiler, export_onnx
from ..profilers.statistics import measure_adaptive
from ..profilers.torch_backend import CLOCKS, check_clock
from .backbone import BackboneSource, arch_source
from .export import TaskOutput


class SessionRunner(Runner):
    """A module exported to ONNX, run with `session.run` on one fixed input."""

    def __init__(self, profiler: OrtProfiler, module: nn.Module, image: torch.Tensor, clock: str = "wall"):
        self.clock = CLOCKS[clock]
        self.path = profiler.new_path()
        export_onnx(module.eval(), image, self.path, profiler.exporter)
        self.session = profiler.session(self.path)
        self.feeds = {self.session.get_inputs()[0].name: image.numpy()}
        self._params = param_bytes(module)
        self._in_bytes = image.numel() * 4

    def time_call(self) -> float:
        start = self.clock()
        self._outputs = self.session.run(None, self.feeds)
        return (self.clock() - start) / 1e6

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
    clock: str
    resolution: int
    total_ms: float
    backbone_ms: float
    head_ms: float
    predicted_backbone_ms: float | None = None
    predicted_total_ms: float | None = None
    lut: str | None = None
    predicted_head_ms: float | None = None  # the head's cost on the LUT's device
    derived: str | None = None  # how predicted_head_ms was derived, where the head could not be timed there

    def to_dict(self) -> dict:
        return asdict(self)


def _interleaved_p50(profiler: OrtProfiler, modules: list[nn.Module], image: torch.Tensor, clock: str,
                     rounds: int) -> list[float]:
    """p50 of each module, measured in `rounds` alternating rounds; the lowest round counts (a load
    burst on a shared machine slows one round, not all of them)."""
    runners = [SessionRunner(profiler, module, image, clock) for module in modules]
    try:
        best = [math.inf] * len(runners)
        for _ in range(rounds):
            for i, runner in enumerate(runners):
                best[i] = min(best[i], measure_adaptive(runner.time_call, profiler.stats).summary()["p50_ms"])
        return best
    finally:
        for runner in runners:
            runner.close()


def worst_case(model: nn.Module) -> nn.Module:
    """A timing copy of a detector that processes the most boxes it allows, whatever its weights:
    score thresholds 0, NMS thresholds 1 (NMS runs but suppresses nothing), box regressions and
    class scores zeroed (boxes are the anchors, never degenerate ones that get dropped; no score
    underflows to 0). The RPN then passes
    its full `post_nms_top_n` proposals to the box head and the model returns its full
    `detections_per_img`. Without this an untrained or weak detector looks fast by keeping few
    boxes (a fresh fbnet_c Faster R-CNN kept 8 of 150 proposals)."""
    model = copy.deepcopy(model)
    for part in (getattr(model, "rpn", None), getattr(model, "roi_heads", None), model):
        if part is not None and hasattr(part, "score_thresh"):
            part.score_thresh = 0.0
            part.nms_thresh = 1.0
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(("bbox_pred", "cls_score")) or name.startswith(("head.regression_head",
                                                                              "head.classification_head")):
                for param in module.parameters(recurse=False):
                    param.zero_()
    return model


def measure_task_latency(model: nn.Module, image: torch.Tensor, task: str, backbone: nn.Module,
                         threads: int = 1, stats: StatsConfig | None = None, clock: str = "wall",
                         rounds: int = 3) -> tuple[float, float]:
    """(whole model p50 ms, backbone p50 ms) on ONNX Runtime CPU for one image [1, 3, R, R];
    detectors are timed in their worst case (see `worst_case`)."""
    check_clock(clock, threads)
    if task == "detection":
        model = worst_case(model)
    with torch.no_grad(), get_profiler("ort-cpu", threads=threads, stats=stats) as profiler:
        total, body = _interleaved_p50(profiler, [TaskOutput(model.eval(), task), backbone.eval()], image, clock,
                                       rounds)
    return total, body


def lut_backbone_ms(arch: Arch, lut: str, resolution: int) -> float:
    """The LUT's calibrated prediction of the architecture minus its classifier head's cost: stem and
    blocks, the part a task model keeps."""
    table = LatencyTable.load(lut)
    space = space_for_table(table, arch.space, resolution)
    predictor = LatencyPredictor(table, space)
    head_op = arch.ops(space)[-1]
    return predictor.latency_ms(arch) - predictor.op_cost_ms(head_op)


def head_on_device(head_ms: float, backbone_ms: float, predicted_backbone_ms: float, table: LatencyTable
                   ) -> tuple[float, str | None]:
    """The head's cost on the LUT's device, and how it was derived. A published table's device (a
    phone) cannot time the head from here: its cost is the head measured here scaled by how much
    slower that device runs the backbone (its prediction over the backbone measured here), a
    derivation, marked as one. Any other table's head is the one measured here, on its backend."""
    if not is_published(table):
        return head_ms, None
    ratio = predicted_backbone_ms / backbone_ms
    scaled = head_ms * ratio
    return scaled, (f"the head's cost on {table.device.get('name')} ({scaled:.2f} ms) is derived: {head_ms:.2f} ms "
                    f"measured here x {ratio:.2f}, that device's backbone prediction over the backbone measured here")


def task_latency(model: nn.Module, backbone: nn.Module, task: str, resolution: int, arch: Arch | None = None,
                 lut: str | None = None, image: torch.Tensor | None = None, threads: int = 1,
                 stats: StatsConfig | None = None, clock: str = "wall") -> TaskLatency:
    """Measure the task model and its backbone; add the LUT's backbone prediction when `lut` is given."""
    if image is None:
        image = torch.rand(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    total, body = measure_task_latency(model, image, task, backbone, threads, stats, clock)
    head = total - body
    if not (lut and arch is not None):
        return TaskLatency("ort-cpu", threads, clock, resolution, total, body, head)
    predicted = lut_backbone_ms(arch, lut, resolution)
    device_head, derived = head_on_device(head, body, predicted, LatencyTable.load(lut))
    return TaskLatency("ort-cpu", threads, clock, resolution, total, body, head, predicted, predicted + device_head, lut,
                       device_head, derived)


def task_head_latency(arch: Arch, head: str, resolution: int, num_classes: int = 2, threads: int = 1,
                      stats: StatsConfig | None = None, source: BackboneSource | None = None,
                      clock: str = "wall") -> TaskLatency:
    """`head` on `arch`'s backbone, timed (ONNX Runtime CPU): whole task model, backbone, and the
    head's cost as their difference. A search adds the head's cost to every backbone prediction to
    budget the whole task model (the cost depends a little on the backbone's widths; measure it on
    a typical architecture)."""
    from .heads import build_task_model, head_task

    task = head_task(head)
    torch.manual_seed(0)
    source = source or arch_source(arch, resolution=resolution)
    model = build_task_model(source, head, num_classes, resolution)
    return task_latency(model, backbone_of(model), task, resolution, threads=threads, stats=stats, clock=clock)


def task_head_cost_ms(arch: Arch, head: str, resolution: int, num_classes: int = 2, threads: int = 1,
                      stats: StatsConfig | None = None, source: BackboneSource | None = None,
                      clock: str = "wall") -> float:
    """Measured cost (ms, ONNX Runtime CPU) of `head` on `arch`'s backbone (see task_head_latency)."""
    return task_head_latency(arch, head, resolution, num_classes, threads, stats, source, clock).head_ms


def backbone_of(model: nn.Module) -> nn.Module:
    """The FeatureBackbone inside a task model (the part the LUT predicts)."""
    from .backbone import FeatureBackbone

    for module in model.modules():
        if isinstance(module, FeatureBackbone):
            return module
    raise ValueError("the model holds no FeatureBackbone")
