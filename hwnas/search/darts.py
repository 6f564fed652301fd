"""The `darts` strategy: differentiable architecture search on a cell space (Liu et al., DARTS,
ICLR 2019), as the NAS-Bench-201 paper runs it (Dong & Yang, ICLR 2020, its Table 5: DARTS-V1 54.30
and DARTS-V2 54.30 CIFAR-10 test accuracy, a cell of skip connections: DARTS's collapse).

A supernet of mixed edges (darts_supernet.py) trains its weights and its architecture parameters
alternately, step by step, on two halves of the training set (darts_train.py): weights by SGD
(momentum 0.9, cosine lr 0.025 -> 0.001, wd 3e-4, gradient clipping 5), alphas by Adam (lr 3e-4,
betas (0.5, 0.999), wd 1e-3), first order by default or second order (`--darts-order 2`). With a
`--latency-budget`, the expected latency (sum over edges of softmax(alpha) . op latency, from the
LUT: decision_costs.py) enters the architecture loss as the budget hinge of latency_loss.py. The
derived cell is the argmax of every edge (NB201 keeps one op per edge), fitted to the budget as
fbnet's argmax is (repaired by LUT-guided downgrades if over it, filled by upgrades if well under
it); on nb201 its NAS-Bench-201 figures are looked up and reported.

On the darts cell spaces (darts, darts_small, darts_tiny) the supernet is DARTS's own search network
with separate normal and reduction alphas (darts_supernet.DartsCellSupernet), the derived cells
follow DARTS's top-2 rule, the expected latency is over the 28 edges (decision_costs.edge_costs)
and the repair works on the exact costs of single swaps (budget.py), see docs/search.md.

`--darts-variant darts-minus` is DARTS- (Chu et al., "DARTS-: Robustly Stepping out of Performance
Collapse Without Indicators", ICLR 2021): every mixed edge gets an auxiliary skip connection,
`beta * x` added to its output, with beta decaying linearly from `--aux-skip` (1.0) to 0 over the
search. The skip path's gradient advantage (the cause of the collapse to parameter-free cells, in
their analysis) is taken by the auxiliary path, which vanishes by the end, so the candidate
skip_connect no longer has to win to let gradients through. It costs one addition per edge.

`--darts-variant darts-pt` is DARTS-PT (Wang et al., "Rethinking Architecture Selection in
Differentiable NAS", ICLR 2021): the supernet trained as DARTS trains it, the cell then selected
edge by edge by the accuracy the supernet loses when an op is masked out, with a short fine-tune
after each edge (darts_pt.py); nb201 only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..core.arch import Arch
from ..core.edges import edges
from ..core.spaces.darts import DartsSpace
from ..errors import HwnasError, LutError
from ..options import Options, option, reads
from .base import Candidate, SearchProblem, SearchResult, SupernetStrategy
from .budget import fit_to_budget
from .fbnet_finish import report_fit
from .darts_train import PARAMETER_FREE, DartsTraining
from .decision_costs import decision_costs, edge_costs

VARIANTS = ("darts", "darts-minus", "darts-pt")
#: NAS-Bench-201's class counts -> the dataset whose figures the derived cell reports
BENCHMARK_DATASETS = {10: "cifar10", 100: "cifar100", 120: "imagenet16-120"}


@dataclass(frozen=True)
class DARTSConfig(Options):
    """CPU-sized defaults: NB201's width (16 channels in the first stage), 1 cell per stage (NB201
    5), --epochs 10 of the full halves (NB201 50) in batches of 64: 780 steps of ~1.8 CPU-s, about
    24 CPU-minutes on the 10,000-image CIFAR-10 subset, one thread (see docs/search.md)."""

    title = "darts strategy"
    epochs: int = reads("epochs", 10)
    batch_size: int = reads("batch_size", 64)
    max_batches: int | None = reads("max_batches", None)
    variant: str = option("darts", "--darts-variant", choices=VARIANTS, help=(
        "darts (default); darts-minus: DARTS- (Chu et al., ICLR 2021), an auxiliary skip connection on "
        "every edge whose weight decays linearly from --aux-skip to 0, against the collapse to skip cells; "
        "darts-pt: DARTS-PT (Wang et al., ICLR 2021), the cell selected by how much accuracy the supernet "
        "loses without each op, edge by edge (nb201)"))
    order: int = option(1, "--darts-order", type=int, metavar="{1,2}", help=(
        "1 (default): architecture gradient at the current weights; 2: DARTS's second-order "
        "(unrolled) gradient: a search step costs ~2.7x (4.8 instead of 1.8 CPU-s at the defaults)"))
    channels: int = option(16, "--darts-channels", type=int, help=(
        "darts: supernet width of the first stage, doubled per stage (default 16, NB201's)"))
    cells: int = option(1, "--darts-cells", type=int, help=(
        "darts: mixed cells per stage (default 1; NB201's 5)"))
    weight_lr: float = option(0.025, "--weight-lr", type=float, help=(
        "SGD learning rate of the supernet weights, cosine (0.1 per 256 images)"))
    weight_lr_min: float = 0.001
    weight_momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = option(3e-4, "--arch-lr", type=float, help="Adam learning rate of the architecture parameters")
    arch_weight_decay: float = 1e-3
    aux_skip: float = option(1.0, "--aux-skip", type=float, help=(
        "darts-minus: initial weight of the auxiliary skip connection (DARTS-: 1.0), decaying linearly to 0"))
    pt_batches: int = option(8, "--pt-batches", type=int, help=(
        "darts-pt: batches of the architecture half on which each masked op's accuracy is measured (default 8)"))
    pt_tune_steps: int = option(10, "--pt-tune-steps", type=int, help=(
        "darts-pt: weight steps of fine-tuning after each projected edge (default 10)"))
    penalty_weight: float = option(5.0, "--penalty-weight", type=float, help="weight w of the budget hinge")
    under_weight: float = option(0.5, "--under-weight", type=float, help=(
        "fraction of the hinge weight that pulls the expected latency up toward the budget "
        "from below (0: none, 1: TuNAS's absolute reward)"))
    fill_budget: bool = option(
        True, "--no-fill-budget", dest="fill_budget", action="store_false", help=(
            "keep the argmax when it is under the budget (default: fill it toward the budget with "
            "the LUT-guided upgrades the distribution finds cheapest, see budget.fill_budget)"))

    def __post_init__(self):
        if self.epochs < 1:
            raise HwnasError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise HwnasError(f"--batch-size must be >= 2 (batch norm), got {self.batch_size}")
        if self.variant not in VARIANTS:
            raise HwnasError(f"--darts-variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.order not in (1, 2):
            raise HwnasError(f"--darts-order must be 1 or 2, got {self.order}")
        if self.channels < 1 or self.cells < 1:
            raise HwnasError("--darts-channels and --darts-cells must be >= 1")
        if not self.weight_lr > 0 or not self.arch_lr > 0:
            raise HwnasError("--weight-lr and --arch-lr must be > 0")
        if self.pt_batches < 1 or self.pt_tune_steps < 0:
            raise HwnasError(f"--pt-batches must be >= 1 and --pt-tune-steps >= 0, got {self.pt_batches} "
                             f"and {self.pt_tune_steps}")
        if self.aux_skip < 0:
            raise HwnasError(f"--aux-skip must be >= 0, got {self.aux_skip}")
        if not 0.0 <= self.under_weight <= 1.0:
            raise HwnasError(f"--under-weight must be in 0..1, got {self.under_weight}")

    @property
    def stage_channels(self) -> tuple[int, int, int]:
        return (self.channels, 2 * self.channels, 4 * self.channels)


class DARTSStrategy(SupernetStrategy):
    name = "darts"
    uses_evaluator = False
    records = (DARTSConfig,)

    def __init__(self, config: DARTSConfig = DARTSConfig()):
        self.config = config

    def settings(self) -> dict:
        return asdict(self.config)

    def search(self, problem: SearchProblem, stop_after: int | None = None) -> SearchResult:
        """Train the supernet (or resume it), then derive, repair and look up the cell."""
        cfg, space = self.config, problem.space
        edges(space)  # refuses a space that is not a cell space
        if cfg.variant == "darts-pt" and isinstance(space, DartsSpace):
            raise HwnasError(f"--darts-variant darts-pt selects one op per edge (nb201); {space.name} cells also "
                             "choose their inputs: use --darts-variant darts or darts-minus there")
        if problem.data is None:
            raise HwnasError("--strategy darts trains a supernet: give --data DIR (e.g. ../shared/data/cifar10)")
        costs = self.latency_costs(problem)
        run_config = {"strategy": self.name, "space": space.name, "resolution": space.resolution,
                      "lut": problem.predictor.fingerprint(), "budget_ms": problem.budget_ms,
                      "data": problem.data.name, "num_classes": problem.data.num_classes,
                      "train_resolution": problem.data.resolution, "seed": problem.seed,
                      **{k: v for k, v in asdict(cfg).items()  # darts-pt's settings are none of another run's
                         if cfg.variant == "darts-pt" or not k.startswith("pt_")}}
        training = DartsTraining(problem, cfg, run_config, costs)
        training.train(stop_after)
        projection = None
        if cfg.variant == "darts-pt" and training.finished:
            from .darts_pt import Projection

            projection = Projection(training, cfg.pt_batches, cfg.pt_tune_steps)
            projection.run(problem.progress)
        result = derive(training, problem, self.name, projection)
        if training.log:
            from .plots import plot_edge_probabilities, plot_latency

            net = training.net
            plot_edge_probabilities(training.log, net.edge_names, net.candidates,
                                    training.run_dir / "alphas.png",
                                    title=f"{cfg.variant} on {space.name}: softmax(alpha) per edge")
            if costs is not None:
                plot_latency(training.log, problem.budget_ms, training.run_dir / "latency.png")
        return result

    @staticmethod
    def latency_costs(problem: SearchProblem):
        """The additive latency model; required with a budget, else None where the model has none."""
        try:
            if isinstance(problem.space, DartsSpace):
                return edge_costs(problem.predictor)
            return decision_costs(problem.predictor)
        except LutError:
            if problem.budget_ms is not None:
                raise
            return None


def derive(training: DartsTraining, problem: SearchProblem, strategy: str, projection=None) -> SearchResult:
    """The argmax cell (DARTS-PT's projected cell when `projection` is given), repaired if over the
    budget, with its benchmark figures and the run's facts."""
    net, cfg, log = training.net, training.cfg, training.log
    space, predictor, budget = problem.space, problem.predictor, problem.budget_ms
    argmax_choices = net.argmax_choices() if projection is None else projection.choices
    argmax = Arch.create(space, argmax_choices)
    log_probs = net.decision_log_probs(argmax_choices)  # per decision of the space, in its order
    arch, steps = argmax, []
    if budget is not None:
        # over the budget: repaired; well under it (a latency hinge pushes every edge of a diffuse
        # distribution toward its cheapest op, so the argmax can fall far below): filled, as fbnet's
        arch, steps = fit_to_budget(space, predictor, argmax_choices, log_probs, budget, fill=cfg.fill_budget)
        report_fit(problem, argmax, steps)
    joint = sum(lp[space.decision(name).choices.index(arch.choice_map[name])]
                for lp, name in zip(log_probs, space.decision_names))
    probs = {name: dict(zip(cands, [round(float(v), 5) for v in p]))
             for name, cands, p in zip(net.edge_names, net.candidates, [p.detach() for p in net.probabilities()])}
    free = sum(op in PARAMETER_FREE for op in arch.choice_map.values())
    details = {
        "space": space.name, "resolution": space.resolution, "lut": problem.lut_source, "variant": cfg.variant,
        "order": cfg.order, "epochs_done": log[-1]["epoch"] if log else 0, "epochs": cfg.epochs,
        "supernet": {"channels": (cfg.channels if isinstance(space, DartsSpace) else list(cfg.stage_channels)),
                     "cells_per_stage": cfg.cells, "edges": len(net.edges),
                     "steps_per_epoch": training.steps, "batch_size": cfg.batch_size},
        "data": problem.data.name, "train_resolution": problem.data.resolution,
        "argmax_arch": argmax.to_dict(), "argmax_latency_ms": predictor.latency_ms(argmax),
        "expected_latency_ms": log[-1]["expected_latency_ms"] if log else None,
        "probabilities": probs, "parameter_free_edges": free, "derived_edges": net.derived_ops,
        "collapsed": free == net.derived_ops,
        "cpu_s": round(training.cpu + (projection.cpu if projection is not None else 0.0), 3),
        **benchmark_details(arch, space, problem.data.num_classes),
    }
    if projection is not None:
        details["projection"] = {"batches": cfg.pt_batches, "tune_steps": cfg.pt_tune_steps,
                                 "cpu_s": round(projection.cpu, 3), "edges": projection.log}
        details["alpha_argmax_arch"] = Arch.create(space, net.argmax_choices()).to_dict()
    if arch != argmax and "benchmark" in details:
        details["argmax_benchmark"] = benchmark_details(argmax, space, problem.data.num_classes)["benchmark"]
    candidates = (Candidate(arch, predictor.latency_ms(arch), None, joint, tuple(steps), note="argmax"),)
    return SearchResult(strategy, arch, predictor.latency_ms(arch), budget, tuple(steps), candidates,
                        training.wall, training.finished, details)


def benchmark_details(arch: Arch, space, num_classes: int) -> dict:
    """`benchmark`: the NAS-Bench-201 record of an nb201 cell (the `nb201` evaluator's), for the
    dataset of the searched class count; none (and why) where it cannot be looked up."""
    if space.name != "nb201":
        return {}
    from ..tabular.nb201 import SIGNALS, NB201Table

    dataset = BENCHMARK_DATASETS.get(num_classes)
    if dataset is None:
        return {"benchmark": None, "benchmark_note": f"NAS-Bench-201 has no dataset of {num_classes} classes"}
    try:
        table = NB201Table.load()
    except HwnasError as exc:
        return {"benchmark": None, "benchmark_note": str(exc)}
    return {"benchmark": table.record(arch, SIGNALS[dataset])}
