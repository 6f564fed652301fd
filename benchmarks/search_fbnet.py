"""Benchmark of the fbnet strategy against random search, under a tight and a loose latency budget.

For each budget:
  1. fbnet search on the CIFAR-10 subset (space `fbnet`, latency from the LUT of this CPU at 224);
     search wall time and CPU time (all threads) are recorded;
  2. predicted latency of the result (LUT) and measured latency (the whole network at 224 on this
     CPU: the LUT's own profiler when hwnas.profilers offers it, else torch eager) vs the budget;
  3. top-1 after a short from-scratch training of the result. With `--finalists N` (default 3) the
     search ends as FBNet's does: the argmax and N-1 samples of the learned distribution get the
     same short training as random's trials and the best on the "select" half is the result;
  4. random baseline: uniform architectures under the same budget (predicted), each given the same
     short training, for the same total time as fbnet (search with its finalists; with none, search
     + one training of the result). Random may overrun the time by up to one trial.

The val split is cut in two stratified halves. Random picks its best trial on the "select" half;
both that pick and the fbnet result are then scored on the "test" half, which no choice has seen
(the pick is retrained with the same seed, which repeats its training exactly). Scoring the pick
on the half it was picked on would credit random with the luck of its best draw. The report
gives both: `random_best_select_top1` (biased) and `random_pick_test_top1` (the comparison).

Targets: search under 20 CPU-minutes, measured latency <= budget x 1.05, fbnet better than random.
With the defaults (1 thread, 8 supernet epochs of 30 + 8 batches, 3 finalists, 4 training epochs) a
budget takes about 45 minutes (search with finalists ~18, random as long, two scoring trainings),
the whole benchmark about 90. `--only` runs
one budget, so that two processes can run the two budgets side by side; `--remeasure` then times
the results again on a quiet machine.

  python benchmarks/search_fbnet.py --lut LUT.json                       # the real run (long)
  python benchmarks/search_fbnet.py --smoke                              # seconds: tiny space, digits
  python benchmarks/search_fbnet.py --lut LUT.json --only tight --out A  # one budget (and --only loose)
  python benchmarks/search_fbnet.py --lut LUT.json --remeasure A         # latency again, machine quiet

The LUT must cover space fbnet at 224 (e.g. `hwnas profile --space fbnet --resolution 224 ...`).
Budgets default to the 25th and 75th percentile of the predicted latency of random architectures.
Writes OUT/report.json and OUT/report.md (default OUT: runs/bench_search_fbnet).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hwnas.core.arch import Arch, arch_from_dict  # noqa: E402
from hwnas.train.data import ImageData, load_data, split_train  # noqa: E402
from hwnas.jsonio import atomic_write_json, atomic_write_text  # noqa: E402
from hwnas.latency_tables import LatencyTable, Measurement, OpKey  # noqa: E402
from hwnas.latency_tables.loading import open_profiler  # noqa: E402
from hwnas.latency_tables.predictor import LatencyPredictor  # noqa: E402
from hwnas.core.models import arch_model  # noqa: E402
from hwnas.profilers.session import op_module  # noqa: E402
from hwnas.search import (FBNetConfig, FBNetStrategy, LoopConfig, RandomStrategy, SearchProblem, read_history,  # noqa: E402
                          run_search)
from hwnas.search.budget import parse_budget, resolve_budget  # noqa: E402
from hwnas.search.evaluators import ScratchEvaluator  # noqa: E402
from hwnas.core.spaces import get_space  # noqa: E402
from hwnas.train.loop import TrainConfig, train_arch  # noqa: E402

SMOKE_BACKEND = "torch-eager-smoke"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10"


def torch_eager_ms(module: torch.nn.Module, shape, warmup: int = 5, runs: int = 30) -> float:
    """Median wall time of one forward pass in eval mode (the fallback measurement)."""
    module.eval()
    x = torch.randn(*shape)
    with torch.inference_mode():
        for _ in range(warmup):
            module(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            module(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure_latency_ms(model: torch.nn.Module, resolution: int, table: LatencyTable) -> tuple[float, str]:
    """End-to-end latency on this machine with the LUT's own backend and options (torch eager only
    for the smoke table, which has no real backend)."""
    shape = (table.batch, 3, resolution, resolution)
    if table.backend == SMOKE_BACKEND:
        return torch_eager_ms(model, shape), "torch eager (smoke)"
    with open_profiler(table) as profiler:
        return profiler.measure(model, shape).p50_ms, f"{table.backend} profiler"


def smoke_table(space) -> LatencyTable:
    """Smoke mode only: time each op of a (tiny) space with torch eager. Not a real profile."""
    table = LatencyTable(backend=SMOKE_BACKEND, backend_options={"threads": torch.get_num_threads()},
                         device={"note": "benchmark smoke table"}, spaces=[space.name], resolutions=[space.resolution])
    cfg = space.build_config
    for op in space.all_ops():
        ms = torch_eager_ms(op_module(op, cfg), op.input_shape(), warmup=2, runs=10)
        table.put(OpKey.for_op(op, cfg.name), Measurement(ms, ms, ms, ms, 0.0, 10))
    return table


def default_budgets(space, predictor, seed: int, quantiles=(0.25, 0.75), n: int = 2000) -> list[float]:
    rng = random.Random(seed)
    lats = sorted(predictor.latency_ms(Arch.create(space, space.sample(rng))) for _ in range(n))
    return [lats[int(q * (n - 1))] for q in quantiles]


def split_val(data: ImageData, seed: int) -> tuple[ImageData, ImageData]:
    """(select, test): the same data with the val split cut into two stratified halves."""
    select, test = split_train(data.val, 0.5, seed)
    return dataclasses.replace(data, val=select), dataclasses.replace(data, val=test)


def run_budget(name: str, budget: float, args, space, predictor, table, data, out: Path) -> dict:
    print(f"\n== budget {name}: {budget:.3f} ms ==")
    data_select, data_test = split_val(data, args.seed)
    train_cfg = TrainConfig(epochs=args.train_epochs, batch_size=args.batch_size, seed=args.seed,
                            max_batches=args.train_max_batches)
    problem = SearchProblem(space, predictor, budget, data, out / f"{name}_search", seed=args.seed,
                            resume=args.resume, progress=not args.quiet, lut_source=str(args.lut))
    cfg = FBNetConfig(epochs=args.epochs, batch_size=args.batch_size, max_batches=args.max_batches,
                      arch_lr=args.arch_lr, top_k=args.top_k, finalists=args.finalists,
                      finalist_epochs=args.train_epochs)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    # finalists are trained and picked exactly as random's trials are: same training, "select" half
    found = run_search(problem, FBNetStrategy(cfg, evaluator=ScratchEvaluator(data_select, train_cfg, fixed_seed=True)))
    search_cpu, search_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if args.resume:
        search_wall = found.wall_s  # the checkpointed total, over all sessions
    deploy_model = arch_model(found.arch)  # the space's default head, as the LUT measured it
    measured, method = measure_latency_ms(deploy_model, space.resolution, table)

    t0 = time.perf_counter()
    trained = train_arch(found.arch, data_test, train_cfg, progress=not args.quiet)
    train_wall = time.perf_counter() - t0
    # with finalists the result was already trained once in the search (scored on the select half;
    # this repeat only scores it on the test half, as random's pick is): its time is not counted again
    total = search_wall + (0.0 if args.finalists else train_wall)

    random_problem = SearchProblem(space, predictor, budget, data, out / f"{name}_random", seed=args.seed + 1,
                                   resume=args.resume, progress=not args.quiet, lut_source=str(args.lut))
    baseline = run_search(random_problem, RandomStrategy(), ScratchEvaluator(data_select, train_cfg, fixed_seed=True),
                          LoopConfig(trials=args.max_random, time_limit_s=total))
    scores = [t.top1 for t in read_history(out / f"{name}_random" / "trials.jsonl") if t.state == "complete"]
    pick = train_arch(baseline.arch, data_test, train_cfg, progress=not args.quiet)
    row = {
        "budget_name": name, "budget_ms": budget, "arch": found.arch.to_dict(), "arch_hash": found.arch.hash,
        "repaired": found.repaired, "search_wall_s": search_wall, "search_cpu_s": search_cpu,
        "predicted_ms": found.predicted_ms, "measured_ms": measured, "measure_method": method,
        "measured_over_budget": measured / budget, "fbnet_test_top1": trained.top1, "train_wall_s": train_wall,
        "random_best_select_top1": max(scores), "random_pick_test_top1": pick.top1, "random_pick": baseline.arch.hash,
        "random_trials": len(scores), "random_wall_s": baseline.wall_s,
        "random_best_predicted_ms": baseline.predicted_ms, "random_select_top1_all": scores,
        "finalists": [{k: f[k] for k in ("hash", "note", "score", "predicted_ms", "wall_s")}
                      for f in found.details.get("finalists", [])],
        "meets_cpu_target": search_cpu <= 20 * 60, "meets_latency_target": measured <= budget * 1.05,
        "beats_random": trained.top1 > pick.top1,
    }
    print(json.dumps({k: v for k, v in row.items() if k not in ("arch", "random_select_top1_all")}, indent=2))
    return row


def report_markdown(rows: list[dict], header: dict) -> str:
    lines = [f"# fbnet search benchmark ({header['space']}@{header['resolution']}, {header['data']})", "",
             f"LUT {header['lut']} ({header['backend']}); supernet {header['epochs']} epochs at "
             f"{header['train_resolution']}px; short training {header['train_epochs']} epochs.", "",
             "Top-1 on the test half of val; random's pick was chosen on the select half (its top-1 there "
             "in brackets, with the number of trials).", "",
             "| budget | ms | search wall s | search CPU s | predicted ms | measured ms | meas/budget | fbnet top-1 "
             "| random pick top-1 [select, n] | targets (CPU, latency, random) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = lambda b: "yes" if b else "NO"  # noqa: E731
        lines.append(
            f"| {r['budget_name']} | {r['budget_ms']:.3f} | {r['search_wall_s']:.0f} | {r['search_cpu_s']:.0f} | "
            f"{r['predicted_ms']:.3f} | {r['measured_ms']:.3f} ({r['measure_method']}) | {r['measured_over_budget']:.3f} | "
            f"{r['fbnet_test_top1']:.2f} | {r['random_pick_test_top1']:.2f} [{r['random_best_select_top1']:.2f}, "
            f"{r['random_trials']}] | "
            f"{ok(r['meets_cpu_target'])}, {ok(r['meets_latency_target'])}, {ok(r['beats_random'])} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict) -> str:
    """OUT/report.json and OUT/report.md, each written atomically (remeasure rewrites a finished
    run's report: a crash must not lose it); returns the markdown."""
    atomic_write_json(out / "report.json", report)
    markdown = report_markdown(report["rows"], report["header"])
    atomic_write_text(out / "report.md", markdown)
    return markdown


def remeasure(out: Path, lut: str | None) -> int:
    """Time each result of OUT/report.json again with the LUT's profiler; the first figure is kept
    as `measured_ms_during_run` (another benchmark process may have shared the machine)."""
    report = json.loads((out / "report.json").read_text())
    table = LatencyTable.load(lut or report["header"]["lut"])
    space = get_space(report["header"]["space"])
    for row in report["rows"]:
        arch = arch_from_dict(row["arch"], "report.json")
        measured, method = measure_latency_ms(arch_model(arch), space.resolution, table)
        row.setdefault("measured_ms_during_run", row["measured_ms"])
        row.update(measured_ms=measured, measure_method=f"{method}, remeasured",
                   measured_over_budget=measured / row["budget_ms"], meets_latency_target=measured <= row["budget_ms"] * 1.05)
        print(f"{row['budget_name']}: {row['measured_ms_during_run']:.3f} ms during the run, {measured:.3f} ms now "
              f"(budget {row['budget_ms']:.3f} ms)")
    write_report(out, report)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lut", default=None, help="LUT of this CPU covering space fbnet at 224 (required unless --smoke)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="ImageFolder dir (default: ../shared/data/cifar10)")
    p.add_argument("--space", default="fbnet")
    p.add_argument("--budgets", default=None, help="comma-separated budgets, e.g. 6ms,10ms or 30%%,70%% "
                                                   "(default: 25th and 75th percentile of random archs)")
    p.add_argument("--epochs", type=int, default=8, help="supernet epochs")
    p.add_argument("--max-batches", type=int, default=30,
                   help="supernet weight batches per epoch (soft supernet: ~1.9 CPU-s per batch of 64 at 32px; "
                        "8 x (30 + 8) batches and 3 finalists keep a search under 20 CPU-minutes)")
    p.add_argument("--arch-lr", type=float, default=0.05,
                   help="Adam lr of the architecture parameters (FBNet's 0.01 is for ~100x more steps)")
    p.add_argument("--train-epochs", type=int, default=4, help="epochs of the short from-scratch training")
    p.add_argument("--train-resolution", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--finalists", type=int, default=3,
                   help="fbnet trains the argmax and N-1 samples of its learned distribution like random's trials "
                        "and keeps the best on the select half (FBNet's last step; 0: the argmax, trained once)")
    p.add_argument("--max-random", type=int, default=200, help="cap on random trials (time is the real limit)")
    p.add_argument("--train-max-batches", type=int, default=None, help="cap batches per training epoch (smoke)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for search and training (default 1: CPU time = wall time, and runs on a "
                        "shared machine stay comparable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "runs" / "bench_search_fbnet"))
    p.add_argument("--resume", action="store_true", help="continue the runs in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--smoke", action="store_true", help="tiny space, digits, a few batches: checks the script runs")
    p.add_argument("--only", default=None, help="run only the budget of this name (tight, loose, b0, ...)")
    p.add_argument("--remeasure", metavar="OUT", default=None,
                   help="time the results in OUT/report.json again (on a quiet machine) and rewrite the report")
    args = p.parse_args(argv)
    if args.remeasure:
        return remeasure(Path(args.remeasure), args.lut)
    if args.smoke:
        args.space, args.data, args.epochs, args.train_epochs = "tiny", "digits", 2, 1
        args.max_batches, args.train_max_batches, args.max_random, args.top_k, args.finalists = 3, 3, 3, 1, 2
        args.budgets = args.budgets or "40%,90%"
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.resume:
        p.error(f"{out} is not empty; pass --resume or another --out")

    space = get_space(args.space)
    if args.lut:
        table = LatencyTable.load(args.lut)
    elif args.smoke:
        table, args.lut = smoke_table(space), "smoke table (torch eager per op)"
    else:
        p.error(f"--lut is required: profile this CPU first, e.g. `hwnas profile --space {args.space} "
                f"--resolution {space.resolution} --out LUT.json`")
    predictor = LatencyPredictor(table, space)
    if args.budgets:
        texts = args.budgets.split(",")
        budgets = [resolve_budget(parse_budget(t), predictor) for t in texts]
    else:
        texts = ["tight", "loose"]
        budgets = default_budgets(space, predictor, args.seed)
    names = ["tight", "loose"] if len(budgets) == 2 else [f"b{i}" for i in range(len(budgets))]
    if args.only is not None:
        if args.only not in names:
            p.error(f"--only {args.only}: the budgets here are named {', '.join(names)}")
        keep = [i for i, n in enumerate(names) if n == args.only]
        names, budgets, texts = [names[i] for i in keep], [budgets[i] for i in keep], [texts[i] for i in keep]
    data = load_data(args.data, args.train_resolution, args.seed)
    print(f"{data.describe()}; LUT {args.lut}; budgets " + ", ".join(f"{b:.3f} ms" for b in budgets))
    rows = [run_budget(n, b, args, space, predictor, table, data, out) for n, b in zip(names, budgets)]
    header = {"space": space.name, "resolution": space.resolution, "data": data.name, "lut": str(args.lut),
              "backend": table.backend, "epochs": args.epochs, "train_epochs": args.train_epochs,
              "train_resolution": args.train_resolution, "budget_texts": texts, "threads": torch.get_num_threads()}
    out.mkdir(parents=True, exist_ok=True)
    print("\n" + write_report(out, {"header": header, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
