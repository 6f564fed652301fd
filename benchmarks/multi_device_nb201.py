"""Searches under several devices' budgets at once, measured on NAS-Bench-201 with HW-NAS-Bench's
device latencies: does every strategy meet every budget, and how far is its result from the
oracle (the best cell within all of them)?

Each search is the real `run_search` loop with the `nb201` evaluator and the multi-device latency
model `hwnas search --device A --device B --latency-budget A=.. --latency-budget B=..` builds
(hwnas.search.devices.build_model); the strategy's default settings; 100 queries. Budgets are
latency quantiles of all 15,625 cells on each device (the same share on each). A result's figure is
its 200-epoch CIFAR-10 test accuracy, looked up after the search; the oracle is the best test
accuracy of any cell within every budget, from the table; beside it, the oracle of the first
device's budget alone (what the second budget costs).

  python benchmarks/multi_device_nb201.py                  # 5 strategies x 3 device sets x 20 seeds
  python benchmarks/multi_device_nb201.py --seeds 3        # a quick look

Writes OUT/report.json (default OUT: runs/bench_multi_device). Searches run in --workers
processes (default 2), single-threaded; deterministic, so no timing noise enters the figures.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hwnas.jsonio import atomic_write_json  # noqa: E402

STRATEGIES = ("random", "evolution", "tpe", "bananas", "local")
DEVICE_SETS = (("pixel3", "raspi4"), ("pixel3", "eyeriss"), ("raspi4", "pixel3", "eyeriss"))
QUANTILE = 0.25
SIGNAL, FINAL = "c10valid_valid_12ep", "c10_test_200ep"
_WORKER: dict = {}


def _init(root):
    import torch

    torch.set_num_threads(1)
    from hwnas.core.spaces import get_space
    from hwnas.search.tabular import TabularEvaluator
    from hwnas.tabular.nb201 import NB201Table

    _WORKER.update(table=NB201Table.load(root), space=get_space("nb201", 32, 10),
                   evaluator=TabularEvaluator("cifar10", root))


def budgets_for(table, space, devices, quantile):
    from hwnas.tabular.latency import DeviceLatency

    return {d: DeviceLatency(table, d, space).quantile_ms(quantile) for d in devices}


def run_one(job: dict) -> dict:
    from hwnas.search import STRATEGIES as REGISTRY, LoopConfig, SearchProblem, run_search
    from hwnas.search.devices import build_model, parse_devices
    from hwnas.tabular.latency import DeviceLatency

    table, space, evaluator = _WORKER["table"], _WORKER["space"], _WORKER["evaluator"]
    devices = job["devices"]
    flags = parse_devices([f"{d}={d}" for d in devices], [f"{d}={job['budgets'][d]}ms" for d in devices])
    model, budget = build_model(*flags, [DeviceLatency(table, d, space) for d in devices])
    strategy = REGISTRY[job["strategy"]].from_args(argparse.Namespace())
    with tempfile.TemporaryDirectory() as tmp:
        problem = SearchProblem(space, model, budget, None, Path(tmp) / "run", seed=job["seed"], progress=False)
        t0 = time.perf_counter()
        result = run_search(problem, strategy, evaluator, LoopConfig(trials=job["queries"]))
        wall = time.perf_counter() - t0
    latencies = {d: DeviceLatency(table, d, space).latency_ms(result.arch) for d in devices}
    return {**job, "wall_s": round(wall, 3), "final": table.value(result.arch, FINAL), "latency_ms": latencies,
            "meets_all": all(latencies[d] <= job["budgets"][d] * (1 + 1e-9) for d in devices),
            "reported_meets": result.meets_budget}


def oracle(table, devices, budgets) -> tuple[float, int]:
    from hwnas.tabular.nb201 import DEVICES

    mask = np.ones(len(table.columns[FINAL]), dtype=bool)
    for d in devices:
        mask &= table.columns[DEVICES[d]] <= budgets[d] * (1 + 1e-9)
    final = table.columns[FINAL]
    return float(final[mask].max()), int(mask.sum())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--quantile", type=float, default=QUANTILE)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--root", default=None, help="nasbench data folder (default ../shared/data/nasbench)")
    parser.add_argument("--out", default="runs/bench_multi_device")
    args = parser.parse_args()

    from tqdm.auto import tqdm

    from hwnas.core.spaces import get_space
    from hwnas.tabular.nb201 import NB201Table

    table = NB201Table.load(args.root)
    space = get_space("nb201", 32, 10)
    jobs, sets = [], []
    for devices in DEVICE_SETS:
        budgets = budgets_for(table, space, devices, args.quantile)
        best, feasible = oracle(table, devices, budgets)
        alone, _ = oracle(table, devices[:1], budgets)
        sets.append({"devices": list(devices), "budgets_ms": budgets, "oracle": best, "feasible_cells": feasible,
                     "oracle_first_device_alone": alone})
        jobs += [dict(strategy=s, seed=seed, devices=list(devices), budgets=budgets, queries=args.queries)
                 for s in STRATEGIES for seed in range(args.seeds)]
    t0 = time.perf_counter()
    rows = []
    with multiprocessing.get_context("spawn").Pool(args.workers, _init, (args.root,)) as pool, \
            tqdm(total=len(jobs), desc="searches", unit="search") as bar:
        for row in pool.imap_unordered(run_one, jobs):
            rows.append(row)
            bar.update(1)
    wall = time.perf_counter() - t0
    report = {"quantile": args.quantile, "queries": args.queries, "seeds": args.seeds, "wall_s": round(wall, 1),
              "sets": sets, "results": []}
    print(f"{len(jobs)} searches in {wall:.0f} s; budgets at the {args.quantile:.0%} latency quantile of each device; "
          f"{args.queries} queries; {args.seeds} seeds; figure: 200-epoch CIFAR-10 test accuracy of the result")
    for s in sets:
        key = "+".join(s["devices"])
        budgets = ", ".join(f"{d} {b:.3g} ms" for d, b in s["budgets_ms"].items())
        print(f"\n{key} ({budgets}): {s['feasible_cells']} cells within every budget; oracle {s['oracle']:.2f} "
              f"(first device's budget alone: {s['oracle_first_device_alone']:.2f})")
        print(f"  {'strategy':10s} {'mean':>7s} {'std':>5s} {'regret':>7s} {'within all budgets':>19s}")
        for strategy in STRATEGIES:
            mine = [r for r in rows if r["strategy"] == strategy and r["devices"] == s["devices"]]
            finals = [r["final"] for r in mine]
            mean = statistics.fmean(finals)
            std = statistics.stdev(finals) if len(finals) > 1 else 0.0
            within = sum(r["meets_all"] for r in mine)
            agree = all(r["meets_all"] == r["reported_meets"] for r in mine)
            print(f"  {strategy:10s} {mean:7.2f} {std:5.2f} {s['oracle'] - mean:7.2f} {within:>10d}/{len(mine)}"
                  + ("" if agree else "  (result.json disagrees with the table!)"))
            report["results"].append({"devices": s["devices"], "strategy": strategy, "mean": mean, "std": std,
                                      "regret": s["oracle"] - mean, "within_all": within, "runs": len(mine)})
    atomic_write_json(Path(args.out) / "report.json", report)
    print(f"\nwrote {Path(args.out) / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
