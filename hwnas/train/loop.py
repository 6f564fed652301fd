"""Train an architecture from scratch and report top-1: `hwnas train`, the `random` strategy's
evaluator and the benchmarks share this loop. A run directory makes it resumable per epoch."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.arch import Arch
from .data import ImageData, make_loader
from ..errors import HwnasError
from ..jsonio import atomic_write_json
from ..core.models import arch_model
from ..locks import hold
from ..runs import open_training_run, refuse_nonempty, rng_state, save_checkpoint, write_jsonl
from ..core.weights import save_weights

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = "hwnas.train-checkpoint"


@dataclass(frozen=True)
class TrainConfig:
    """SGD with Nesterov momentum and a per-step cosine learning rate (no scheduler state to save).
    The default learning rate follows the linear scaling rule (0.1 per 256 images): higher rates
    diverge in the first steps for fbnet-sized networks at batch 64."""

    epochs: int
    batch_size: int = 64
    lr: float = 0.025  # linear scaling: 0.1 per 256 images
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    seed: int = 0
    max_batches: int | None = None  # cap on batches per epoch (a random subset each epoch)

    def __post_init__(self):
        if self.epochs < 1:
            raise HwnasError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise HwnasError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise HwnasError(f"--lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class TrainResult:
    arch: Arch
    top1: float
    epochs_done: int
    finished: bool
    wall_s: float
    log: tuple[dict, ...]

    def to_dict(self) -> dict:
        return {"arch": self.arch.to_dict(), "arch_hash": self.arch.hash, "top1": self.top1,
                "epochs_done": self.epochs_done, "finished": self.finished, "wall_s": round(self.wall_s, 3)}


def cosine_lr(base: float, step: int, total: int) -> float:
    return 0.5 * base * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def steps_per_epoch(n: int, batch_size: int, limit: int | None, drop_last: bool = False) -> int:
    steps = n // batch_size if drop_last and n > batch_size else math.ceil(n / batch_size)
    return min(steps, limit) if limit else steps


@torch.no_grad()
def evaluate(model: nn.Module, dataset, batch_size: int = 256, max_batches: int | None = None,
             forward=None) -> tuple[float, float]:
    """(top-1 in %, mean cross-entropy) of `model` (or `forward(x)`) on a dataset, in eval mode."""
    was_training = model.training
    model.eval()
    batches = make_loader(dataset, batch_size, shuffle=False)
    try:
        return score_batches(forward or model, itertools.islice(batches, max_batches or None))
    finally:
        model.train(was_training)


def score_batches(forward, batches) -> tuple[float, float]:
    """(top-1 in %, mean cross-entropy) of `forward(x)` over (x, y) batches, in whatever mode the
    model is in."""
    correct = total = 0
    loss_sum = 0.0
    for x, y in batches:
        logits = forward(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        total += len(y)
    if total == 0:
        raise HwnasError("evaluation set is empty")
    return 100.0 * correct / total, loss_sum / total


def sgd_epoch(forward, criterion, optimizer, loader, steps: int, base_lr: float, epoch: int, total_steps: int,
              desc: str, progress: bool) -> tuple[float, float]:
    """One epoch of at most `steps` batches: cosine learning rate per step, loss and backward
    through `forward(x)`, then (mean loss, top-1 %) over the batches seen."""
    loss_sum, correct, seen = 0.0, 0, 0
    for i, (x, y) in enumerate(tqdm(loader, total=steps, desc=desc, leave=False, disable=not progress)):
        if i >= steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(base_lr, epoch * steps + i, total_steps)
        logits = forward(x)
        loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1)


def init_for_training(model: nn.Module, classifier: nn.Module | None = None) -> nn.Module:
    """Two init tweaks that make mobile nets train stably from scratch at small batch sizes:
    the last BN of every residual block starts at zero (each block starts as its shortcut;
    Goyal et al. 2017), and the classifier starts small (with 10 classes, timm's init on a
    1984-wide head gives initial logits of several units)."""
    for module in model.modules():
        if getattr(module, "has_skip", False):
            last_bn = getattr(module, "bn3", None) or getattr(module, "bn2", None)
            if last_bn is not None and getattr(last_bn, "weight", None) is not None:
                nn.init.zeros_(last_bn.weight)
    classifier = classifier if classifier is not None else getattr(model, "classifier", None)
    if isinstance(classifier, nn.Linear):
        nn.init.normal_(classifier.weight, std=0.01)
        nn.init.zeros_(classifier.bias)
    return model


def make_sgd(params, cfg: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)


def train_arch(arch: Arch, data: ImageData, cfg: TrainConfig, run_dir: str | Path | None = None, resume: bool = False,
               progress: bool = False, stop_after: int | None = None, initial_state: dict | None = None,
               weights_out: str | Path | None = None) -> TrainResult:
    """Train `arch` from scratch on `data.train`, evaluate top-1 on `data.val` after every epoch.

    `initial_state`: start from these weights instead (a child inheriting its parent's, see
    hwnas.core.morphisms; one cosine cycle from `cfg.lr` is then a warm restart, SGDR). `weights_out`:
    save the trained weights there (hwnas weights format) when the training finishes.

    With `run_dir`: a checkpoint after every epoch (atomic), `log.jsonl`, and at the end `model.pt`
    (hwnas weights format, carries the arch) and `result.json`. `stop_after` ends the run after
    that many epochs in total (a deliberate interruption; resume continues it).
    """
    torch.manual_seed(cfg.seed)
    model = arch_model(arch, num_classes=data.num_classes)
    if initial_state is None:
        init_for_training(model)
    else:
        model.load_state_dict(initial_state)
    optimizer = make_sgd(model.parameters(), cfg)
    run_config = {"arch": arch.hash, "data": data.name, "num_classes": data.num_classes,
                  "resolution": data.resolution, **asdict(cfg)}
    log: list[dict] = []
    start_epoch, wall_before = 0, 0.0
    ckpt_path = None
    if run_dir is not None:
        run_dir, _, log, start_epoch, wall_before = open_training_run(
            run_dir, resume, CHECKPOINT, CHECKPOINT_FORMAT, run_config, {"model": model, "optimizer": optimizer})
        ckpt_path = run_dir / CHECKPOINT
        atomic_write_json(run_dir / "arch.json", arch.to_dict())

    steps = steps_per_epoch(len(data.train), cfg.batch_size, cfg.max_batches, drop_last=True)
    total_steps = steps * cfg.epochs
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    t0 = time.perf_counter()
    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    epochs_bar = tqdm(range(start_epoch, end_epoch), desc=f"train {arch.hash}", unit="epoch", disable=not progress,
                      initial=start_epoch, total=cfg.epochs)
    for epoch in epochs_bar:
        model.train()
        loader = make_loader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch, drop_last=True)
        train_loss, train_top1 = sgd_epoch(model, criterion, optimizer, loader, steps, cfg.lr, epoch, total_steps,
                                           f"epoch {epoch + 1}", progress)
        top1, val_loss = evaluate(model, data.val)
        record = {"epoch": epoch + 1, "train_loss": train_loss, "train_top1": train_top1,
                  "val_loss": val_loss, "val_top1": top1, "lr": optimizer.param_groups[0]["lr"],
                  "wall_s": round(wall_before + time.perf_counter() - t0, 3)}
        log.append(record)
        epochs_bar.set_postfix(val_top1=f"{top1:.1f}")
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, {
                "format": CHECKPOINT_FORMAT, "config": run_config, "arch": arch.to_dict(), "epoch": epoch + 1,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng_state(),
                "log": log, "wall_s": record["wall_s"],
            })
            write_jsonl(Path(run_dir) / "log.jsonl", log)
    epochs_bar.close()
    done = log[-1]["epoch"] if log else 0
    wall = wall_before + time.perf_counter() - t0
    top1 = log[-1]["val_top1"] if log else float("nan")
    result = TrainResult(arch, top1, done, done >= cfg.epochs, wall, tuple(log))
    if weights_out is not None and result.finished:
        save_weights(weights_out, arch, model, data.num_classes, data.resolution,
                     extra={"top1": top1, "data": data.name, "epochs": cfg.epochs}, preprocessing=data.preprocessing)
    if run_dir is not None and result.finished:
        save_weights(Path(run_dir) / "model.pt", arch, model, data.num_classes, data.resolution,
                     extra={"top1": top1, "data": data.name, "epochs": cfg.epochs}, preprocessing=data.preprocessing)
        atomic_write_json(Path(run_dir) / "result.json", {**result.to_dict(), "data": data.name,
                                                          "resolution": data.resolution, "config": asdict(cfg)})
    return result


def train_in_run_folder(arch: Arch, data: ImageData, cfg: TrainConfig, run_dir: str | Path, resume: bool = False,
                        progress: bool = False) -> TrainResult:
    """`hwnas train`'s job: train_arch into RUN_DIR under a lock on it; a folder another run holds
    or has filled (without --resume) is refused, also when it filled while the data loaded."""
    with hold(run_dir, "run directory"):
        refuse_nonempty(run_dir, resume)
        return train_arch(arch, data, cfg, run_dir=run_dir, resume=resume, progress=progress)
