"""Few-shot latency on an unseen device, leave one device out over HELP's 19 device columns.

For each device of HELP's FBNet CIFAR-100 file (5,000 architectures measured end to end), the
other 18 columns are the known devices (additive models fitted to their 5,000 measurements, and
the four device-free ones `hwnas fewshot fit` always adds); N
architectures of the held-out device (N = 5, 10, 20, 50; 10 seeded draws each) are its
measurements, and the fit (hwnas.latency_tables.fewshot, what `hwnas fewshot fit` runs) is scored
on the remaining architectures: Spearman, share within +-10%, MAPE. A held-out raspi4, pixel3 or
eyeriss uses none of HW-NAS-Bench's tables: only HELP's columns are known devices here.

    PYTHONPATH=. python benchmarks/fewshot_latency.py --out runs/fewshot_latency.json

Draws are random architectures of HELP's file (`--select random`, HELP's protocol) or the
architectures `hwnas fewshot plan`'s rule picks from them (`--select plan`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwnas.jsonio import atomic_write_json  # noqa: E402
from hwnas.latency_tables import fewshot as fs  # noqa: E402
from hwnas.core.spaces import get_space  # noqa: E402

HELP_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "nasbench" / "help_fbnet" / "fbnet_cifar_5000archs_latency.csv"
GROUPS = {
    "gpu": ("1080ti_1", "1080ti_32", "1080ti_64", "2080ti_32", "2080ti_64", "titan_rtx_1", "titan_rtx_32",
            "titan_rtx_64", "titanx_1", "titanx_32", "titanx_64", "titanxp_1", "titanxp_64"),
    "server_cpu": ("gold_6226", "silver_4210r"),
    "phone": ("pixel3", "samsung_s7"),
    "other": ("raspi4", "eyeriss"),
}


def group_of(device: str) -> str:
    return next((g for g, members in GROUPS.items() if device in members), "other")


def select(rng: np.random.Generator, n: int, total: int, how: str, scores: np.ndarray, indices: np.ndarray) -> np.ndarray:
    if how == "random":
        return rng.choice(total, size=n, replace=False)
    return fs.spread_select(indices, scores, n, rng)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", default=str(HELP_CSV))
    p.add_argument("--n", type=int, nargs="+", default=[5, 10, 20, 50])
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--devices", nargs="*", default=None, help="held-out devices (default: all 19)")
    p.add_argument("--select", choices=("random", "plan"), default="random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/fewshot_latency.json")
    args = p.parse_args(argv)

    start = time.time()
    space = get_space("fbnet_cifar100")
    enc = fs.Encoding.of(space)
    indices, columns = fs.read_measured_csv(args.csv, space)
    feats = enc.features(indices)
    all_models = fs.known_models(enc, csvs=[("help", indices, columns)])
    devices = args.devices or list(columns)
    print(f"known-device additive fits (held-out 20% of each device's 5,000; {time.time() - start:.0f} s):")
    for m in all_models:
        if not m.holdout:  # the device-free proxies (hwnas.latency_tables.fewshot.PROXIES)
            continue
        print(f"  {m.name:14s} MAPE {m.holdout['mape_pct']:5.2f}%  Spearman {m.holdout['spearman']:.3f}")

    results = {}
    for device in devices:
        y = columns[device]
        known = [m for m in all_models if m.name != device]
        scaled = fs.scaled_predictions(known, feats)
        score = scaled.mean(axis=1)
        results[device] = {}
        for n in args.n:
            rows = []
            for draw in range(args.draws):
                rng = np.random.default_rng([args.seed, list(columns).index(device), n, draw])
                pick = select(rng, n, len(y), args.select, score, indices)
                rest = np.setdiff1d(np.arange(len(y)), pick)
                fit = fs.fit_new_device(scaled[pick], y[pick])
                pred = fit.predict(scaled[rest])
                rel = np.abs(pred - y[rest]) / y[rest]
                rows.append({"spearman": fs.spearman(pred, y[rest]), "within10": float(np.mean(rel <= 0.10)),
                             "mape_pct": float(np.mean(rel) * 100), "loo_mape_pct": fit.loo_mape_pct,
                             "ridge": fit.ridge, "free_intercept": fit.free_intercept})
            sp = np.array([r["spearman"] for r in rows])
            w10 = np.array([r["within10"] for r in rows])
            results[device][str(n)] = {
                "spearman_mean": float(sp.mean()), "spearman_std": float(sp.std()), "spearman_min": float(sp.min()),
                "within10_mean": float(w10.mean()), "within10_std": float(w10.std()),
                "mape_pct_mean": float(np.mean([r["mape_pct"] for r in rows])),
                "loo_mape_pct_mean": float(np.mean([r["loo_mape_pct"] for r in rows])), "draws": rows,
            }
        line = "  ".join(f"N={n}: {results[device][str(n)]['spearman_mean']:.3f}/{results[device][str(n)]['within10_mean']:.0%}"
                         for n in args.n)
        print(f"{device:14s} [{group_of(device)}] {line}   ({time.time() - start:.0f} s)", flush=True)

    summary = {}
    print(f"\nleave-one-device-out, {args.draws} draws ({args.select}): Spearman mean / worst device, "
          "share within +-10% mean / worst device")
    for n in args.n:
        summary[str(n)] = {}
        for name, members in [("all", devices)] + [(g, [d for d in devices if group_of(d) == g]) for g in GROUPS]:
            if not members:
                continue
            sp = {d: results[d][str(n)]["spearman_mean"] for d in members}
            w10 = {d: results[d][str(n)]["within10_mean"] for d in members}
            noise = float(np.mean([results[d][str(n)]["spearman_std"] for d in members]))
            worst_sp, worst_w = min(sp, key=sp.get), min(w10, key=w10.get)
            summary[str(n)][name] = {
                "spearman_mean": float(np.mean(list(sp.values()))), "spearman_worst": sp[worst_sp],
                "spearman_worst_device": worst_sp, "spearman_draw_std_mean": noise,
                "within10_mean": float(np.mean(list(w10.values()))), "within10_worst": w10[worst_w],
                "within10_worst_device": worst_w,
            }
            s = summary[str(n)][name]
            print(f"  N={n:<3d} {name:11s} Spearman {s['spearman_mean']:.3f} (worst {s['spearman_worst']:.3f} "
                  f"{worst_sp}; draw std {noise:.3f})   within10 {s['within10_mean']:.1%} (worst "
                  f"{s['within10_worst']:.1%} {worst_w})")
    report = {
        "benchmark": "fewshot_latency", "csv": str(args.csv), "select": args.select, "draws": args.draws,
        "n": args.n, "seed": args.seed, "seconds": round(time.time() - start, 1),
        "known_fits": {m.name: m.holdout for m in all_models if m.holdout}, "summary": summary, "devices": results,
        "targets": {"spearman_mean_N10": 0.93, "spearman_mean_N20": 0.95, "within10_gpu_server_N20": 0.90},
    }
    atomic_write_json(args.out, report)
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
