"""DARTS-PT's perturbation-based architecture selection (Wang et al., "Rethinking Architecture
Selection in Differentiable NAS", ICLR 2021), `--darts-variant darts-pt`, on nb201.

The supernet is trained exactly as DARTS trains it (darts_train.py; same seed, same steps). What
changes is how the cell is read off it: not the argmax of alpha, whose magnitude the paper shows
need not reflect how much an op contributes to the supernet (the root of the collapse onto
parameter-free ops), but each op's measured contribution. One edge at a time, in a seeded random
order: every op of the edge is masked out in turn (its mixing weight set to 0, the others kept) and
the supernet's accuracy on `--pt-batches` fixed batches of the architecture half is measured; the
edge is projected onto the op whose removal costs the most accuracy (the smaller loss breaks a
tie); then the supernet's weights are fine-tuned for `--pt-tune-steps` steps on the weight half
with that edge fixed, before the next edge. The checks run with batch statistics (the supernet in
train mode, its batch-norm buffers restored after), as DARTS-PT's code evaluates a perturbed supernet.

Each projected edge is checkpointed (the projection so far, weights, optimizer, RNG): a run killed
with -9 resumes at the next edge to the same result.
"""

from __future__ import annotations

import random
import time
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from ..runs import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ..train.data import make_loader
from ..train.loop import score_batches
from .darts_train import cosine

CHECKPOINT = "darts_pt.pt"
CHECKPOINT_FORMAT = "hwnas.darts-pt-checkpoint"


@contextmanager
def frozen_buffers(net: torch.nn.Module):
    """Run `net` in train mode (batch statistics) without keeping what its batch norms record."""
    saved = [b.detach().clone() for b in net.buffers()]
    net.train()
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(net.buffers(), saved):
                b.copy_(s)


def evaluate(net, batches) -> tuple[float, float]:
    """(accuracy %, mean cross-entropy) of the supernet as it mixes now, on fixed batches."""
    with torch.no_grad(), frozen_buffers(net):
        return score_batches(net, batches)


def edge_check(net, edge: int, batches) -> list[dict]:
    """Per op of `edge`: the supernet's accuracy and loss with that op masked out."""
    rows = []
    for op in range(len(net.candidates[edge])):
        net.removed = (edge, op)
        try:
            acc, loss = evaluate(net, batches)
        finally:
            net.removed = None
        rows.append({"op": net.candidates[edge][op], "acc_without": round(acc, 3), "loss_without": round(loss, 5)})
    return rows


def select(rows: list[dict]) -> int:
    """The op whose removal hurts most: lowest accuracy without it, then highest loss."""
    return min(range(len(rows)), key=lambda k: (rows[k]["acc_without"], -rows[k]["loss_without"]))


class Projection:
    """DARTS-PT's phase after the supernet training of `training` (a finished DartsTraining)."""

    def __init__(self, training, batches: int, tune_steps: int):
        self.training, self.tune_steps = training, tune_steps
        net, problem = training.net, training.problem
        self.order = list(range(len(net.edges)))
        random.Random(problem.seed).shuffle(self.order)
        loader = make_loader(training.a_split, training.cfg.batch_size, shuffle=True, seed=problem.seed,
                             epoch=10_000, drop_last=True)
        self.check_batches = [b for _, b in zip(range(batches), loader)]
        self.log: list[dict] = []
        self.cpu_before = 0.0
        path = training.run_dir / CHECKPOINT
        if path.exists():
            state = load_checkpoint(path, CHECKPOINT_FORMAT)
            net.load_state_dict(state["supernet"])
            training.w_opt.load_state_dict(state["weight_optimizer"])
            set_rng_state(state["rng"])
            self.log, self.cpu_before = list(state["log"]), float(state["cpu_s"])
        net.projected = {row["edge_index"]: row["chosen_index"] for row in self.log}

    def run(self, progress: bool = False) -> None:
        """Project every edge not yet projected (the cell is then `choices`)."""
        net, training = self.training.net, self.training
        c0 = time.process_time()
        todo = self.order[len(self.log):]
        for edge in tqdm(todo, desc="darts-pt projection", unit="edge", disable=not progress):
            rows = edge_check(net, edge, self.check_batches)
            chosen = select(rows)
            net.projected[edge] = chosen
            self.tune(len(self.log))
            self.log.append({"edge": net.edge_names[edge], "edge_index": edge, "chosen": rows[chosen]["op"],
                             "chosen_index": chosen, "argmax": net.candidates[edge][int(net.alphas[edge].argmax())],
                             "ops": rows})
            save_checkpoint(training.run_dir / CHECKPOINT, {
                "format": CHECKPOINT_FORMAT, "supernet": net.state_dict(),
                "weight_optimizer": training.w_opt.state_dict(), "rng": rng_state(), "log": self.log,
                "cpu_s": self.cpu_before + time.process_time() - c0})
        self.cpu = self.cpu_before + time.process_time() - c0

    @property
    def choices(self) -> dict[str, str]:
        """The projected cell: edge name -> op."""
        return {self.training.net.edge_names[row["edge_index"]]: row["chosen"] for row in self.log}

    def tune(self, index: int) -> None:
        """`tune_steps` SGD steps of the weights on the weight half, the edges projected so far fixed;
        the learning rate falls along a cosine from --weight-lr to its floor over the whole phase."""
        training, cfg = self.training, self.training.cfg
        if not self.tune_steps:
            return
        net = training.net
        net.train()
        loader = make_loader(training.w_split, cfg.batch_size, shuffle=True, seed=training.problem.seed,
                             epoch=20_000 + index, drop_last=True)
        total = self.tune_steps * len(self.order)
        for i, (x, y) in zip(range(self.tune_steps), loader):
            lr = cosine(cfg.weight_lr, cfg.weight_lr_min, index * self.tune_steps + i, total)
            training.weight_step(x, y, lr, 0.0)
