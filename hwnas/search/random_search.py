"""The `random` strategy: sample architectures uniformly, keep those whose predicted latency meets
the budget, score each with an evaluator (by default a short from-scratch training, scored on a
held-out 20% of the training set), return the best. A baseline for every other strategy.

Resumable: `state.json` records every finished trial; a failed trial is recorded, not fatal.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm

from ..arch import Arch, arch_from_dict
from ..data import ImageData
from ..errors import HwnasError
from ..jsonio import atomic_write_json, read_json
from ..runs import check_same_config, prepare_run_dir, write_jsonl
from ..training import TrainConfig
from .base import Candidate, Evaluator, SearchProblem, SearchResult, SearchStrategy, write_result
from .budget import BudgetError
from .evaluators import holdout_evaluator

STATE = "state.json"


@dataclass(frozen=True)
class RandomConfig:
    samples: int = 8
    epochs: int = 3  # short training per sampled architecture
    batch_size: int = 64
    lr: float = 0.025
    holdout: float = 0.2
    max_draws: int = 20_000
    time_limit_s: float | None = None  # no new trial starts after this much wall time
    max_batches: int | None = None

    def __post_init__(self):
        if self.samples < 1:
            raise HwnasError(f"--samples must be >= 1, got {self.samples}")


def sample_feasible(problem: SearchProblem, count: int, seed: int, max_draws: int) -> list[Arch]:
    """Up to `count` distinct uniform samples whose predicted latency meets the budget."""
    rng = random.Random(seed)
    found: dict[str, Arch] = {}
    for _ in range(max_draws):
        arch = Arch.create(problem.space, problem.space.sample(rng))
        if problem.budget_ms is None or problem.predictor.latency_ms(arch) <= problem.budget_ms:
            found.setdefault(arch.hash, arch)
            if len(found) >= count:
                break
    if not found:
        raise BudgetError(f"none of {max_draws} random architectures meets the budget {problem.budget_ms:.4g} ms; "
                          f"raise the budget or use --strategy fbnet")
    return list(found.values())


class RandomStrategy(SearchStrategy):
    name = "random"

    def __init__(self, config: RandomConfig, evaluator: Evaluator | None = None):
        self.config = config
        self.evaluator = evaluator

    @classmethod
    def add_arguments(cls, group) -> None:
        group.add_argument("--samples", type=int, default=8, help="random architectures under the budget to evaluate")
        group.add_argument("--time-limit", type=float, default=None,
                           help="seconds after which no new trial starts (random)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "RandomStrategy":
        return cls(RandomConfig(samples=args.samples, epochs=args.epochs, batch_size=args.batch_size,
                                time_limit_s=args.time_limit, max_batches=args.max_batches))

    def default_evaluator(self, data: ImageData, seed: int) -> Evaluator:
        train_cfg = TrainConfig(epochs=self.config.epochs, batch_size=self.config.batch_size, lr=self.config.lr,
                                seed=seed, max_batches=self.config.max_batches)
        return holdout_evaluator(data, self.config.holdout, seed, train_cfg)

    def search(self, problem: SearchProblem, stop_after: int | None = None) -> SearchResult:
        cfg = self.config
        run_config = {"strategy": self.name, "space": problem.space.name, "resolution": problem.space.resolution,
                      "budget_ms": problem.budget_ms, "data": problem.data.name, "seed": problem.seed,
                      "train_resolution": problem.data.resolution, **asdict(cfg)}
        run_dir, has_state = prepare_run_dir(problem.run_dir, problem.resume, STATE)
        trials: list[dict] = []
        wall_before = 0.0
        if has_state:
            state = read_json(run_dir / STATE, "random-search state")
            check_same_config(state["config"], run_config, run_dir, ignore=("time_limit_s",))
            trials, wall_before = state["trials"], state["wall_s"]
        archs = sample_feasible(problem, cfg.samples, problem.seed, cfg.max_draws)
        evaluator = self.evaluator or self.default_evaluator(problem.data, problem.seed)
        t0 = time.perf_counter()
        todo = archs[len(trials):] if stop_after is None else archs[len(trials):stop_after]
        for arch in tqdm(todo, desc="random search", unit="arch", disable=not problem.progress):
            if cfg.time_limit_s is not None and wall_before + time.perf_counter() - t0 >= cfg.time_limit_s and trials:
                break
            try:
                score, status, note = evaluator.evaluate(arch), "complete", ""
            except (KeyboardInterrupt, HwnasError):
                raise
            except Exception as exc:  # a failed trial is a record, not a crash (Optuna)
                score, status, note = None, "failed", f"{type(exc).__name__}: {exc}"
            trial = Candidate(arch, problem.predictor.latency_ms(arch), score, status=status, note=note).to_dict()
            trials.append(trial)
            wall = round(wall_before + time.perf_counter() - t0, 3)
            atomic_write_json(run_dir / STATE, {"config": run_config, "trials": trials, "wall_s": wall})
            write_jsonl(run_dir / "trials.jsonl", trials)
        wall = wall_before + time.perf_counter() - t0
        candidates = [Candidate(arch_from_dict(t["arch"]), t["predicted_ms"], t["score"], status=t["status"],
                                note=t["note"]) for t in trials]
        scored = [c for c in candidates if c.score is not None]
        if not scored:
            raise HwnasError(f"no random trial finished successfully ({len(candidates)} failed); see {run_dir / 'trials.jsonl'}")
        best = max(scored, key=lambda c: c.score)
        result = SearchResult(self.name, best.arch, best.predicted_ms, problem.budget_ms, (), tuple(candidates), wall,
                              finished=len(trials) >= len(archs) or cfg.time_limit_s is not None,
                              details={"space": problem.space.name, "data": problem.data.name,
                                       "best_score": best.score, "trials": len(trials), "lut": problem.lut_source})
        write_result(run_dir, result)
        return result
