"""Fine-tune a task model (a backbone plus a detection or segmentation head) and evaluate it:
`hwnas transfer` and benchmarks/transfer.py share this loop. A run directory makes it resumable
per epoch (atomic checkpoints; the data order and augmentation depend only on seed and epoch,
the RNG state travels in the checkpoint, so a resumed run ends where an uninterrupted one does).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.arch import Arch
from ..core.presets import resolve_arch
from ..errors import HwnasError
from ..jsonio import atomic_write_json
from ..runs import open_training_run, rng_state, save_checkpoint, write_jsonl
from ..train.loop import cosine_lr
from .backbone import BackboneSource, arch_source, mobilenet_v3_source
from .data import IGNORE, TaskData, augment, load_task_data, make_task_loader
from .heads import build_task_model, check_head
from .metrics import DetectionMetric, SegmentationMetric

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "hwnas.transfer-checkpoint"
MODEL_FORMAT = "hwnas.transfer-model"
REFERENCE_BACKBONE = "torchvision:mobilenet_v3_large"


@dataclass(frozen=True)
class TransferConfig:
    """What to fine-tune on what. AdamW with a short linear warm-up and a per-step cosine decay
    (no scheduler state to save); heads and backbones start from scratch unless `weights`."""

    arch: str
    task: str
    head: str
    data: str
    fmt: str
    epochs: int
    resolution: int = 256
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    val_fraction: float = 0.2
    max_images: int | None = None
    weights: str | None = None

    def __post_init__(self):
        check_head(self.task, self.head)
        if self.epochs < 1:
            raise HwnasError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise HwnasError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.resolution < 32 or self.resolution % 32:
            raise HwnasError(f"--resolution must be a multiple of 32 (at least 32), got {self.resolution}")
        if not self.lr > 0:
            raise HwnasError(f"--lr must be > 0, got {self.lr}")
        if self.head == "deeplabv3" and self.batch_size < 2:
            raise HwnasError("deeplabv3 trains with batch norm after a global pool: use --batch-size 2 or more")
        if self.weights is not None and self.arch == REFERENCE_BACKBONE:
            raise HwnasError(f"--weights initialises an hwnas architecture; {REFERENCE_BACKBONE} starts at random")


@dataclass(frozen=True)
class TransferResult:
    arch: Arch | None
    metrics: dict  # the final validation metrics
    untrained: dict  # the same metrics before the first step
    epochs_done: int
    finished: bool
    wall_s: float
    log: tuple[dict, ...]

    def to_dict(self) -> dict:
        return {"arch_hash": self.arch.hash if self.arch else None, "final": self.metrics,
                "untrained": self.untrained, "epochs_done": self.epochs_done, "finished": self.finished,
                "wall_s": round(self.wall_s, 3), "history": list(self.log)}


def backbone_source(ref: str, resolution: int, weights: str | None = None) -> tuple[BackboneSource, Arch | None]:
    """ARCH (a JSON file or preset:NAME) or the torchvision reference backbone."""
    if ref == REFERENCE_BACKBONE:
        return mobilenet_v3_source(), None
    arch = resolve_arch(ref)
    return arch_source(arch, resolution=resolution, weights=weights), arch


def make_model(cfg: TransferConfig, num_classes: int) -> tuple[nn.Module, Arch | None]:
    torch.manual_seed(cfg.seed)
    source, arch = backbone_source(cfg.arch, cfg.resolution, cfg.weights)
    return build_task_model(source, cfg.head, num_classes, cfg.resolution), arch


def load_data(cfg: TransferConfig, progress: bool = False) -> TaskData:
    data = load_task_data(cfg.data, cfg.fmt, cfg.task, cfg.resolution, cfg.val_fraction, cfg.seed, cfg.max_images,
                          progress)
    if cfg.head == "deeplabv3" and len(data.train) < 2:
        raise HwnasError("deeplabv3 needs at least 2 training images (batch norm after a global pool)")
    return data


def _train_targets(targets, task: str) -> list[dict]:
    if task == "segmentation":
        return list(targets)
    out = []
    for t in targets:
        keep = t["iscrowd"] == 0
        out.append({"boxes": t["boxes"][keep], "labels": t["labels"][keep]})
    return out


def task_loss(model: nn.Module, images, targets, task: str) -> torch.Tensor:
    """Sum of the detector's losses, or pixel cross-entropy (crowd pixels ignored)."""
    if task == "detection":
        return sum(model(list(images), _train_targets(targets, task)).values())
    logits = model(torch.stack(list(images)))["out"]
    return F.cross_entropy(logits, torch.stack([t["mask"] for t in targets]), ignore_index=IGNORE)


