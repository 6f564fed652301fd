"""Every search strategy on the same problem: fbnet space, CIFAR-10 subset, one latency budget, the
same wall time per search, several seeds.

For each (strategy, seed): the search (trial strategies with `--evaluator`, default `shared`: one
SPOS supernet trained once and reused by every sampler and seed; its training time is reported
apart), then its pick is trained the same way as every other pick (from scratch on the whole
training set) and scored on the val split, which no strategy selected on (samplers select on a
held-out part of the training set, fbnet on its architecture split). Reported per strategy:
mean and spread of that top-1 over seeds, measured latency / budget (the whole network on this
CPU with the LUT's profiler), hypervolume of the (held-out top-1, predicted latency) front within
the budget, trials per minute; and once, Kendall's tau between the one-shot (shared) scores and
short-training top-1 of `--tau-archs` uniform architectures (does weight sharing rank them?).

  python benchmarks/search_compare.py --lut LUT.json                  # defaults (long)
  python benchmarks/search_compare.py --smoke                         # seconds: tiny space, digits
  python benchmarks/search_compare.py --smoke --max-trials 40 --time-limit 60  # any flag overrides a smoke one
  python benchmarks/search_compare.py --lut LUT.json --resume --out D # continue a killed run

Each finished (strategy, seed) row is kept in OUT/rows/ and reused on --resume. Writes
OUT/report.json and OUT/report.md (default OUT: runs/bench_search_compare).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_fbnet import DEFAULT_DATA, measure_latency_ms, smoke_table  # noqa: E402

from hwnas.core.arch import Arch  # noqa: E402
from hwnas.train.data import load_data  # noqa: E402
from hwnas.jsonio import atomic_write_json, atomic_write_text  # noqa: E402
from hwnas.latency_tables import LatencyTable  # noqa: E402
from hwnas.latency_tables.predictor import LatencyPredictor  # noqa: E402
from hwnas.core.models import arch_model  # noqa: E402
from hwnas.search import (STRATEGIES, ENASConfig, ENASStrategy, EvolutionStrategy, FBNetConfig,  # noqa: E402
                          FBNetStrategy, LoopConfig, MnasStrategy, NSGA2Strategy, SearchProblem, TPEStrategy,
                          TrialStrategy, read_history, run_search)
from hwnas.search.controller import ControllerConfig  # noqa: E402
from hwnas.search.mnas import trial_reward  # noqa: E402
from hwnas.search.budget import parse_budget, resolve_budget  # noqa: E402
from hwnas.search.evaluators import make_evaluator  # noqa: E402
from hwnas.search.objectives import hypervolume_2d, pareto_front  # noqa: E402
from hwnas.core.spaces import get_space  # noqa: E402
from hwnas.train.loop import TrainConfig, train_arch  # noqa: E402


def make_strategy(name: str, args):
    if name == "fbnet":
        return FBNetStrategy(FBNetConfig(epochs=args.fbnet_epochs, batch_size=args.batch_size,
                                         max_batches=args.fbnet_batches, top_k=3))
    if name == "evolution":
        return EvolutionStrategy(population=args.population, sample_size=max(1, args.population // 4))
    if name == "tpe":
        return TPEStrategy(startup_trials=max(2, args.population // 2))
    if name == "nsga2":
        return NSGA2Strategy(population=args.population)
    if name == "mnas":
        return MnasStrategy(ControllerConfig(batch=args.controller_batch))
    if name == "enas":
        return ENASStrategy(ENASConfig(epochs=args.enas_epochs, batch_size=args.batch_size,
                                       max_batches=args.fbnet_batches, controller_steps=args.controller_steps,
                                       score_batches=args.score_batches or 4),
                            ControllerConfig(batch=args.controller_batch))
    return STRATEGIES[name]()


def evaluator_for(problem, args, out: Path):
    return make_evaluator(args.evaluator, problem, epochs=args.trial_epochs, batch_size=args.batch_size,
                          max_batches=args.trial_batches, supernet=out / "spos_supernet.pt",
                          calib_batches=args.calib_batches, calib_batch_size=args.batch_size,
                          score_batches=args.score_batches)


def run_one(name, seed, args, space, predictor, table, data, budget, out: Path) -> dict:
    row_path = out / "rows" / f"{name}_s{seed}.json"
    if args.resume and row_path.is_file():
        return json.loads(row_path.read_text())
    run_dir = out / f"{name}_s{seed}"
    problem = SearchProblem(space, predictor, budget, data, run_dir, seed=seed, resume=args.resume,
                            progress=not args.quiet, lut_source=str(args.lut),
                            objectives=("acc",) if not STRATEGIES[name].uses_evaluator else ("acc", "latency"))
    strategy = make_strategy(name, args)
    evaluator = evaluator_for(problem, args, out) if strategy.uses_evaluator else None
    wall0 = time.perf_counter()
    result = run_search(problem, strategy, evaluator, LoopConfig(trials=args.max_trials, time_limit_s=args.time_limit))
    search_wall = time.perf_counter() - wall0
    final = TrainConfig(epochs=args.final_epochs, batch_size=args.batch_size, max_batches=args.final_batches, seed=seed)
    top1 = train_arch(result.arch, data, final).top1  # every pick trained alike, scored on val (unseen)
    measured, method = measure_latency_ms(arch_model(result.arch), space.resolution, table)
    row = {"strategy": name, "seed": seed, "arch_hash": result.arch.hash, "arch": result.arch.to_dict(),
           "val_top1": top1, "predicted_ms": result.predicted_ms, "measured_ms": measured, "measure_method": method,
           "measured_over_budget": measured / budget, "search_wall_s": search_wall, "hypervolume": None,
           "trials": None, "trials_per_minute": None, "selection_score": None, "controller_curve": None,
           "mean_reward": None}
    if (run_dir / "controller.json").is_file():  # mnas, enas: mean reward and entropy per policy update
        row["controller_curve"] = json.loads((run_dir / "controller.json").read_text())["curve"]
    if isinstance(strategy, TrialStrategy):
        trials = read_history(run_dir / "trials.jsonl")
        front = pareto_front(trials, ("acc", "latency"))
        row.update(hypervolume=hypervolume_2d([(t.top1, t.predicted_ms) for t in front], ref=(0.0, budget)),
                   trials=result.details["trials"], trials_per_minute=result.details["trials_per_minute"],
                   selection_score=result.details["best_score"],
                   mean_reward=statistics.fmean(trial_reward(t, "soft", -0.07) for t in trials))
    atomic_write_json(row_path, row)
    return row


def weight_sharing_tau(args, space, predictor, data, out: Path) -> dict:
    """Kendall tau between shared (one-shot) scores and short-training top-1 on the same held-out
    split, for `--tau-archs` uniform architectures."""
    from scipy.stats import kendalltau

    path = out / "tau.json"
    if args.resume and path.is_file():
        return json.loads(path.read_text())
    problem = SearchProblem(space, predictor, None, data, out / "tau", seed=0, progress=False)
    shared = make_evaluator("shared", problem, epochs=args.trial_epochs, batch_size=args.batch_size,
                            max_batches=args.trial_batches, supernet=out / "spos_supernet.pt",
                            calib_batches=args.calib_batches, calib_batch_size=args.batch_size,
                            score_batches=args.score_batches)
    scratch = make_evaluator("scratch", problem, epochs=args.tau_epochs, batch_size=args.batch_size,
                             max_batches=args.tau_batches)
    shared.prepare(not args.quiet)
    rng = random.Random(12345)
    archs = []
    while len(archs) < args.tau_archs:
        arch = Arch.create(space, space.sample(rng))
        if arch.hash not in {a.hash for a in archs}:
            archs.append(arch)
    rows = []
    for i, arch in enumerate(archs):
        rows.append({"hash": arch.hash, "shared": shared.evaluate(arch), "scratch": scratch.evaluate(arch, 0)})
        if not args.quiet:
            print(f"tau arch {i + 1}/{len(archs)}: shared {rows[-1]['shared']:.2f}%, scratch {rows[-1]['scratch']:.2f}%")
    tau, p_value = kendalltau([r["shared"] for r in rows], [r["scratch"] for r in rows])
    doc = {"tau": float(tau), "p_value": float(p_value), "archs": rows, "scratch_epochs": args.tau_epochs,
           "scratch_batches": args.tau_batches}
    atomic_write_json(path, doc)
    return doc


def summarise(rows: list[dict], names: list[str]) -> dict:
    summary = {}
    for name in names:
        mine = [r for r in rows if r["strategy"] == name]
        tops = [r["val_top1"] for r in mine]
        pick = lambda key: [r[key] for r in mine if r[key] is not None]  # noqa: E731
        mean = lambda xs: statistics.fmean(xs) if xs else None  # noqa: E731
        summary[name] = {"seeds": len(mine), "val_top1_mean": mean(tops),
                         "val_top1_sd": statistics.stdev(tops) if len(tops) > 1 else None,
                         "measured_over_budget_mean": mean(pick("measured_over_budget")),
                         "hypervolume_mean": mean(pick("hypervolume")),
                         "trials_per_minute_mean": mean(pick("trials_per_minute")),
                         "search_wall_s_mean": mean(pick("search_wall_s"))}
    base = summary.get("random")
    for name, s in summary.items():
        if base is None or name == "random" or s["val_top1_sd"] is None or base["val_top1_sd"] is None:
            continue
        n = s["seeds"]
        noise = (s["val_top1_sd"] ** 2 / n + base["val_top1_sd"] ** 2 / n) ** 0.5  # SE of the difference
        s["minus_random"] = s["val_top1_mean"] - base["val_top1_mean"]
        s["noise_se"] = noise
        s["beats_random_beyond_noise"] = s["minus_random"] > 2 * noise
    return summary


def report_markdown(report: dict) -> str:
    h = report["header"]
    lines = [f"# search strategies compared ({h['space']}@{h['resolution']}, {h['data']})", "",
             f"Budget {h['budget_ms']:.3f} ms ({h['budget']}); seeds {h['seeds']}; time limit {h['time_limit_s']} s per "
             f"search; samplers' evaluator {h['evaluator']}; picks trained {h['final_epochs']} epoch(s) x "
             f"{h['final_batches']} batches, scored on val. "
             + (f"The shared SPOS supernet trained once in {h['spos_supernet_wall_s']:.0f} s (not in the search "
                f"times). " if h.get("spos_supernet_wall_s") else "") + h.get("note", ""), "",
             "| strategy | val top-1 mean | sd | minus random (2 SE) | measured/budget | hypervolume | trials/min | "
             "search s |", "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, f=".2f": "-" if v is None else format(v, f)  # noqa: E731
    for name, s in report["summary"].items():
        diff = "-" if "minus_random" not in s else f"{s['minus_random']:+.2f} ({2 * s['noise_se']:.2f})"
        lines.append(f"| {name} | {fmt(s['val_top1_mean'])} | {fmt(s['val_top1_sd'])} | {diff} | "
                     f"{fmt(s['measured_over_budget_mean'], '.3f')} | {fmt(s['hypervolume_mean'], '.1f')} | "
                     f"{fmt(s['trials_per_minute_mean'], '.1f')} | {fmt(s['search_wall_s_mean'], '.0f')} |")
    lines += learning_curves(report["rows"])
    tau = report.get("weight_sharing")
    if tau:
        lines += ["", f"Weight sharing: Kendall tau {tau['tau']:.3f} (p {tau['p_value']:.3f}) between one-shot scores "
                      f"and short-training top-1 ({tau['scratch_epochs']} epoch x {tau['scratch_batches']} batches) "
                      f"on {len(tau['archs'])} uniform architectures."]
    return "\n".join(lines) + "\n"


def learning_curves(rows: list[dict]) -> list[str]:
    """Each controller's mean reward and entropy per update, next to random search's mean reward
    (MnasNet's soft reward of the same evaluator's scores) on the same seed. enas rewards are
    one-batch scores of its own supernet: its first update (a near-uniform controller) is its
    random baseline."""
    lines = []
    for row in rows:
        curve = row.get("controller_curve")
        if not curve:
            continue
        random_row = next((r for r in rows if r["strategy"] == "random" and r["seed"] == row["seed"]), None)
        base = f"; random's mean reward {random_row['mean_reward']:.4f}" if random_row and \
            random_row.get("mean_reward") is not None and row["strategy"] == "mnas" else ""
        lines += ["", f"{row['strategy']} seed {row['seed']} learning curve (update: mean reward / entropy){base}:",
                  "  " + ", ".join(f"{p['update']}: {p['mean_reward']:.4f}/{p['entropy']:.2f}" for p in curve)]
    return lines


SMOKE = dict(space="tiny", data="digits", seeds=[0, 1], time_limit=5.0, max_trials=4, trial_epochs=1, trial_batches=2,
             calib_batches=2, score_batches=1, fbnet_epochs=1, fbnet_batches=2, final_epochs=1, final_batches=2,
             tau_archs=4, tau_batches=2, population=2, batch_size=32, enas_epochs=2, controller_steps=2,
             controller_batch=2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lut", default=None, help="LUT of this CPU covering space fbnet at 224 (required unless --smoke)")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--space", default="fbnet")
    p.add_argument("--budget", default="30%", help="latency budget (ms or %% of the LUT range)")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--time-limit", type=float, default=600.0, help="seconds per sampler search")
    p.add_argument("--max-trials", type=int, default=1000)
    p.add_argument("--evaluator", choices=("scratch", "shared"), default="shared")
    p.add_argument("--trial-epochs", type=int, default=3, help="scratch: epochs per trial; shared: supernet epochs")
    p.add_argument("--trial-batches", type=int, default=None)
    p.add_argument("--calib-batches", type=int, default=20)
    p.add_argument("--score-batches", type=int, default=None)
    p.add_argument("--population", type=int, default=20, help="evolution, nsga2 (tpe: half as startup trials)")
    p.add_argument("--fbnet-epochs", type=int, default=8)
    p.add_argument("--fbnet-batches", type=int, default=30)
    p.add_argument("--enas-epochs", type=int, default=8, help="enas: epochs (each --fbnet-batches shared steps)")
    p.add_argument("--controller-steps", type=int, default=5, help="enas: policy updates per epoch")
    p.add_argument("--controller-batch", type=int, default=8, help="mnas, enas: architectures per policy update")
    p.add_argument("--final-epochs", type=int, default=4)
    p.add_argument("--final-batches", type=int, default=None)
    p.add_argument("--tau-archs", type=int, default=20)
    p.add_argument("--tau-epochs", type=int, default=1)
    p.add_argument("--tau-batches", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", default=str(ROOT / "runs" / "bench_search_compare"))
    p.add_argument("--resume", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny space, digits, seconds: checks the script runs")
    if p.parse_args(argv).smoke:  # smoke settings are defaults: a flag given still overrides one
        p.set_defaults(**SMOKE)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if not args.smoke and args.lut is None:
        p.error("--lut is required (or --smoke)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(args.data, 32, 0)
    space = get_space(args.space)  # latency of the space's default head, as profiled
    table = smoke_table(space) if args.smoke else LatencyTable.load(args.lut)
    if args.smoke:
        args.lut = "smoke table (torch eager per op)"
    predictor = LatencyPredictor(table, space)
    budget = resolve_budget(parse_budget(args.budget), predictor)
    names = [n for n in args.strategies.split(",") if n]
    rows = [run_one(name, seed, args, space, predictor, table, data, budget, out)
            for seed in args.seeds for name in names]
    tau = weight_sharing_tau(args, space, predictor, data, out) if args.tau_archs and \
        space.name in ("fbnet", "tiny") else None
    supernet = out / "spos_supernet.pt"
    spos_wall = torch.load(supernet, weights_only=True)["wall_s"] if supernet.is_file() else None
    report = {"header": {"space": space.name, "spos_supernet_wall_s": spos_wall, "resolution": space.resolution, "data": str(args.data),
                         "lut": str(args.lut), "budget": args.budget, "budget_ms": budget, "seeds": args.seeds,
                         "time_limit_s": args.time_limit, "evaluator": args.evaluator,
                         "final_epochs": args.final_epochs, "final_batches": args.final_batches,
                         "settings": vars(args), "note": "SMOKE RUN: figures mean nothing." if args.smoke else ""},
              "rows": rows, "summary": summarise(rows, names), "weight_sharing": tau}
    atomic_write_json(out / "report.json", report)
    markdown = report_markdown(report)
    atomic_write_text(out / "report.md", markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
