"""The `enas` strategy: efficient NAS by parameter sharing (Pham et al., ICML 2018) with MnasNet's
hardware-aware reward, on the SPOS supernet of a layer-wise space (supernet.py).

Each epoch alternates (1) shared-weight steps: SGD on the training part of the training set, each
batch along one path the controller samples, and (2) `controller_steps` policy updates of
`--controller-batch` samples each, every sample rewarded with MnasNet's reward (mnas.py) of its
top-1 on one held-out batch (shared weights, batch statistics as ENAS does) and its predicted
latency against the budget. The result is the best of `final_samples` samples of the trained
controller, each fitted to the budget (repaired if over it) and scored on `score_batches`
held-out batches. Every controller sample is a trial in trials.jsonl; RUN_DIR/enas.pt holds the
supernet, the controller, both optimisers and every RNG state after each epoch (kill -9 safe).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.arch import Arch
from ..train.data import make_loader
from ..errors import HwnasError
from ..jsonio import atomic_write_json
from ..runs import load_checkpoint, open_run, restore_training, rng_state, save_checkpoint, write_jsonl
from ..core.spaces import LayerwiseSpace
from ..train.loop import cosine_lr, steps_per_epoch
from .base import Candidate, SearchProblem, SearchResult, SupernetStrategy, refuse_unused_budgets
from .budget import repair_to_budget
from ..options import Options, option, reads
from .controller import ControllerConfig
from .evaluators import holdout_data
from .mnas import CURVE, REWARD_EXPONENT_HELP, REWARD_HELP, REWARDS, ControllerSearch, mnas_reward
from .supernet import Supernet
from .trials import HISTORY, Trial

CHECKPOINT = "enas.pt"
CHECKPOINT_FORMAT = "hwnas.enas-search"


@dataclass(frozen=True)
class ENASConfig(Options):
    """The enas search; `epochs`, `batch_size` and `max_batches` (shared-weight steps per epoch)
    are the command's training flags."""

    title = "enas strategy"
    epochs: int = reads("epochs", 10)
    batch_size: int = reads("batch_size", 64)
    weight_lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    max_batches: int | None = reads("max_batches", None)
    controller_steps: int = option(5, "--controller-steps", "enas: policy updates per epoch (default 5)", type=int)
    holdout: float = option(0.2, "--holdout", "enas: share of the training set the controller is rewarded on "
                                              "(default 0.2)", type=float)
    final_samples: int = option(10, "--final-samples", "enas: samples of the trained controller the result is the "
                                                       "best of (default 10)", type=int)
    score_batches: int = option(4, "--score-batches", "enas: held-out batches of 256 that score each final sample "
                                                      "(default 4)", type=int)
    reward: str = option("soft", "--reward", REWARD_HELP, choices=REWARDS)
    w: float = option(-0.07, "--reward-exponent", REWARD_EXPONENT_HELP, type=float)

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 2 or self.controller_steps < 1 or self.final_samples < 1 \
                or self.score_batches < 1:
            raise HwnasError("--epochs, --controller-steps, --final-samples, --score-batches must be >= 1 and "
                             "--batch-size >= 2")
        if not 0.0 < self.holdout < 1.0:
            raise HwnasError(f"--holdout must be between 0 and 1, got {self.holdout}")
        if self.reward not in REWARDS:
            raise HwnasError(f"--reward must be one of {', '.join(REWARDS)}, got {self.reward!r}")


