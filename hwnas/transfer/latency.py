"""Latency of a task model: the whole detector or segmenter and its backbone timed end to end on
one backend (ONNX Runtime CPU, 1 thread, by default; a LUT's own backend and options when the
cost is added to that LUT's predictions), the head's cost being the difference; and, given a
LUT, the backbone's prediction with the head's measured cost beside it.

Timing is hwnas.profilers.end_to_end.measure_end_to_end: the backend's runtime (for ONNX
Runtime the export the LUT's ops go through; a detector's output, whose size depends on the
data, is bound without a fixed buffer), interleaved rounds of the model and its backbone, and,
for a LUT, the table's reference network, so that the head's cost is at the table's speed as
its predictions are.

Clocks: `wall` (the default, what the LUT's profilers record) or `thread`, the CPU time of the
calling thread. With one thread the whole graph runs on the caller, so `thread` counts the work
and not the time other processes held the core: on a shared machine it stays near the quiet
wall time while wall time grows with the load.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn

from ..core.arch import Arch
from ..latency_tables.loading import space_for_table
from ..latency_tables.predictor import LatencyPredictor
from ..latency_tables.published import is_published
from ..profilers.table import LatencyTable
from ..profilers import StatsConfig
from ..profilers.end_to_end import END_TO_END, measure_end_to_end
from ..profilers.torch_backend import check_clock
from ..core.reference import reference_model, reference_ms
from .backbone import BackboneSource, arch_source
from .export import TaskOutput


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
                         rounds: int = 3, backend: str = "ort-cpu", options: dict | None = None,
                         table: LatencyTable | None = None) -> tuple[float, float]:
    """(whole model p50 ms, backbone p50 ms) for one image [1, 3, R, R] on `backend` with `options`
    (default: `threads` and `clock`); with `table`, on the table's backend and options, at the
    table's speed (against its reference network). Detectors are timed in their worst case
    (see `worst_case`)."""
    reference, r0 = None, 1.0
    if table is not None:
        backend, options = table.backend, dict(table.backend_options)
        if (table.reference or {}).get("ms"):
            reference, r0 = reference_model(table.reference, table.batch), reference_ms(table.reference)
    elif options is None:
        check_clock(clock, threads)
        options = {"threads": threads, "clock": clock}
    if task == "detection":
        model = worst_case(model)
    networks = {"total": TaskOutput(model.eval(), task), "backbone": backbone.eval()}
    with torch.no_grad():
        timed = measure_end_to_end(networks, tuple(image.shape), backend, options=options, reference=reference,
                                   config=replace(END_TO_END, rounds=rounds), stats=stats)
    total, body = (float(np.median([r.normalised(r0) for r in timed[k]])) for k in ("total", "backbone"))
    return total, body


def lut_backbone_ms(arch: Arch, lut: str | LatencyTable, resolution: int) -> float:
    """The LUT's (a file, or a table read already) calibrated prediction of the architecture minus
    its classifier head's cost: stem and blocks, the part a task model keeps."""
    table = lut if isinstance(lut, LatencyTable) else LatencyTable.load(lut)
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
                 stats: StatsConfig | None = None, clock: str = "wall", table: LatencyTable | None = None
                 ) -> TaskLatency:
    """Measure the task model and its backbone: on `table`'s backend and options, at its speed,
    where a table is given; else, and for a published table (its device is not here: see
    head_on_device), on ONNX Runtime CPU with `threads` and `clock`. Add the `lut` file's backbone
    prediction when one is given."""
    if image is None:
        image = torch.rand(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    timing = None if table is None or is_published(table) else table
    total, body = measure_task_latency(model, image, task, backbone, threads, stats, clock, table=timing)
    head = total - body
    backend = "ort-cpu"
    if timing is not None:
        backend = timing.backend
        threads = int(timing.backend_options.get("threads", threads))
        clock = str(timing.backend_options.get("clock", "wall"))
    if not (lut and arch is not None):
        return TaskLatency(backend, threads, clock, resolution, total, body, head)
    lut_table = LatencyTable.load(lut)
    predicted = lut_backbone_ms(arch, lut_table, resolution)
    device_head, derived = head_on_device(head, body, predicted, lut_table)
    return TaskLatency(backend, threads, clock, resolution, total, body, head, predicted, predicted + device_head, lut,
                       device_head, derived)


def task_head_latency(arch: Arch, head: str, resolution: int, num_classes: int = 2, threads: int = 1,
                      stats: StatsConfig | None = None, source: BackboneSource | None = None,
                      clock: str = "wall", table: LatencyTable | None = None) -> TaskLatency:
    """`head` on `arch`'s backbone, timed: whole task model, backbone, and the head's cost as their
    difference. A search adds the head's cost to every backbone prediction of `table`, so it is
    timed on that table's backend and options, at its speed; without a table, or for a published
    table (whose device is not here: see head_on_device), on ONNX Runtime CPU with `threads` and
    `clock`. The cost depends a little on the backbone's widths; measure it on a typical
    architecture."""
    from .heads import build_task_model, head_task

    task = head_task(head)
    torch.manual_seed(0)
    source = source or arch_source(arch, resolution=resolution)
    model = build_task_model(source, head, num_classes, resolution)
    return task_latency(model, backbone_of(model), task, resolution, threads=threads, stats=stats, clock=clock,
                        table=table)


def task_head_cost_ms(arch: Arch, head: str, resolution: int, num_classes: int = 2, threads: int = 1,
                      stats: StatsConfig | None = None, source: BackboneSource | None = None,
                      clock: str = "wall", table: LatencyTable | None = None) -> float:
    """The head's measured cost (ms) of task_head_latency."""
    return task_head_latency(arch, head, resolution, num_classes, threads, stats, source, clock, table).head_ms


def backbone_of(model: nn.Module) -> nn.Module:
    """The FeatureBackbone inside a task model (the part the LUT predicts)."""
    from .backbone import FeatureBackbone

    for module in model.modules():
        if isinstance(module, FeatureBackbone):
            return module
    raise ValueError("the model holds no FeatureBackbone")
