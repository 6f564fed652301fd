"""Speed-up of candidate evaluation with 1 vs 2 Ray workers on this machine, and Ray's own cost.

The workload is the one `hwnas search --ray` runs: the `scratch` evaluator (each candidate trained
briefly from scratch on digits, scored on a held-out part) over a fixed list of architectures of
the `tiny` space. Each round, in a random order, evaluates the list three ways:
  - local:  in this process, one after another (no Ray): the per-trial cost;
  - ray x1: as Ray tasks, one in flight at a time (`--batch 1`);
  - ray x2: two in flight (`--batch 2`), the two workers this 2-core machine has;
  - ray x2 batch 4: four asked at once on the same two workers (`--batch 4`): Ray starts the
    next as a worker frees, so only the batch's tail waits for its slowest trial.
The speed-up is the ratio of the x1 and x2 wall times of the same round (so a change of the
machine's speed between rounds cancels); the report gives its median, its range over rounds and
the worst round. Ray's per-task overhead is measured apart: the round trip of an empty task, one
at a time, and the throughput of many empty tasks. These feed the README's estimate of
throughput on N workers (GPUs): N / (t_trial x straggler + t_overhead) trials per second.

  python benchmarks/ray_scaling.py                 # 5 rounds of 8 candidates (~3 min)
  python benchmarks/ray_scaling.py --rounds 2 --candidates 4 --epochs 1 --max-batches 12   # a quick look

Writes OUT/report.json (default runs/bench_ray_scaling). Run it on a quiet machine: on 2 cores
anything else running takes a worker's core.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hwnas.core.arch import Arch  # noqa: E402
from hwnas.train.data import load_data  # noqa: E402
from hwnas.jsonio import atomic_write_json  # noqa: E402
from hwnas.search.ray_evaluator import RayEvaluator, RayTaskOptions  # noqa: E402
from hwnas.scaleout.ray_runtime import connected  # noqa: E402
from hwnas.search.evaluators import EvalRequest, holdout_data, ScratchEvaluator  # noqa: E402
from hwnas.core.spaces import get_space  # noqa: E402
from hwnas.train.loop import TrainConfig  # noqa: E402


def evaluate_in_batches(evaluator, requests: list[EvalRequest], batch: int) -> tuple[float, list[float]]:
    """Wall time of evaluating `requests` `batch` at a time, as the trial loop does; each trial's
    own time (in request order)."""
    t0 = time.perf_counter()
    walls = {}
    for start in range(0, len(requests), batch):
        for outcome in evaluator.evaluate_batch(requests[start:start + batch]):
            if outcome.metrics is None:
                raise RuntimeError(f"trial {outcome.number} failed: {outcome.error}")
            walls[outcome.number] = outcome.wall_s
    return time.perf_counter() - t0, [walls[r.number] for r in requests]


def straggler_factor(solo: list[float], batch: int) -> float:
    """How much longer batches of `batch` take than perfectly shared work, from the trials' solo
    times: sum over batches of the slowest / (sum of all / batch)."""
    batches = [solo[i:i + batch] for i in range(0, len(solo), batch)]
    return sum(max(b) for b in batches) / (sum(solo) / batch)


def ray_overhead(ray, calls: int = 200) -> dict:
    """Round trip of one empty task at a time, and throughput of `calls` empty tasks at once."""
    @ray.remote(num_cpus=1)
    def empty(i):
        return i

    ray.get([empty.remote(i) for i in range(8)])  # workers up
    trips = []
    for i in range(calls):
        t0 = time.perf_counter()
        ray.get(empty.remote(i))
        trips.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ray.get([empty.remote(i) for i in range(calls)])
    burst = time.perf_counter() - t0
    trips.sort()
    return {"round_trip_ms_median": 1e3 * statistics.median(trips), "round_trip_ms_p90": 1e3 * trips[int(0.9 * calls)],
            "burst_tasks_per_s": calls / burst, "calls": calls}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=8, help="architectures per round (even)")
    ap.add_argument("--epochs", type=int, default=3, help="training epochs per candidate")
    ap.add_argument("--max-batches", type=int, default=None, help="cap on training batches per epoch per candidate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench_ray_scaling")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    space = get_space("tiny")
    rng = random.Random(args.seed)
    archs = [Arch.create(space, space.sample(rng)) for _ in range(args.candidates)]
    requests = [EvalRequest(i, a, 1000 + i) for i, a in enumerate(archs)]
    data = holdout_data(load_data("digits", resolution=32, seed=args.seed), 0.2, args.seed)
    local = ScratchEvaluator(data, TrainConfig(epochs=args.epochs, batch_size=64, max_batches=args.max_batches))
    rows = []
    import ray as ray_module

    ray_module.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")  # our own 2 CPUs
    with connected() as ray:
        remote = RayEvaluator(local, RayTaskOptions(cpus=1))
        remote.prepare()
        evaluate_in_batches(remote, requests[:2], 2)  # both workers started and warm
        overhead = ray_overhead(ray)
        order_rng = random.Random(args.seed + 1)
        for r in range(args.rounds):
            ways = ["local", "ray_x1", "ray_x2", "ray_x2_batch4"]
            order_rng.shuffle(ways)
            row = {"round": r + 1, "order": ways}
            for way in ways:
                evaluator, batch = (local, 1) if way == "local" else (remote, {"ray_x1": 1, "ray_x2": 2,
                                                                                "ray_x2_batch4": 4}[way])
                wall, trial_walls = evaluate_in_batches(evaluator, requests, batch)
                row[way] = {"wall_s": wall, "trial_s": trial_walls, "trial_s_median": statistics.median(trial_walls)}
            row["speedup_x2"] = row["ray_x1"]["wall_s"] / row["ray_x2"]["wall_s"]
            row["speedup_x2_batch4"] = row["ray_x1"]["wall_s"] / row["ray_x2_batch4"]["wall_s"]
            # the speed-up's two losses: waiting for a batch's slowest trial, and two trials at once
            # running slower than one (shared caches, memory bandwidth, the driver's own CPU)
            row["straggler_x2"] = straggler_factor(row["ray_x1"]["trial_s"], 2)
            row["contention_x2"] = (sum(row["ray_x2"]["trial_s"]) / sum(row["ray_x1"]["trial_s"]))
            row["ray_cost_x1"] = row["ray_x1"]["wall_s"] / row["local"]["wall_s"]
            rows.append(row)
            print(f"round {r + 1}: local {row['local']['wall_s']:.2f} s, ray x1 {row['ray_x1']['wall_s']:.2f} s, "
                  f"ray x2 {row['ray_x2']['wall_s']:.2f} s (batch 4: {row['ray_x2_batch4']['wall_s']:.2f} s): speed-up "
                  f"{row['speedup_x2']:.2f}x ({row['speedup_x2_batch4']:.2f}x)", flush=True)
    speedups = [r["speedup_x2"] for r in rows]
    trial_s = statistics.median(r["local"]["wall_s"] / args.candidates for r in rows)
    drift = max(r["local"]["wall_s"] for r in rows) / min(r["local"]["wall_s"] for r in rows)
    report = {
        "machine": {"node": platform.node(), "processor": platform.processor(), "cpus": 2},
        "settings": vars(args), "rounds": rows, "ray_overhead": overhead,
        "speedup_x2_median": statistics.median(speedups), "speedup_x2_worst": min(speedups),
        "speedup_x2_best": max(speedups),
        "speedup_x2_batch4_median": statistics.median(r["speedup_x2_batch4"] for r in rows),
        "speedup_x2_batch4_worst": min(r["speedup_x2_batch4"] for r in rows), "trial_s_local_median": trial_s,
        "ray_x1_over_local_median": statistics.median(r["ray_cost_x1"] for r in rows),
        "machine_drift_local_max_over_min": drift,
        "straggler_x2_median": statistics.median(r["straggler_x2"] for r in rows),
        "contention_x2_median": statistics.median(r["contention_x2"] for r in rows),
        "trial_s_spread": [min(min(r["local"]["trial_s"]) for r in rows), max(max(r["local"]["trial_s"]) for r in rows)],
    }
    out = Path(args.out)
    atomic_write_json(out / "report.json", report)
    print(f"speed-up 2 vs 1 Ray workers: median {report['speedup_x2_median']:.2f}x, worst round "
          f"{report['speedup_x2_worst']:.2f}x, best {report['speedup_x2_best']:.2f}x over {args.rounds} rounds "
          f"({args.candidates} candidates, {trial_s:.2f} s each in-process)")
    print(f"with --batch 4 on the 2 workers (Ray starts the next trial as one frees): median "
          f"{report['speedup_x2_batch4_median']:.2f}x, worst round {report['speedup_x2_batch4_worst']:.2f}x")
    print(f"Ray per task: empty round trip {overhead['round_trip_ms_median']:.2f} ms median "
          f"(p90 {overhead['round_trip_ms_p90']:.2f} ms), {overhead['burst_tasks_per_s']:.0f} empty tasks/s in a burst; "
          f"one worker through Ray costs {report['ray_x1_over_local_median']:.3f}x the in-process time")
    print(f"losses of the x2 run: batches wait for their slowest trial ({report['straggler_x2_median']:.3f}x the "
          f"perfectly shared time), a trial runs {report['contention_x2_median']:.3f}x slower beside another than "
          f"alone (medians over rounds; trials take {report['trial_s_spread'][0]:.2f} to "
          f"{report['trial_s_spread'][1]:.2f} s in-process)")
    print(f"machine drift over the rounds (in-process wall, slowest/fastest): {drift:.3f}; wrote {out / 'report.json'}")
    print(json.dumps({k: report[k] for k in ("speedup_x2_median", "speedup_x2_worst", "trial_s_local_median")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
