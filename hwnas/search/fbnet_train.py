"""FBNet's supernet training: per epoch the weights on one split of the training set (80%), then,
after the warm-up, the architecture parameters on the other (20%) under the latency-aware loss;
checkpointed every epoch (resumable: weights, both optimizers, RNG state, the per-epoch log)."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.arch import Arch
from ..train.data import make_loader, split_train
from ..runs import load_checkpoint, open_run, restore_training, rng_state, save_checkpoint, write_jsonl
from ..train import ddp
from ..core.spaces import get_space
from ..train.loop import sgd_epoch, steps_per_epoch
from .latency_loss import latency_aware_loss
from .supernet import Supernet

CHECKPOINT = "supernet.pt"
CHECKPOINT_FORMAT = "hwnas.fbnet-checkpoint"
#: settings that only change what is derived from the trained supernet: a resume may change them
DERIVED = ("top_k", "fill_budget", "finalists", "finalist_epochs")


def temperature_at(cfg, epoch: int) -> float:
    return cfg.temperature * cfg.temperature_decay ** epoch


class SupernetTraining:
    """The supernet, its two optimizers and data splits, restored from RUN_DIR when resuming."""

    def __init__(self, problem, cfg, run_config: dict):
        self.problem, self.cfg = problem, cfg
        self.loss_kind = cfg.loss_kind(problem.budget_ms)
        ddp.check_batch(cfg.batch_size)
        # under torchrun process 0 opens the run and loads the checkpoint; every process restores it
        self.run_dir, state = ddp.on_main(lambda: open_run(
            problem.run_dir, problem.resume, CHECKPOINT, run_config,
            lambda path: load_checkpoint(path, CHECKPOINT_FORMAT), ignore=DERIVED))
        self.run_config = run_config
        torch.manual_seed(problem.seed)
        space, data = problem.space, problem.data
        self.net = Supernet(get_space(space.name, resolution=space.resolution, num_classes=data.num_classes),
                            cfg.mixed_op)
        self.w_opt = torch.optim.SGD(self.net.weight_parameters(), lr=cfg.weight_lr, momentum=cfg.weight_momentum,
                                     weight_decay=cfg.weight_decay, nesterov=True)
        self.a_opt = torch.optim.Adam(self.net.arch_parameters(), lr=cfg.arch_lr, betas=(0.9, 0.999),
                                      weight_decay=cfg.arch_weight_decay)
        self.w_split, self.a_split = split_train(data.train, cfg.arch_split, problem.seed)
        self.log: list[dict] = []
        self.start, self.wall_before = 0, 0.0
        if state is not None:
            self.log, self.start, self.wall_before = restore_training(
                state, {"supernet": self.net, "weight_optimizer": self.w_opt, "arch_optimizer": self.a_opt})
        self.model = ddp.distributed(self.net)  # gradients averaged over torchrun's processes
        self.w_steps = steps_per_epoch(len(self.w_split), cfg.batch_size, cfg.max_batches, drop_last=True)
        # a cap on weight batches caps architecture batches in proportion (FBNet's 80:20)
        a_cap = None if cfg.max_batches is None else max(1, math.ceil(self.w_steps * len(self.a_split) / len(self.w_split)))
        self.a_steps = steps_per_epoch(len(self.a_split), cfg.batch_size, a_cap, drop_last=True)
        self.wall = self.wall_before

    @property
    def finished(self) -> bool:
        return bool(self.log) and self.log[-1]["epoch"] >= self.cfg.epochs

    def train(self, stop_after: int | None = None) -> None:
        """Epochs from the checkpoint's up to `cfg.epochs` (or `stop_after` in total)."""
        cfg, problem = self.cfg, self.problem
        t0 = time.perf_counter()
        end = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
        bar = tqdm(range(self.start, end), desc=f"fbnet search {problem.space.name}", unit="epoch", initial=self.start,
                   total=cfg.epochs, disable=not problem.progress)
        for epoch in bar:
            record = self.epoch(epoch, wall=lambda: self.wall_before + time.perf_counter() - t0)
            self.log.append(record)
            if ddp.is_main():
                self.save(epoch, record)
            if problem.progress:
                bar.write(f"epoch {epoch + 1}/{cfg.epochs} T={record['temperature']:.3f} "
                          f"w_loss={record['weight_loss']:.3f} w_top1={record['weight_top1']:.1f} "
                          f"E[lat]={record['expected_latency_ms']:.3f}ms argmax={record['argmax_latency_ms']:.3f}ms"
                          + (f" budget={problem.budget_ms:.3f}ms" if problem.budget_ms is not None else ""))
        bar.close()
        self.wall = self.wall_before + time.perf_counter() - t0

    def epoch(self, epoch: int, wall) -> dict:
        """One weight epoch, then (after the warm-up) one architecture epoch; the log record."""
        cfg, problem, net = self.cfg, self.problem, self.net
        tau = temperature_at(cfg, epoch)
        net.train()
        w_loss, w_top1 = self.weight_epoch(epoch, tau)
        arch_stats = {"arch_loss": None, "arch_ce": None, "arch_top1": None}
        if epoch >= cfg.warmup:
            arch_stats = self.arch_epoch(epoch, tau)
        with torch.no_grad():
            expected = float(problem.predictor.expected_latency(net.probabilities()))
        argmax_arch = Arch.create(problem.space, net.choices(net.argmax_indices()))
        return {
            "epoch": epoch + 1, "temperature": tau, "weight_lr": self.w_opt.param_groups[0]["lr"],
            "weight_loss": w_loss, "weight_top1": w_top1, **arch_stats,
            "expected_latency_ms": expected, "argmax_latency_ms": problem.predictor.latency_ms(argmax_arch),
            "budget_ms": problem.budget_ms, "argmax": argmax_arch.choice_map,
            "probs": [[round(v, 5) for v in p.tolist()] for p in net.probabilities()],
            "wall_s": round(wall(), 3),
        }

    def save(self, epoch: int, record: dict) -> None:
        save_checkpoint(self.run_dir / CHECKPOINT, {
            "format": CHECKPOINT_FORMAT, "config": self.run_config, "epoch": epoch + 1,
            "supernet": self.net.state_dict(), "weight_optimizer": self.w_opt.state_dict(),
            "arch_optimizer": self.a_opt.state_dict(), "rng": rng_state(), "temperature": record["temperature"],
            "log": self.log, "wall_s": record["wall_s"],
        })
        write_jsonl(self.run_dir / "log.jsonl", self.log)

    def weight_epoch(self, epoch: int, tau: float) -> tuple[float, float]:
        cfg = self.cfg
        loader = make_loader(self.w_split, cfg.batch_size, shuffle=True, seed=self.problem.seed, epoch=2 * epoch,
                             drop_last=True)
        loss, top1 = sgd_epoch(lambda x: self.model(x, tau, arch_grad=False), F.cross_entropy, self.w_opt,
                               ddp.shard_batches(loader), self.w_steps, cfg.weight_lr, epoch, self.w_steps * cfg.epochs,
                               f"weights {epoch + 1}", self.problem.progress)
        return ddp.all_reduce_mean(loss, top1)

    def arch_epoch(self, epoch: int, tau: float) -> dict:
        weights = self.net.weight_parameters()
        for p in weights:  # gradients flow through the activations only: no weight gradients to compute
            p.requires_grad_(False)
        try:
            return self._arch_steps(epoch, tau)
        finally:
            for p in weights:
                p.requires_grad_(True)

    def _arch_steps(self, epoch: int, tau: float) -> dict:
        cfg, problem, net = self.cfg, self.problem, self.net
        loss_sum = ce_sum = correct = seen = 0
        loader = make_loader(self.a_split, cfg.batch_size, shuffle=True, seed=problem.seed, epoch=2 * epoch + 1,
                             drop_last=True)
        for i, (x, y) in enumerate(tqdm(ddp.shard_batches(loader), total=self.a_steps, desc=f"arch {epoch + 1}",
                                        leave=False, disable=not problem.progress)):
            if i >= self.a_steps:
                break
            logits = self.model(x, tau, arch_grad=True)
            ce = F.cross_entropy(logits, y)
            weights = net.sampled_weights if cfg.lat_weights == "sample" else net.probabilities(cfg.lat_temperature)
            lat = problem.predictor.expected_latency(weights)
            loss = latency_aware_loss(ce, lat, self.loss_kind, problem.budget_ms, cfg.lat_alpha, cfg.lat_beta,
                                      cfg.penalty_weight, cfg.under_weight)
            self.a_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.a_opt.step()
            loss_sum += loss.item() * len(y)
            ce_sum += ce.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        n = max(seen, 1)
        loss, ce, top1 = ddp.all_reduce_mean(loss_sum / n, ce_sum / n, 100.0 * correct / n)
        return {"arch_loss": loss, "arch_ce": ce, "arch_top1": top1}
