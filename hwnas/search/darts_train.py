"""DARTS's bilevel training of a cell supernet: per step, the architecture parameters on a batch of
one half of the training set (first order: the gradient at the current weights; second order: at
the weights after one virtual SGD step, with the finite-difference Hessian-vector product of DARTS,
Liu et al. 2019, eq. 7-8), then the weights on a batch of the other half. Checkpointed every epoch
(weights, both optimizers, RNG state, the per-epoch log): a run killed with -9 resumes to the same
result."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.arch import Arch
from ..runs import load_checkpoint, open_run, restore_training, rng_state, save_checkpoint, write_jsonl
from ..train.data import make_loader, split_train
from ..train.loop import steps_per_epoch
from .darts_supernet import build_supernet
from .latency_loss import latency_aware_loss

CHECKPOINT = "darts_supernet.pt"
CHECKPOINT_FORMAT = "hwnas.darts-checkpoint"
#: ops without parameters: a derived cell made only of these is DARTS's collapse
PARAMETER_FREE = ("none", "skip_connect", "avg_pool_3x3", "max_pool_3x3", "skip")


def cosine(base: float, floor: float, step: int, total: int) -> float:
    """DARTS's cosine schedule from `base` down to `floor`."""
    return floor + 0.5 * (base - floor) * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


