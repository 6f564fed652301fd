"""Lamarckian search against from-scratch search at equal CPU time: nash and lemonade (children
trained from their parents' weights) against random, evolution and nsga2 (every candidate trained
from scratch), on the CIFAR-10 subset in ../shared/data/cifar10, one latency budget, several seeds.

Every strategy uses the same `scratch` evaluator: each trial trains `--epochs` (`--max-batches`
batches per epoch) on 80% of the training set and is scored on the other 20% (held out; the val
split is never used). A nash or lemonade child starts from its parent's weights, so its score is
that of the network as the search leaves it: trained along its whole lineage. The CPU time of
every trial is the process CPU time (time.process_time, OMP_NUM_THREADS=1) from the start of the
search to the trial's outcome, strategy work included; wall time is not used (the machine is shared).

Reported per strategy (mean and spread over seeds):
- the curve of the best held-out top-1 so far against CPU seconds (report.json, curves.png);
- the best top-1 at the common CPU time T: every search gets `--cpu-budget` CPU seconds (no trial
  starts after that; the one running finishes, and does not count), and T is that budget, so that
  every strategy is compared at the same CPU time;
- the CPU time nash needs to reach random search's best top-1 at T (target: at most T / 2);
- the hypervolume of the (held-out top-1, predicted latency) front within the budget at T (ref:
  0% top-1 and the budget), for the multi-objective runs (lemonade, nsga2) and random;
- the best pick's predicted latency and its latency measured here on the LUT's own backend.

  python benchmarks/lamarckian.py --smoke                       # seconds: tiny space, digits
  python benchmarks/lamarckian.py --lut LUT.json                # fbnet on CIFAR-10: 5 x 3 x 600 CPU-s

Each finished (strategy, seed) run is kept in OUT/STRATEGY_SEED/ and reused when the script runs
again with the same OUT (default runs/bench_lamarckian).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_fbnet import DEFAULT_DATA, measure_latency_ms, smoke_table  # noqa: E402

from hwnas.core.models import arch_model  # noqa: E402
from hwnas.core.spaces import get_space  # noqa: E402
from hwnas.errors import HwnasError  # noqa: E402
from hwnas.jsonio import atomic_write_json, read_json  # noqa: E402
from hwnas.latency_tables import LatencyTable  # noqa: E402
from hwnas.latency_tables.predictor import LatencyPredictor  # noqa: E402
from hwnas.search import (EvolutionStrategy, LemonadeStrategy, LoopConfig, NashStrategy, NSGA2Strategy,  # noqa: E402
                          RandomStrategy, SearchProblem, read_history, run_search)
from hwnas.search.budget import parse_budget, resolve_budget  # noqa: E402
from hwnas.search.evaluators import Evaluator, ScratchEvaluator, holdout_data  # noqa: E402
from hwnas.search.objectives import hypervolume_2d, pareto_front  # noqa: E402
from hwnas.train.data import load_data  # noqa: E402
from hwnas.train.loop import TrainConfig  # noqa: E402

STRATEGIES = ("nash", "lemonade", "random", "evolution", "nsga2")
MULTI = ("lemonade", "nsga2", "random")  # runs whose front's hypervolume is reported


class CPUBudgetSpent(Exception):
    """The search has had its CPU time: the loop stops as if interrupted (its history is kept)."""


class CPUClock(Evaluator):
    """`inner`'s outcomes, each noted with the process CPU seconds since `start()`; once `budget_s`
    is spent, no new batch is evaluated (CPUBudgetSpent stops the loop)."""

    def __init__(self, inner: Evaluator, budget_s: float | None = None):
        self.inner, self.name, self.inherits = inner, inner.name, inner.inherits
        self.budget_s = budget_s
        self.cpu: dict[int, float] = {}
        self.t0 = time.process_time()

    def start(self) -> None:
        self.t0 = time.process_time()

    def score(self, arch, seed):  # pragma: no cover - the loop calls evaluate_batch
        return self.inner.score(arch, seed)

    def evaluate_batch(self, requests):
        if self.budget_s is not None and time.process_time() - self.t0 >= self.budget_s:
            raise CPUBudgetSpent()
        for outcome in self.inner.evaluate_batch(requests):
            self.cpu[outcome.number] = round(time.process_time() - self.t0, 3)
            yield outcome

    def describe(self) -> dict:
        return self.inner.describe()


def make_strategy(name: str, args):
    return {"nash": lambda: NashStrategy(children=args.nash_children, morphisms=args.nash_morphisms),
            "lemonade": lambda: LemonadeStrategy(init=3, children=args.lemonade_children, accept=args.lemonade_accept),
            "random": RandomStrategy,
            "evolution": lambda: EvolutionStrategy(population=args.population, sample_size=max(2, args.population // 3)),
            "nsga2": lambda: NSGA2Strategy(population=args.population)}[name]()


def run_one(name: str, seed: int, args, space, predictor, budget_ms, data) -> dict:
    """One search; its trials with their CPU times (kept in OUT/NAME_SEED/cpu.json)."""
    run_dir = Path(args.out) / f"{name}_{seed}"
    done = run_dir / "cpu.json"
    if done.is_file():
        return read_json(done, "benchmark run")
    objectives = ("acc", "latency") if name in MULTI else ("acc",)
    problem = SearchProblem(space, predictor, budget_ms, data, run_dir, seed=seed, progress=not args.no_progress,
                            objectives=objectives)
    evaluator = CPUClock(ScratchEvaluator(holdout_data(data, 0.2, seed),
                                          TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                                      max_batches=args.max_batches)), args.cpu_budget)
    if run_dir.exists():  # a killed earlier attempt: start it again
        import shutil

        shutil.rmtree(run_dir)
    evaluator.start()
    try:
        result = run_search(problem, make_strategy(name, args), evaluator, LoopConfig(trials=args.trials))
    except CPUBudgetSpent:  # end the run where it stopped: a resume to the trials it evaluated writes its result
        evaluated = sum(t.state != "infeasible" for t in read_history(run_dir / "trials.jsonl"))
        problem = dataclasses.replace(problem, resume=True)
        result = run_search(problem, make_strategy(name, args), evaluator, LoopConfig(trials=evaluated))
    trials = [{"number": t.number, "top1": t.top1, "predicted_ms": t.predicted_ms, "state": t.state.value,
               "feasible": t.feasible, "cpu_s": evaluator.cpu.get(t.number), "lineage": t.lineage}
              for t in read_history(run_dir / "trials.jsonl")]
    model = arch_model(result.arch, num_classes=space.num_classes)
    try:
        measured, how = measure_latency_ms(model, space.resolution, predictor.table)
    except HwnasError as exc:  # a table of another machine: its device is not here to measure on
        measured, how = None, f"not measured: {exc}"
    row = {"strategy": name, "seed": seed, "trials": trials, "total_cpu_s": round(time.process_time() - evaluator.t0, 3),
           "pick": result.arch.hash, "pick_predicted_ms": result.predicted_ms, "pick_measured_ms": measured,
           "measured_with": how, "budget_ms": budget_ms}
    atomic_write_json(done, row)
    return row


def best_curve(row: dict) -> list[tuple[float, float]]:
    """(CPU s, best held-out top-1 so far) at each complete, feasible trial."""
    best, out = None, []
    for t in sorted((t for t in row["trials"] if t["cpu_s"] is not None), key=lambda t: t["cpu_s"]):
        if t["state"] == "complete" and t["feasible"] and t["top1"] is not None:
            best = t["top1"] if best is None else max(best, t["top1"])
            out.append((t["cpu_s"], best))
    return out


def best_at(curve, cpu: float) -> float | None:
    values = [b for c, b in curve if c <= cpu]
    return values[-1] if values else None


def time_to(curve, target: float) -> float | None:
    return next((c for c, b in curve if b >= target), None)


def hypervolume_at(row: dict, cpu: float, budget_ms: float) -> float:
    pts = [(t["top1"], t["predicted_ms"]) for t in row["trials"] if t["cpu_s"] is not None and t["cpu_s"] <= cpu
           and t["state"] == "complete" and t["feasible"] and t["top1"] is not None]
    return hypervolume_2d(pts, (0.0, budget_ms))


def spread(values) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": round(statistics.mean(values), 3),
            "std": round(statistics.stdev(values), 3) if len(values) > 1 else 0.0, "n": len(values)}


def plot(rows, common: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = dict(zip(STRATEGIES, ("tab:red", "tab:orange", "tab:blue", "tab:green", "tab:purple")))
    for name in STRATEGIES:
        for i, row in enumerate(r for r in rows if r["strategy"] == name):
            curve = best_curve(row)
            if curve:
                ax.step([c for c, _ in curve], [b for _, b in curve], where="post", color=colours[name], alpha=0.7,
                        label=name if i == 0 else None)
    ax.axvline(common, color="grey", linestyle=":", label=f"common CPU time {common:.0f} s")
    ax.set_xlabel("process CPU time (s)")
    ax.set_ylabel("best held-out top-1 so far (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lut", default=None, help="LUT of this CPU covering space fbnet at 224 (required unless --smoke)")
    p.add_argument("--space", default="fbnet")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--budget", default="50%", help="latency budget (default 50%% of the space's range)")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--cpu-budget", type=float, default=600.0,
                   help="process CPU seconds per search (default 600); no trial starts after it")
    p.add_argument("--trials", type=int, default=1000, help="cap on trained candidates per search (default 1000)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-batches", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--nash-children", type=int, default=4)
    p.add_argument("--nash-morphisms", type=int, default=3)
    p.add_argument("--lemonade-children", type=int, default=64)
    p.add_argument("--lemonade-accept", type=int, default=4)
    p.add_argument("--population", type=int, default=8, help="evolution and nsga2 population (default 8)")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench_lamarckian"))
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny space, digits, seconds: checks the script runs")
    if p.parse_args(argv).smoke:
        p.set_defaults(space="tiny", data="digits", seeds=2, trials=50, cpu_budget=3.0, epochs=1, max_batches=2, batch_size=32,
                       nash_children=2, nash_morphisms=1, lemonade_children=8, lemonade_accept=2, population=3,
                       out=str(ROOT / "runs" / "bench_lamarckian_smoke"), no_progress=True)
    args = p.parse_args(argv)
    if not args.smoke and args.lut is None:
        p.error("--lut is required (or --smoke)")
    torch.set_num_threads(1)
    data = load_data(args.data, 32, 0)
    space = get_space(args.space)  # latency of the space's default head, as profiled
    table = smoke_table(space) if args.smoke else LatencyTable.load(args.lut)
    predictor = LatencyPredictor(table, space)
    budget_ms = resolve_budget(parse_budget(args.budget), predictor)
    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    rows = [run_one(name, seed, args, space, predictor, budget_ms, data) for name in names
            for seed in range(args.seeds)]
    common = args.cpu_budget  # every run had it (a run that ended sooner keeps its best)
    curves = {(r["strategy"], r["seed"]): best_curve(r) for r in rows}
    report = {"settings": {k: v for k, v in vars(args).items()}, "budget_ms": budget_ms, "common_cpu_s": common,
              "note": "SMOKE RUN: figures mean nothing." if args.smoke else "", "strategies": {}}
    for name in names:
        mine = [r for r in rows if r["strategy"] == name]
        entry = {"best_top1_at_common_cpu": spread(best_at(curves[(name, r["seed"])], common) for r in mine),
                 "total_cpu_s": spread(r["total_cpu_s"] for r in mine),
                 "pick_predicted_ms": spread(r["pick_predicted_ms"] for r in mine),
                 "pick_measured_ms": spread(r["pick_measured_ms"] for r in mine),
                 "picks_within_budget_measured": sum(r["pick_measured_ms"] is not None
                                                     and r["pick_measured_ms"] <= budget_ms for r in mine),
                 "picks_within_budget_predicted": sum(r["pick_predicted_ms"] <= budget_ms * (1 + 1e-9) for r in mine),
                 "runs": len(mine), "measured_with": mine[0]["measured_with"] if mine else None}
        if name in MULTI:
            entry["hypervolume_at_common_cpu"] = spread(hypervolume_at(r, common, budget_ms) for r in mine)
        report["strategies"][name] = entry
    if "nash" in names and "random" in names:
        targets, ratios = [], []
        for seed in range(args.seeds):
            target = best_at(curves[("random", seed)], common)
            reached = time_to(curves[("nash", seed)], target) if target is not None else None
            targets.append(target)
            ratios.append(None if reached is None else reached / common)
        report["nash_time_to_random_best_over_common_cpu"] = {"per_seed": ratios, "random_best": targets,
                                                               "target": "at most 0.5"}
    out = Path(args.out)
    atomic_write_json(out / "report.json", report)
    plot(rows, common, out / "curves.png")
    print(json.dumps({k: report[k] for k in report if k != "settings"}, indent=1))
    print(f"report: {out / 'report.json'}, curves: {out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