@torch.no_grad()
def evaluate(model: nn.Module, data: TaskData, batch_size: int = 4) -> dict:
    """mAP (detection) or mean IoU (segmentation) on `data.val`, in eval mode."""
    was_training = model.training
    model.eval()
    metric = DetectionMetric() if data.task == "detection" else SegmentationMetric(data.num_classes)
    seen = 0
    for images, targets in make_task_loader(data.val, batch_size, shuffle=False):
        if data.task == "detection":
            metric.update(model(list(images)), targets)
        else:
            logits = model(torch.stack(list(images)))["out"]
            metric.update(logits.argmax(1), torch.stack([t["mask"] for t in targets]))
        seen += len(images)
    model.train(was_training)
    if seen == 0:
        raise HwnasError("the validation split is empty; add images or raise --val-fraction")
    return metric.compute()


def learning_rate(base: float, step: int, total: int) -> float:
    """Linear warm-up over the first 10% of steps (at most 50), then cosine decay."""
    warm = min(50, max(1, total // 10))
    if step < warm:
        return base * (step + 1) / warm
    return cosine_lr(base, step - warm, max(total - warm, 1))


def train_epoch(model, optimizer, data: TaskData, cfg: TransferConfig, epoch: int, progress: bool) -> float:
    model.train()
    loader = make_task_loader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch, drop_last=True)
    steps = len(loader)
    flips = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
    loss_sum = 0.0
    for i, (images, targets) in enumerate(tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=not progress)):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg.lr, epoch * steps + i, cfg.epochs * steps)
        images, targets = augment(images, targets, flips)
        loss = task_loss(model, images, targets, cfg.task)
        if not torch.isfinite(loss):
            raise HwnasError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}); lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        loss_sum += loss.item()
    return loss_sum / max(steps, 1)


def _headline(metrics: dict, task: str) -> float:
    value = metrics["map"] if task == "detection" else metrics["miou"]
    return math.nan if value is None else value


def run_transfer(cfg: TransferConfig, run_dir: str | Path | None = None, resume: bool = False, progress: bool = False,
                 data: TaskData | None = None, stop_after: int | None = None) -> tuple[TransferResult, nn.Module, TaskData]:
    """Fine-tune and evaluate after every epoch (and once before the first step).

    With `run_dir`: `checkpoint.pt` after every epoch (atomic), `log.jsonl`, `metrics.json`, and at
    the end `model.pt` (the task model's weights with this config). `stop_after` ends the run after
    that many epochs in total (a deliberate interruption; resume continues it).
    """
    data = data or load_data(cfg, progress)
    model, arch = make_model(cfg, data.num_classes)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    run_config = {**asdict(cfg), "data_name": data.name, "num_classes": data.num_classes,
                  "train_images": len(data.train), "val_images": len(data.val)}
    log: list[dict] = []
    start_epoch, wall_before, untrained = 0, 0.0, None
    ckpt_path = None
    if run_dir is not None:
        run_dir, state, log, start_epoch, wall_before = open_training_run(
            run_dir, resume, CHECKPOINT, CHECKPOINT_FORMAT, run_config, {"model": model, "optimizer": optimizer})
        ckpt_path = run_dir / CHECKPOINT
        if state is not None:
            untrained = state["untrained"]
    t0 = time.perf_counter()
    if untrained is None:
        untrained = evaluate(model, data)
    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    bar = tqdm(range(start_epoch, end_epoch), desc=f"{cfg.head} {cfg.arch}", unit="epoch", disable=not progress,
               initial=start_epoch, total=cfg.epochs)
    for epoch in bar:
        train_loss = train_epoch(model, optimizer, data, cfg, epoch, progress)
        metrics = evaluate(model, data)
        record = {"epoch": epoch + 1, "train_loss": train_loss, "val": metrics,
                  "wall_s": round(wall_before + time.perf_counter() - t0, 3)}
        log.append(record)
        bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{_headline(metrics, cfg.task):.3f}")
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, {
                "format": CHECKPOINT_FORMAT, "config": run_config, "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "rng": rng_state(), "log": log, "wall_s": record["wall_s"],
                "untrained": untrained,
            })
            write_jsonl(run_dir / "log.jsonl", log)
    bar.close()
    done = log[-1]["epoch"] if log else 0
    wall = wall_before + time.perf_counter() - t0
    final = log[-1]["val"] if log else untrained
    result = TransferResult(arch, final, untrained, done, done >= cfg.epochs, wall, tuple(log))
    if run_dir is not None:
        atomic_write_json(run_dir / "metrics.json", {**result.to_dict(), "config": run_config,
                                                     "headline": "map" if cfg.task == "detection" else "miou"})
        if result.finished:
            save_checkpoint(run_dir / "model.pt", {"format": MODEL_FORMAT, "config": run_config,
                                                   "class_names": list(data.class_names),
                                                   "state_dict": model.state_dict()})
    return result, model, data


def headline(result: TransferResult, task: str) -> tuple[float, float]:
    """(untrained, final) of the task's main metric: box mAP or mean IoU."""
    return _headline(result.untrained, task), _headline(result.metrics, task)

