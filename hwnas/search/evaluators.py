"""Candidate evaluators behind one interface: a batch of requests in, outcomes out as they finish.

An evaluator is a picklable object holding its data and settings (no global RNG state: each
request carries its seed), so that a later change can hand batches to many workers. Here a batch
runs in order in this process. `scratch` trains each candidate briefly (MnasNet's proxy task);
`shared` (spos.py) scores it with the weights of a one-shot supernet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from torch.utils.data import Subset

from ..core.arch import Arch
from ..train.data import ImageData, split_train, without_augmentation
from ..errors import HwnasError
from ..options import Options, option, reads
from ..train.loop import TrainConfig, train_arch

#: the group every evaluator's flags are listed under
TITLE = "evaluators"
HOLDOUT_HELP = "share of the training set candidates are scored on (default 0.2)"


def check_holdout(holdout: float) -> None:
    if not 0.0 < holdout < 1.0:
        raise HwnasError(f"--holdout must be between 0 and 1, got {holdout}")


@dataclass(frozen=True)
class EvalRequest:
    """One candidate to score. A Lamarckian strategy (nash, lemonade) adds `parent_weights` (the
    trained weights file of the parent the candidate inherits from, through network morphisms) and
    `weights_out` (where the candidate's trained weights go, for its own children); an evaluator
    that cannot train from inherited weights (`inherits` False) scores the architecture alone."""

    number: int
    arch: Arch
    seed: int
    parent_weights: str | None = None
    weights_out: str | None = None


@dataclass(frozen=True)
class EvalOutcome:
    """`metrics` ({'top1': %}) when the evaluation finished, else None and `error`."""

    number: int
    metrics: dict | None
    error: str
    wall_s: float


class Evaluator(ABC):
    """Scores candidate architectures (top-1 %, higher is better)."""

    name = ""
    #: trains from a parent's weights and saves the trained weights (EvalRequest.parent_weights, weights_out)
    inherits = False

    def prepare(self, progress: bool = False) -> None:
        """One-time set-up before the first batch (e.g. training a supernet); default none."""

    @abstractmethod
    def score(self, arch: Arch, seed: int) -> float:
        """Top-1 (%) of `arch`; `seed` fixes every random choice of the evaluation."""

    def score_request(self, request: EvalRequest) -> float:
        """Top-1 (%) of a request: `score` of its architecture, unless the evaluator inherits."""
        return self.score(request.arch, request.seed)

    def evaluate_batch(self, requests: Iterable[EvalRequest]) -> Iterator[EvalOutcome]:
        """Outcomes in the order they finish (here: the order given). A candidate that raises is a
        failed outcome, not a crash; an HwnasError (bad set-up, not a bad candidate) propagates."""
        for request in requests:
            yield evaluate_request(self, request)

    def evaluate(self, arch: Arch, seed: int = 0) -> float:
        """One candidate, synchronously (raises what the evaluation raises)."""
        return self.score(arch, seed)

    def describe(self) -> dict:
        return {"evaluator": self.name}

    def result_details(self, arch: Arch) -> dict:
        """What result.json adds about the result beyond its score (a benchmark's final figures)."""
        return {}


def evaluate_request(evaluator: Evaluator, request: EvalRequest) -> EvalOutcome:
    """A module-level function (picklable) that a worker pool can map over requests."""
    t0 = time.perf_counter()
    try:
        top1 = float(evaluator.score_request(request))
        if not math.isfinite(top1):
            raise FloatingPointError(f"top-1 is {top1} (the training diverged)")
    except (KeyboardInterrupt, HwnasError):
        raise
    except Exception as exc:  # a failed trial is a record, not a crash (Optuna)
        return EvalOutcome(request.number, None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)
    return EvalOutcome(request.number, {"top1": top1}, "", time.perf_counter() - t0)


@dataclass(frozen=True)
class ScratchOptions(Options):
    """`scratch`: each candidate trains `epochs` on 1 - `holdout` of the training set, scored on the rest."""

    title = TITLE
    epochs: int = reads("epochs", 10)
    batch_size: int = reads("batch_size", 64)
    max_batches: int | None = reads("max_batches", None)
    holdout: float = option(0.2, "--holdout", HOLDOUT_HELP, type=float)

    def __post_init__(self):
        check_holdout(self.holdout)


class ScratchEvaluator(Evaluator):
    """Top-1 (%) on `data.val` after a short from-scratch training on `data.train`.

    Give it a held-out part of the training set as `data.val` when the score selects an
    architecture (see `holdout_evaluator`), so that the val split stays unseen by the search.
    A request's seed seeds the training, unless `fixed_seed` (then every candidate trains alike).
    """

    name = "scratch"
    inherits = True

    def __init__(self, data: ImageData, config: TrainConfig, fixed_seed: bool = False):
        self.data = data
        self.config = config
        self.fixed_seed = fixed_seed

    @classmethod
    def from_options(cls, options: ScratchOptions, problem) -> "ScratchEvaluator":
        return cls(holdout_data(problem.data, options.holdout, problem.seed),
                   TrainConfig(epochs=options.epochs, batch_size=options.batch_size, max_batches=options.max_batches))

    def score(self, arch: Arch, seed: int) -> float:
        return self.score_request(EvalRequest(0, arch, seed))

    def score_request(self, request: EvalRequest) -> float:
        """Train from scratch, or from the weights the candidate inherits from its parent (the
        parent's trained weights carried over by hwnas.core.morphisms); save them if asked."""
        cfg = self.config if self.fixed_seed else TrainConfig(**{**self.config.__dict__, "seed": request.seed})
        initial = None
        if request.parent_weights is not None:
            initial = inherited_state(request.parent_weights, request.arch, self.data.num_classes, request.seed)
        return train_arch(request.arch, self.data, cfg, initial_state=initial, weights_out=request.weights_out).top1

    def describe(self) -> dict:
        return {"evaluator": self.name, **self.config.__dict__, "fixed_seed": self.fixed_seed}


def inherited_state(parent_weights: str | os.PathLike, arch: Arch, num_classes: int, seed: int) -> dict:
    """The initial state dict of `arch` inherited from a parent's trained weights file."""
    from ..core.morphisms import child_state
    from ..core.spaces import get_space
    from ..core.weights import load_weights

    parent = load_weights(parent_weights)
    space = get_space(arch.space, num_classes=num_classes)
    state, _ = child_state(space, parent["arch"], parent["state_dict"], arch, seed)
    return state


def holdout_data(data: ImageData, holdout: float, seed: int) -> ImageData:
    """`data` whose train split is `1 - holdout` of the training set and whose val split is the
    rest (split by `seed`), without augmentation: selecting an architecture on it never sees
    `data.val`."""
    fit, held_out = split_train(data.train, holdout, seed)
    # the held-out part in a seeded random order, not class by class: a capped score (the shared
    # evaluator's --score-batches) then reads a sample of every class, not the first classes only
    order = np.random.default_rng(seed).permutation(len(held_out.indices))
    held_out = Subset(held_out.dataset, [held_out.indices[i] for i in order])
    return dataclasses.replace(data, name=f"{data.name}-holdout", train=fit, val=without_augmentation(held_out))


def holdout_evaluator(data: ImageData, holdout: float, seed: int, config: TrainConfig) -> ScratchEvaluator:
    """A ScratchEvaluator on `holdout_data`; every candidate trains with `config.seed`."""
    return ScratchEvaluator(holdout_data(data, holdout, seed), config, fixed_seed=True)


class SyntheticEvaluator(Evaluator):
    """A deterministic additive score for contract tests and smoke runs, not an accuracy: each
    (decision, choice) has a fixed pseudo-random worth in [0, 1], the score is 100 x their mean.
    Architectures whose hash falls in `fail_fraction` raise (to exercise failed trials);
    `delay_s` makes each evaluation take time (to interrupt a run mid-way). To exercise system
    failures under Ray, the next `crash_fraction` of hashes kill their own worker process
    (os._exit) the first `crash_times` times they are evaluated, counted by files in `crash_dir`."""

    name = "synthetic"

    def __init__(self, fail_fraction: float = 0.0, delay_s: float = 0.0, crash_fraction: float = 0.0,
                 crash_times: int = 1, crash_dir: str | None = None):
        if crash_fraction and crash_dir is None:
            raise HwnasError("SyntheticEvaluator: crash_fraction needs a crash_dir to count the crashes in")
        self.fail_fraction = fail_fraction
        self.delay_s = delay_s
        self.crash_fraction, self.crash_times, self.crash_dir = crash_fraction, crash_times, crash_dir

    def _crash_if_due(self, arch: Arch, position: float) -> None:
        if not self.fail_fraction <= position < self.fail_fraction + self.crash_fraction:
            return
        for n in range(self.crash_times):
            marker = Path(self.crash_dir) / f"{arch.hash}.{n}"
            try:
                marker.touch(exist_ok=False)
            except FileExistsError:
                continue
            os._exit(13)  # as a worker killed mid-evaluation: no exception, no cleanup

    @staticmethod
    def worth(decision: str, choice: str) -> float:
        digest = hashlib.sha256(f"{decision}={choice}".encode()).digest()
        return int.from_bytes(digest[:4], "little") / 2 ** 32

    def score(self, arch: Arch, seed: int) -> float:
        if self.delay_s:
            time.sleep(self.delay_s)
        position = int(arch.hash[:8], 16) / 16 ** 8
        if position < self.fail_fraction:
            raise RuntimeError(f"synthetic failure of {arch.hash}")
        self._crash_if_due(arch, position)
        return 100.0 * sum(self.worth(d, c) for d, c in arch.choices) / len(arch.choices)

    def describe(self) -> dict:
        return {"evaluator": self.name, "fail_fraction": self.fail_fraction}
