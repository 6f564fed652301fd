"""`hwnas transfer` as one job: every check before any work (the run folder, --onnx, --lut's
coverage), the data, training under a lock on the run folder (resumable), the predictions image,
and optionally a checked ONNX export and the task model's latency, merged into metrics.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import HwnasError
from ..locks import hold
from ..core.presets import resolve_arch
from ..runs import check_writable, refuse_nonempty
from .export import TaskParity
from .latency import TaskLatency, check_clock, lut_backbone_ms
from .outputs import add_to_metrics, export_checked, run_latency, write_predictions
from .pipeline import REFERENCE_BACKBONE, TransferConfig, TransferResult, headline, load_data, run_transfer


@dataclass(frozen=True)
class TransferRequest:
    """A transfer run: the training config and what to do beside it (the flags of `hwnas transfer`)."""

    config: TransferConfig
    out: str
    resume: bool = False
    onnx: str | None = None
    latency: bool = False
    lut: str | None = None
    threads: int = 1
    clock: str = "wall"
    progress: bool = True


@dataclass(frozen=True)
class Transferred:
    result: TransferResult
    val_images: int
    headline: tuple[float, float]  # (untrained, trained): box mAP or mean IoU
    predictions: Path
    parity: TaskParity | None
    latency: TaskLatency | None


def check_request(request: TransferRequest):
    """Every refusal before any work: the clock, --lut without --latency or for the reference
    backbone or at a resolution the table lacks, a run folder in use, an existing --onnx.
    Returns the architecture (None for the reference backbone)."""
    r, cfg = request, request.config
    check_clock(r.clock, r.threads)
    if r.lut and not r.latency:
        raise HwnasError("--lut predicts the backbone beside a measurement: add --latency")
    arch = None if cfg.arch == REFERENCE_BACKBONE else resolve_arch(cfg.arch)  # a bad ARCH fails before any work
    if r.lut:
        if arch is None:
            raise HwnasError(f"--lut predicts hwnas architectures; {REFERENCE_BACKBONE} is in no table")
        lut_backbone_ms(arch, r.lut, cfg.resolution)  # the table must cover ARCH at --resolution
    refuse_nonempty(r.out, r.resume)
    check_writable(r.out)
    if r.onnx:
        if Path(r.onnx).exists() and not r.resume:
            raise HwnasError(f"--onnx {r.onnx} exists; choose a new file (nothing is overwritten)")
        check_writable(r.onnx, "--onnx")
    return arch


def transfer(request: TransferRequest, say: Callable[[str], None] = print) -> Transferred:
    """Run the job; `say` gets the lines a person follows it by (the data, once loaded)."""
    r, cfg = request, request.config
    check_request(r)
    data = load_data(cfg, r.progress)
    if r.progress:
        say(f"{cfg.head} on {cfg.arch}: {data.name}, {len(data.train)} train / {len(data.val)} val images, "
            f"{data.num_classes - 1} classes, {cfg.resolution}px")
    with hold(r.out, "run directory"):
        refuse_nonempty(r.out, r.resume)  # again under the lock: another run may have filled it meanwhile
        result, model, data = run_transfer(cfg, r.out, r.resume, r.progress, data=data)
        png = write_predictions(model, data, r.out)
        extra, parity, latency = {}, None, None
        if r.onnx:
            parity = export_checked(model, cfg, result.arch, data, r.onnx)
            extra["onnx"] = {"path": str(r.onnx), "parity": parity.to_dict()}
        if r.latency:
            latency = run_latency(model, cfg, result.arch, data, r.lut, r.threads, clock=r.clock)
            extra["latency"] = latency.to_dict()
        if extra:
            add_to_metrics(r.out, **extra)
    return Transferred(result, len(data.val), headline(result, cfg.task), png, parity, latency)