class ENASStrategy(ControllerSearch, SupernetStrategy):
    name = "enas"
    uses_evaluator = False
    records = (ENASConfig, ControllerConfig)

    def __init__(self, config: ENASConfig = ENASConfig(), controller: ControllerConfig = ControllerConfig()):
        self.config, self.controller_config = config, controller

    def settings(self) -> dict:
        return {**asdict(self.config), "controller": asdict(self.controller_config)}

    def search(self, problem: SearchProblem, stop_after: int | None = None) -> SearchResult:
        refuse_unused_budgets(problem, self)
        space, cfg = problem.space, self.config
        if not isinstance(space, LayerwiseSpace):
            raise HwnasError(f"space {space.name!r} is not layer-wise; the enas strategy needs one (e.g. fbnet, tiny)")
        run_config = {"strategy": self.name, "space": space.name, "resolution": space.resolution,
                      "lut": problem.predictor.fingerprint(), "budget_ms": problem.budget_ms,
                      "data": problem.data.name, "num_classes": problem.data.num_classes, "seed": problem.seed,
                      "task_head": problem.task_head, **self.settings()}
        run_dir, state = open_run(problem.run_dir, problem.resume, CHECKPOINT, run_config,
                                  lambda path: load_checkpoint(path, CHECKPOINT_FORMAT), ignore=("epochs",))
        torch.manual_seed(problem.seed)
        self.problem, self.run_dir = problem, run_dir
        self.data = holdout_data(problem.data, cfg.holdout, problem.seed)
        self.net = Supernet(space, "hard")
        self.opt = torch.optim.SGD(self.net.weight_parameters(), lr=cfg.weight_lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay, nesterov=True)
        self.trainer = self.make_trainer(space, problem.seed)
        self.trials: list[dict] = []
        log, start, wall = [], 0, 0.0
        if state is not None:
            log, start, wall = restore_training(state, {"supernet": self.net, "optimizer": self.opt,
                                                        "controller": self.trainer.controller,
                                                        "controller_optimizer": self.trainer.optimizer})
            self.trainer.controller.generator.set_state(state["generator"])
            self.trainer.baseline, self.trainer.curve = state["baseline"], list(state["curve"])
            self.trials = list(state["trials"])
        steps = steps_per_epoch(len(self.data.train), cfg.batch_size, cfg.max_batches, drop_last=True)
        bar = tqdm(range(start, cfg.epochs), desc="enas", unit="epoch", initial=start, total=cfg.epochs,
                   disable=not problem.progress)
        finished = True
        for epoch in bar:
            if stop_after is not None and epoch - start >= stop_after:
                finished = False
                break
            t0 = time.perf_counter()
            loss = self._shared_epoch(epoch, steps, steps * cfg.epochs)
            points = [self._controller_step(epoch) for _ in range(cfg.controller_steps)]
            wall += time.perf_counter() - t0
            log.append({"epoch": epoch + 1, "loss": loss, "mean_reward": points[-1]["mean_reward"],
                        "entropy": points[-1]["entropy"], "wall_s": round(wall, 3)})
            bar.set_postfix(loss=f"{loss:.3f}", reward=f"{points[-1]['mean_reward']:.3f}")
            self._save(run_config, epoch + 1, log, wall)
        bar.close()
        return self._result(log, wall, finished and len(log) == cfg.epochs)

    def _sample_arch(self) -> tuple[list[int], float, Arch]:
        indices, log_prob = self.trainer.controller.sample()
        return indices, log_prob, self.to_arch(self.problem.space, indices)

    def _shared_epoch(self, epoch: int, steps: int, total: int) -> float:
        """SGD on the shared weights, each batch along a path the controller samples."""
        cfg, net = self.config, self.net
        net.train()
        loader = make_loader(self.data.train, cfg.batch_size, shuffle=True, seed=self.problem.seed, epoch=epoch,
                             drop_last=True)
        loss_sum = 0.0
        for i, (x, y) in enumerate(itertools.islice(loader, steps)):
            for group in self.opt.param_groups:
                group["lr"] = cosine_lr(cfg.weight_lr, epoch * steps + i, total)
            path, _, _ = self._sample_arch()
            loss = F.cross_entropy(net.forward_path(x, path), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            loss_sum += loss.item()
        return loss_sum / max(1, steps)

    @torch.no_grad()
    def _top1(self, batches, indices: list[int]) -> float:
        """Top-1 (%) of one path on held-out batches, with batch statistics (the shared batch-norm
        running statistics belong to no single path)."""
        self.net.train()
        correct = total = 0
        for x, y in batches:
            correct += (self.net.forward_path(x, indices).argmax(1) == y).sum().item()
            total += len(y)
        return 100.0 * correct / max(1, total)

    def _controller_step(self, epoch: int) -> dict:
        """One policy update: `controller.batch` samples, each rewarded on its own held-out batch."""
        batch = self.trainer.config.batch
        number = len(self.trials)
        loader = make_loader(self.data.val, self.config.batch_size, shuffle=True, seed=self.problem.seed + 1,
                             epoch=number)
        held_out = itertools.cycle(loader)
        samples = []
        for _ in range(batch):
            indices, log_prob, arch = self._sample_arch()
            top1 = self._top1([next(held_out)], indices)
            trial = self._trial(len(self.trials), arch, top1)
            self.trials.append(trial.to_dict())
            samples.append((indices, log_prob, trial.objective))
        actions, old, rewards = zip(*samples)
        point = self.trainer.update(list(actions), list(old), list(rewards))
        point.update(epoch=epoch + 1, trials=len(self.trials))
        return point

    def _trial(self, number: int, arch: Arch, top1: float) -> Trial:
        p, cfg = self.problem, self.config
        pred = p.predictor.predict(arch)
        violations = p.budgets.violations(pred.latency_ms, pred.peak_activation_bytes, pred.params)
        ratios = {k: 1.0 + v for k, v in violations.items() if k == "latency"}
        reward = mnas_reward(top1 / 100.0, ratios, cfg.reward, cfg.w)
        return Trial(number, arch, "complete", pred.latency_ms, pred.params, pred.peak_activation_bytes, 0,
                     {"top1": top1}, reward, violations, note="controller sample (one held-out batch)")

    def _save(self, run_config: dict, epoch: int, log: list, wall: float) -> None:
        t = self.trainer
        save_checkpoint(self.run_dir / CHECKPOINT, {
            "format": CHECKPOINT_FORMAT, "config": run_config, "epoch": epoch, "supernet": self.net.state_dict(),
            "optimizer": self.opt.state_dict(), "controller": t.controller.state_dict(),
            "controller_optimizer": t.optimizer.state_dict(), "generator": t.controller.generator.get_state(),
            "baseline": t.baseline, "curve": t.curve, "trials": self.trials, "rng": rng_state(), "log": log,
            "wall_s": wall})
        write_jsonl(self.run_dir / HISTORY, self.trials)
        write_jsonl(self.run_dir / "log.jsonl", log)
        atomic_write_json(self.run_dir / CURVE, {"strategy": self.name, "settings": self.settings(), "curve": t.curve})

    def _result(self, log: list, wall: float, finished: bool) -> SearchResult:
        """The best of `final_samples` controller samples, each repaired to the budget, scored on
        the same held-out batches."""
        p, cfg = self.problem, self.config
        batches = list(itertools.islice(make_loader(self.data.val, 256, shuffle=False), cfg.score_batches))
        candidates, seen = [], set()
        for _ in range(cfg.final_samples):
            indices, log_prob, arch = self._sample_arch()
            steps = []
            if p.budget_ms is not None:
                log_probs = self.trainer.controller.path_log_probs(indices)
                arch, steps = repair_to_budget(p.space, p.predictor, arch.choice_map, log_probs, p.budget_ms)
            if arch.hash in seen:
                continue
            seen.add(arch.hash)
            path = [d.choices.index(arch.choice_map[d.name]) for d in self.decisions]
            candidates.append(Candidate(arch, p.predictor.latency_ms(arch), self._top1(batches, path), log_prob,
                                        tuple(steps), note="controller sample"))
        best = max(candidates, key=lambda c: c.score)
        details = {"space": p.space.name, "resolution": p.space.resolution, "lut": p.lut_source,
                   "epochs_done": len(log), "epochs": cfg.epochs, "log": log, "controller_curve": self.trainer.curve,
                   "best_score": best.score, "controller_samples": len(self.trials)}
        return SearchResult(self.name, best.arch, best.predicted_ms, p.budget_ms, best.budget_steps,
                            tuple(sorted(candidates, key=lambda c: -c.score)), wall, finished, details)