class DartsTraining:
    """The supernet, its two optimizers and data halves, restored from RUN_DIR when resuming."""

    def __init__(self, problem, cfg, run_config: dict, costs=None):
        self.problem, self.cfg, self.costs = problem, cfg, costs
        self.run_dir, state = open_run(problem.run_dir, problem.resume, CHECKPOINT, run_config,
                                       lambda path: load_checkpoint(path, CHECKPOINT_FORMAT))
        self.run_config = run_config
        torch.manual_seed(problem.seed)
        self.net = build_supernet(problem.space, cfg.channels, cfg.cells, problem.data.resolution)
        self.weights = self.net.weight_parameters()
        self.alphas = self.net.arch_parameters()
        self.w_opt = torch.optim.SGD(self.weights, lr=cfg.weight_lr, momentum=cfg.weight_momentum,
                                     weight_decay=cfg.weight_decay)
        self.a_opt = torch.optim.Adam(self.alphas, lr=cfg.arch_lr, betas=(0.5, 0.999),
                                      weight_decay=cfg.arch_weight_decay)
        self.w_split, self.a_split = split_train(problem.data.train, 0.5, problem.seed)
        self.log: list[dict] = []
        self.start, self.wall_before, self.cpu_before = 0, 0.0, 0.0
        if state is not None:
            self.log, self.start, self.wall_before = restore_training(
                state, {"supernet": self.net, "weight_optimizer": self.w_opt, "arch_optimizer": self.a_opt})
            self.cpu_before = float(state.get("cpu_s", 0.0))
        self.steps = steps_per_epoch(min(len(self.w_split), len(self.a_split)), cfg.batch_size, cfg.max_batches,
                                     drop_last=True)
        self.total_steps = self.steps * cfg.epochs
        self.wall, self.cpu = self.wall_before, self.cpu_before

    @property
    def finished(self) -> bool:
        return bool(self.log) and self.log[-1]["epoch"] >= self.cfg.epochs

    def train(self, stop_after: int | None = None) -> None:
        """Epochs from the checkpoint's up to `cfg.epochs` (or `stop_after` in total)."""
        cfg, problem = self.cfg, self.problem
        t0, c0 = time.perf_counter(), time.process_time()
        end = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
        bar = tqdm(range(self.start, end), desc=f"{cfg.variant} search {problem.space.name}", unit="epoch",
                   initial=self.start, total=cfg.epochs, disable=not problem.progress)
        for epoch in bar:
            record = self.epoch(epoch)
            record["wall_s"] = round(self.wall_before + time.perf_counter() - t0, 3)
            record["cpu_s"] = round(self.cpu_before + time.process_time() - c0, 3)
            self.log.append(record)
            self.save(epoch, record)
            if problem.progress:
                lat = record["expected_latency_ms"]
                bar.write(f"epoch {epoch + 1}/{cfg.epochs} w_loss={record['weight_loss']:.3f} "
                          f"w_top1={record['weight_top1']:.1f} a_top1={record['arch_top1']:.1f}"
                          + (f" E[lat]={lat:.3f}ms" if lat is not None else "")
                          + f" parameter-free edges {record['parameter_free_edges']}/{self.net.derived_ops}")
        bar.close()
        self.wall = self.wall_before + time.perf_counter() - t0
        self.cpu = self.cpu_before + time.process_time() - c0

    def aux_skip(self, step: int) -> float:
        """DARTS-'s auxiliary skip weight: `aux_skip` decaying linearly to 0 over the search."""
        if self.cfg.variant != "darts-minus":
            return 0.0
        return self.cfg.aux_skip * (1.0 - step / max(self.total_steps, 1))

    def epoch(self, epoch: int) -> dict:
        cfg, problem, net = self.cfg, self.problem, self.net
        net.train()
        w_loader = make_loader(self.w_split, cfg.batch_size, shuffle=True, seed=problem.seed, epoch=2 * epoch,
                               drop_last=True)
        a_loader = make_loader(self.a_split, cfg.batch_size, shuffle=True, seed=problem.seed, epoch=2 * epoch + 1,
                               drop_last=True)
        sums = dict.fromkeys(("w_loss", "w_correct", "a_loss", "a_ce", "a_correct", "seen_w", "seen_a"), 0.0)
        batches = tqdm(zip(w_loader, a_loader), total=self.steps, desc=f"epoch {epoch + 1}", leave=False,
                       disable=not problem.progress)
        lr, beta = cosine(cfg.weight_lr, cfg.weight_lr_min, epoch * self.steps, self.total_steps), 0.0
        for i, ((xw, yw), (xa, ya)) in enumerate(batches):
            if i >= self.steps:
                break
            step = epoch * self.steps + i
            lr = cosine(cfg.weight_lr, cfg.weight_lr_min, step, self.total_steps)
            beta = self.aux_skip(step)
            loss, ce, logits = self.arch_step(xw, yw, xa, ya, lr, beta)
            sums["a_loss"] += loss * len(ya)
            sums["a_ce"] += ce * len(ya)
            sums["a_correct"] += (logits.argmax(1) == ya).sum().item()
            sums["seen_a"] += len(ya)
            w_loss, w_logits = self.weight_step(xw, yw, lr, beta)
            sums["w_loss"] += w_loss * len(yw)
            sums["w_correct"] += (w_logits.argmax(1) == yw).sum().item()
            sums["seen_w"] += len(yw)
        n_w, n_a = max(sums["seen_w"], 1), max(sums["seen_a"], 1)
        with torch.no_grad():
            probs = net.probabilities()
            expected = float(self.costs.expected(probs)) if self.costs is not None else None
        argmax = net.argmax_choices()
        return {
            "epoch": epoch + 1, "weight_lr": lr, "aux_skip": beta,
            "weight_loss": sums["w_loss"] / n_w, "weight_top1": 100.0 * sums["w_correct"] / n_w,
            "arch_loss": sums["a_loss"] / n_a, "arch_ce": sums["a_ce"] / n_a,
            "arch_top1": 100.0 * sums["a_correct"] / n_a,
            "expected_latency_ms": expected,
            "argmax_latency_ms": problem.predictor.latency_ms(Arch.create(problem.space, argmax)),
            "budget_ms": problem.budget_ms, "argmax": argmax,
            "parameter_free_edges": sum(op in PARAMETER_FREE for op in argmax.values()),
            "derived_edges": net.derived_ops,
            "probs": [[round(v, 5) for v in p.tolist()] for p in probs],
        }

    def arch_loss(self, x: torch.Tensor, y: torch.Tensor, beta: float):
        """Cross-entropy on the architecture half, plus the budget hinge on the expected latency."""
        logits = self.net(x, aux_skip=beta)
        ce = F.cross_entropy(logits, y)
        loss = ce
        if self.problem.budget_ms is not None:
            lat = self.costs.expected(self.net.probabilities())
            loss = latency_aware_loss(ce, lat, "budget", self.problem.budget_ms, weight=self.cfg.penalty_weight,
                                      under=self.cfg.under_weight)
        return loss, ce, logits

    def arch_step(self, xw, yw, xa, ya, lr: float, beta: float):
        if self.cfg.order == 2:
            grads, loss, ce, logits = self.unrolled_grads(xw, yw, xa, ya, lr, beta)
        else:
            loss, ce, logits = self.arch_loss(xa, ya, beta)
            grads = torch.autograd.grad(loss, self.alphas)
        self.a_opt.zero_grad(set_to_none=True)
        for a, g in zip(self.alphas, grads):
            a.grad = g.detach()
        self.a_opt.step()
        return loss.item(), ce.item(), logits.detach()

    def weight_step(self, x, y, lr: float, beta: float):
        for group in self.w_opt.param_groups:
            group["lr"] = lr
        logits = self.net(x, aux_skip=beta)
        loss = F.cross_entropy(logits, y)
        self.w_opt.zero_grad(set_to_none=True)
        loss.backward(inputs=self.weights)
        torch.nn.utils.clip_grad_norm_(self.weights, self.cfg.grad_clip)
        self.w_opt.step()
        return loss.item(), logits.detach()

    def unrolled_grads(self, xw, yw, xa, ya, lr: float, beta: float):
        """DARTS's second-order gradient: dL_val(w', a)/da - lr * (dL_train(w+, a)/da - dL_train(w-, a)/da) / 2eps,
        w' = w - lr * (dL_train(w, a)/dw + wd * w) (the virtual step, without momentum), w+- = w +- eps *
        dL_val(w', a)/dw', eps = 0.01 / |dL_val/dw'|. The weights and batch-norm buffers are restored after."""
        net, weights, alphas, wd = self.net, self.weights, self.alphas, self.cfg.weight_decay
        saved = [p.detach().clone() for p in weights]
        buffers = [b.detach().clone() for b in net.buffers()]
        train_grads = torch.autograd.grad(F.cross_entropy(net(xw, aux_skip=beta), yw), weights, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(weights, train_grads):
                p.sub_(lr * ((g if g is not None else 0.0) + wd * p))
        loss, ce, logits = self.arch_loss(xa, ya, beta)
        grads = torch.autograd.grad(loss, [*alphas, *weights], allow_unused=True)
        d_alpha = [torch.zeros_like(a) if g is None else g for a, g in zip(alphas, grads)]
        d_w = [torch.zeros_like(p) if g is None else g for p, g in zip(weights, grads[len(alphas):])]
        norm = torch.sqrt(sum((g * g).sum() for g in d_w))
        eps = 0.01 / float(norm) if float(norm) > 0 else 0.0
        implicit = [torch.zeros_like(a) for a in alphas]
        if eps:
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    for p, s, g in zip(weights, saved, d_w):
                        p.copy_(s + sign * eps * g)
                side = torch.autograd.grad(F.cross_entropy(net(xw, aux_skip=beta), yw), alphas)
                implicit = [h + sign * g for h, g in zip(implicit, side)]
        with torch.no_grad():
            for p, s in zip(weights, saved):
                p.copy_(s)
            for b, s in zip(net.buffers(), buffers):
                b.copy_(s)
        scale = lr / (2 * eps) if eps else 0.0
        return [d - scale * h for d, h in zip(d_alpha, implicit)], loss, ce, logits

    def save(self, epoch: int, record: dict) -> None:
        save_checkpoint(self.run_dir / CHECKPOINT, {
            "format": CHECKPOINT_FORMAT, "config": self.run_config, "epoch": epoch + 1,
            "supernet": self.net.state_dict(), "weight_optimizer": self.w_opt.state_dict(),
            "arch_optimizer": self.a_opt.state_dict(), "rng": rng_state(), "log": self.log,
            "wall_s": record["wall_s"], "cpu_s": record["cpu_s"],
        })
        write_jsonl(self.run_dir / "log.jsonl", self.log)
