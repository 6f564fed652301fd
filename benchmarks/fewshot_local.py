"""Few-shot latency with this machine as the new device: N architectures `hwnas fewshot plan`
picks are measured here (ONNX Runtime CPU, 1 thread, interleaved rounds against a reference
network), the fit uses HELP's 19 devices as the known ones, and it is scored on other
architectures measured here in the same rounds (random ones of the space).

    PYTHONPATH=. python benchmarks/fewshot_local.py --n 20 --test 50 --out runs/fewshot_local.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwnas.core.arch import Arch  # noqa: E402
from hwnas.jsonio import atomic_write_json  # noqa: E402
from hwnas.latency_tables import fewshot as fs  # noqa: E402
from hwnas.latency_tables.validation import END_TO_END  # noqa: E402
from hwnas.profilers import get_profiler  # noqa: E402
from hwnas.profilers.interleaved import time_rounds  # noqa: E402
from hwnas.core.spaces import get_space  # noqa: E402
from hwnas.core.spaces.fbnet_cifar import FBNET_ABC  # noqa: E402

HELP_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "nasbench" / "help_fbnet" / "fbnet_cifar_5000archs_latency.csv"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", default=str(HELP_CSV))
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--test", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/fewshot_local.json")
    args = p.parse_args(argv)

    start = time.time()
    space = get_space("fbnet_cifar100")
    enc = fs.Encoding.of(space)
    indices, columns = fs.read_measured_csv(args.csv, space)
    models = fs.known_models(enc, csvs=[("help", indices, columns)])
    planned = fs.plan_indices(enc, args.n, args.seed, models)
    test = enc.random_indices(args.test, args.seed + 1)
    rows = np.vstack([planned, test])
    archs = [Arch.create(space, {layer.name: layer.candidates[j] for layer, j in zip(space.layers, row)}) for row in rows]
    keys = [f"{i:03d}" for i in range(len(archs))]
    profiler = get_profiler("ort-cpu", threads=1)
    shape = (1, 3, space.resolution, space.resolution)
    reference = profiler.prepare(space.build_model(space.choices_from_indices(FBNET_ABC["fbnet_c"])).eval(), shape)
    runners = {}
    with reference:
        try:
            for key, arch in zip(keys, archs):
                runners[key] = profiler.prepare(space.build_model(arch.choice_map).eval(), shape)
            print(f"prepared {len(runners)} networks ({time.time() - start:.0f} s)", flush=True)
            config = replace(END_TO_END, rounds=args.rounds)
            records = time_rounds({k: r.time_call for k, r in runners.items()}, reference.time_call, config,
                                  seed=args.seed)
        finally:
            for runner in runners.values():
                runner.close()
    r0 = statistics.median(r.reference_ms for rec in records.values() for r in rec)
    ms = np.array([statistics.median(r.normalised(r0) for r in records[k]) for k in keys])
    cv = float(np.median([np.std([r.normalised(r0) for r in records[k]]) / ms[i] for i, k in enumerate(keys)]))
    scaled = fs.scaled_predictions(models, enc.features(rows))
    fit = fs.fit_new_device(scaled[:args.n], ms[:args.n])
    pred = fit.predict(scaled[args.n:])
    true = ms[args.n:]
    rel = np.abs(pred - true) / true
    report = {
        "benchmark": "fewshot_local", "device": "this machine, ONNX Runtime CPU, 1 thread", "n": args.n,
        "test": args.test, "rounds": args.rounds, "reference_ms": r0, "round_cv_median": cv,
        "measured_ms_range": [float(ms.min()), float(ms.max())],
        "loo_mape_pct": fit.loo_mape_pct, "loo_spearman": fit.loo_spearman,
        "test_spearman": fs.spearman(pred, true), "test_mape_pct": float(rel.mean() * 100),
        "test_within10": float(np.mean(rel <= 0.10)),
        "weights": {m.name: float(w) for m, w in zip(models, fit.weights) if w > 0},
        "seconds": round(time.time() - start, 1),
    }
    print(f"this machine (ORT CPU, 1 thread): N={args.n} planned, {args.test} random held out: Spearman "
          f"{report['test_spearman']:.3f}, within +-10% {report['test_within10']:.0%}, MAPE {report['test_mape_pct']:.1f}% "
          f"(stated, leave-one-out: {fit.loo_mape_pct:.1f}%); measured {ms.min():.2f}-{ms.max():.2f} ms, "
          f"round-to-round CV {cv:.1%}")
    atomic_write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
