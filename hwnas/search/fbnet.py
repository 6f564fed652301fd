"""The `fbnet` strategy: differentiable supernet search (Wu et al., FBNet, CVPR 2019).

Each epoch trains the supernet's weights on one split of the training data (80%), then, after
`warmup_epochs`, the architecture parameters on the other (20%) with a latency-aware loss fed by
the LUT; the Gumbel-softmax temperature is annealed per epoch (5.0 * 0.956^epoch). The result is
the argmax of the learned distribution (fitted to the budget: repaired if over it, filled if well
under it) and the k most probable architectures, scored one-shot on the architecture split with the
supernet's shared weights. With `finalists` N > 0 the search ends as FBNet's does: the argmax and
N - 1 samples of the learned distribution (each fitted to the budget) are trained from scratch for a
few epochs, and the best on held-out data is the result.

The parts: fbnet_train.py trains the supernet (weight and architecture steps, checkpoints),
fbnet_finish.py derives the result (argmax fitted to the budget, top-k, finalists).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..train.data import ImageData
from ..errors import HwnasError
from ..options import Options, option, reads
from ..train import ddp
from ..core.spaces import LayerwiseSpace
from ..train.loop import TrainConfig
from .base import SearchProblem, SearchResult, SupernetStrategy
from .evaluators import Evaluator, holdout_evaluator
from .fbnet_finish import finalize, pick_finalist
from .fbnet_train import SupernetTraining, temperature_at  # noqa: F401 (temperature_at: part of the API)
from .latency_loss import LATENCY_LOSSES
from .supernet import MIXED_OPS

LAT_WEIGHTS = ("sample", "probs")


@dataclass(frozen=True)
class FBNetConfig(Options):
    title = "fbnet strategy"
    epochs: int = reads("epochs", 10)
    batch_size: int = reads("batch_size", 64)
    weight_lr: float = option(
        0.025, "--weight-lr", type=float, help=(
            "SGD learning rate of the supernet weights, cosine (0.1 per 256 images)"))
    weight_momentum: float = 0.9
    weight_decay: float = 4e-5
    arch_lr: float = option(0.01, "--arch-lr", type=float, help="Adam learning rate of the architecture parameters")
    arch_weight_decay: float = 5e-4
    temperature: float = option(
        5.0, "--temperature", type=float, help=(
            "initial Gumbel-softmax temperature (FBNet: 5.0)"))
    temperature_decay: float = option(
        0.956, "--temperature-decay", type=float, help=(
            "temperature factor per epoch (FBNet: 0.956). Annealing faster in a short run hurts: "
            "a cold soft supernet behaves like the hard one and its weights stop learning"))
    # None: epochs // 5, at least 1 when epochs > 1 (FBNet: 10 of 90)
    warmup_epochs: int | None = option(
        None, "--warmup-epochs", type=int, help=(
            "epochs of weight training before the architecture trains (default: epochs // 5, "
            "at least 1 when --epochs > 1)"))
    arch_split: float = option(
        0.2, "--arch-split", type=float, help=(
            "fraction of the training set that trains the architecture parameters (FBNet: 0.2)"))
    mixed_op: str = option(
            "soft", "--mixed-op", choices=MIXED_OPS, help=(
            "soft: FBNet's Gumbel-softmax-weighted sum of all candidates (default); hard: only the "
            "sampled candidate runs (GDAS-style straight-through): ~7x cheaper per step, but a "
            "supernet whose path switches every batch learns far more slowly (see supernet.py)"))
    # None: "budget" with a budget, "fbnet" without
    latency_loss: str | None = option(
        None, "--latency-loss", choices=LATENCY_LOSSES, help=(
            "fbnet: CE*a*log(1+LAT)^b; budget: CE + w*(max(0, LAT/budget-1) + u*max(0, 1-LAT/budget)); "
            "default: budget when --latency-budget is given, fbnet otherwise"))
    lat_alpha: float = option(0.2, "--lat-alpha", type=float, help="alpha of the fbnet latency loss (FBNet: 0.2)")
    lat_beta: float = option(0.6, "--lat-beta", type=float, help="beta of the fbnet latency loss (FBNet: 0.6)")
    penalty_weight: float = option(5.0, "--penalty-weight", type=float, help="weight w of the budget hinge")
    lat_weights: str = option(
            "sample", "--lat-weights", choices=LAT_WEIGHTS, help=(
            "what the latency term weighs each candidate's latency by: sample (FBNet): the "
            "Gumbel-softmax weights of the same forward pass, so its gradient is damped by the "
            "temperature as the cross-entropy's is; probs: P_theta (at --lat-temperature), "
            "whose gradient is ~temperature times stronger and drowns the accuracy signal"))
    lat_temperature: float = option(
        1.0, "--lat-temperature", type=float, help=(
            "with --lat-weights probs: the temperature of P_theta for the latency term; 1 is "
            "P_theta itself, below 1 sharpens it toward the argmax"))
    under_weight: float = option(
        0.5, "--under-weight", type=float, help=(
            "fraction of the hinge weight that pulls the expected latency up toward the budget "
            "from below (0: none, 1: TuNAS's absolute reward)"))
    top_k: int = option(5, "--top-k", type=int, help="also report the k most probable architectures")
    fill_budget: bool = option(
        True, "--no-fill-budget", dest="fill_budget", action="store_false", help=(
            "keep the argmax when it is under the budget (default: fill it toward the budget with "
            "the LUT-guided upgrades the distribution finds cheapest, see budget.fill_budget)"))
    # weight batches per epoch (a random subset each epoch)
    max_batches: int | None = reads("max_batches", None)
    # 0: the result is the fitted argmax; N: best of the argmax + N-1 samples, short-trained
    finalists: int = option(
        0, "--finalists", type=int, help=(
            "train the argmax and N-1 samples of the learned distribution from scratch for "
            "--finalist-epochs (on the weight split, scored on the architecture split) and return "
            "the best, as FBNet does; 0 (default) returns the argmax. Resuming a finished search "
            "with a larger N trains only the new finalists"))
    finalist_epochs: int = option(3, "--finalist-epochs", type=int, help="training epochs of each finalist")

    def __post_init__(self):
        if self.epochs < 1:
            raise HwnasError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise HwnasError(f"--batch-size must be >= 2 (batch norm), got {self.batch_size}")
        if not self.temperature > 0 or not 0 < self.temperature_decay <= 1:
            raise HwnasError("--temperature must be > 0 and --temperature-decay in (0, 1]")
        if self.mixed_op not in MIXED_OPS:
            raise HwnasError(f"--mixed-op must be one of {', '.join(MIXED_OPS)}")
        if self.latency_loss is not None and self.latency_loss not in LATENCY_LOSSES:
            raise HwnasError(f"--latency-loss must be one of {', '.join(LATENCY_LOSSES)}")
        if self.warmup_epochs is not None and not 0 <= self.warmup_epochs < self.epochs:
            raise HwnasError(f"--warmup-epochs must be in 0..{self.epochs - 1} (the arch must train at least one epoch)")
        if self.lat_weights not in LAT_WEIGHTS:
            raise HwnasError(f"--lat-weights must be one of {', '.join(LAT_WEIGHTS)}, got {self.lat_weights!r}")
        if not self.lat_temperature > 0:
            raise HwnasError(f"--lat-temperature must be > 0, got {self.lat_temperature}")
        if not 0.0 <= self.under_weight <= 1.0:
            raise HwnasError(f"--under-weight must be in 0..1, got {self.under_weight}")
        if self.top_k < 0:
            raise HwnasError("--top-k must be >= 0")
        if self.finalists < 0:
            raise HwnasError(f"--finalists must be >= 0, got {self.finalists}")
        if self.finalist_epochs < 1:
            raise HwnasError(f"--finalist-epochs must be >= 1, got {self.finalist_epochs}")

    @property
    def warmup(self) -> int:
        """Weight-only epochs first: architecture steps on an untrained supernet follow noise."""
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return max(1, self.epochs // 5) if self.epochs > 1 else 0

    def loss_kind(self, budget_ms: float | None) -> str:
        if self.latency_loss is not None:
            return self.latency_loss
        return "budget" if budget_ms is not None else "fbnet"


class FBNetStrategy(SupernetStrategy):
    name = "fbnet"
    uses_evaluator = False

    def __init__(self, config: FBNetConfig = FBNetConfig(), evaluator: Evaluator | None = None):
        """`evaluator` scores the finalists (default: `finalist_epochs` of training on the weight
        split, top-1 on the architecture split)."""
        self.config = config
        self.evaluator = evaluator

    records = (FBNetConfig,)

    def settings(self) -> dict:
        return asdict(self.config)

    def default_evaluator(self, data: ImageData, seed: int) -> Evaluator:
        """Short training on the weight split, top-1 on the architecture split (val stays unseen)."""
        return holdout_evaluator(data, self.config.arch_split, seed,
                                 TrainConfig(epochs=self.config.finalist_epochs, batch_size=self.config.batch_size,
                                             seed=seed))

    def search(self, problem: SearchProblem, stop_after: int | None = None) -> SearchResult:
        """Train the supernet (or resume it), derive the result, then the finalists if asked."""
        cfg, space = self.config, problem.space
        if not isinstance(space, LayerwiseSpace):
            raise HwnasError(f"space {space.name!r} is not layer-wise; the fbnet strategy needs one (e.g. fbnet, tiny)")
        run_config = {"strategy": self.name, "space": space.name, "resolution": space.resolution,
                      "lut": problem.predictor.fingerprint(), "budget_ms": problem.budget_ms,
                      "data": problem.data.name, "num_classes": problem.data.num_classes,
                      "train_resolution": problem.data.resolution, "seed": problem.seed,
                      "loss_kind": cfg.loss_kind(problem.budget_ms), "task_head": problem.task_head, **asdict(cfg)}
        training = SupernetTraining(problem, cfg, run_config)
        training.train(stop_after)
        ddp.leave_unless_main()  # under torchrun: the result is derived (and written) by process 0 alone
        result = finalize(training.net, problem, cfg, training.log, training.wall, training.finished, self.name)
        if training.finished and cfg.finalists > 0:
            evaluator = self.evaluator or self.default_evaluator(problem.data, problem.seed)
            result = pick_finalist(training.net, problem, cfg, result, evaluator, self.evaluator is not None,
                                   training.run_dir)
        if training.log:
            from .plots import plot_distribution, plot_latency

            log, net = training.log, training.net
            plot_distribution(net.layer_names, net.candidates, log[-1]["probs"],
                              training.run_dir / "arch_distribution.png",
                              title=f"{space.name}: architecture distribution after epoch {log[-1]['epoch']}")
            plot_latency(log, problem.budget_ms, training.run_dir / "latency.png")
        return result
