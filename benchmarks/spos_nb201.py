"""SPOS ranking measured on NAS-Bench-201: how well the `shared` evaluator's scores order cells.

The shared evaluator (hwnas/search/spos.py, its nb201 supernet hwnas/search/cell_supernet.py) trains
one single-path supernet on the CIFAR-10 subset of ../shared/data/cifar10 (its training split minus a
held-out share), then scores --cells cells drawn at random from the 15,625 (seeded; none of them
steered the training, which draws a uniform path per batch). Each score is the top-1 accuracy of the
cell's path on held-out images, with batch-norm statistics recalibrated for that path (SPOS) and
without (the running statistics of the supernet's training). The figure is Kendall's tau-b of the
scores against NB201's 200-epoch CIFAR-10 test accuracy (looked up with hwnas/tabular/nb201.py),
beside two costless baselines: the cell's parameter count, and its count of conv edges.

Cost is process CPU time (time.process_time: every thread of this process), reported per phase;
wall time on a shared machine says little. Figures vary run to run with --seed (the drawn cells,
the supernet's initialisation and paths); run two seeds to see the spread.

  python benchmarks/spos_nb201.py                                   # the defaults (about 7 CPU-minutes)
  python benchmarks/spos_nb201.py --epochs 1 --cells 20 --calib-batches 1 --score-batches 1   # a smoke run

Writes OUT/report.json (default OUT: runs/bench_spos_nb201) and the supernet OUT/supernet.pt (a
rerun with the same settings reuses it; a killed training resumes from its last epoch).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from hwnas.core.arch import Arch  # noqa: E402
from hwnas.core.spaces import get_space  # noqa: E402
from hwnas.jsonio import atomic_write_json  # noqa: E402
from hwnas.search.spos import SharedEvaluator, SPOSConfig  # noqa: E402
from hwnas.tabular.nb201 import NB201Table  # noqa: E402
from hwnas.train.data import load_data  # noqa: E402

FINAL = "c10_test_200ep"
DATA = ROOT.parent / "shared" / "data" / "cifar10"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DATA), help="ImageFolder root with train/ and val/ (default: shared CIFAR-10)")
    p.add_argument("--resolution", type=int, default=32, help="training and scoring resolution (NB201's: 32)")
    p.add_argument("--epochs", type=int, default=10, help="supernet training epochs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (cosine to 0)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of the training split held out for scoring")
    p.add_argument("--channels", type=int, default=8, help="proxy supernet: first-stage width (NB201: 16)")
    p.add_argument("--cells-per-stage", type=int, default=2, help="proxy supernet: cells per stage (NB201: 5)")
    p.add_argument("--cells", type=int, default=100, help="cells drawn and scored")
    p.add_argument("--calib-batches", type=int, default=4, help="BN recalibration batches per cell")
    p.add_argument("--calib-batch-size", type=int, default=64)
    p.add_argument("--score-batches", type=int, default=2, help="held-out batches of 256 per score")
    p.add_argument("--seed", type=int, default=0, help="draws the cells (the supernet's split and paths: --split-seed)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench_spos_nb201"))
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def conv_edges(arch: Arch) -> int:
    return sum(op.startswith("nor_conv") for op in arch.choice_map.values())


def tau(xs, ys) -> float:
    return float(kendalltau(xs, ys).statistic)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = NB201Table.load()
    space = get_space("nb201", resolution=args.resolution)

    t0 = time.process_time()
    data = load_data(args.data, resolution=args.resolution)
    load_s = time.process_time() - t0

    config = SPOSConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, holdout=args.holdout,
                        split_seed=args.split_seed, calib_batches=args.calib_batches,
                        calib_batch_size=args.calib_batch_size, score_batches=args.score_batches,
                        supernet_channels=args.channels, supernet_cells=args.cells_per_stage)
    checkpoint = out / "supernet.pt"
    reused = checkpoint.is_file()
    t0 = time.process_time()
    recal = SharedEvaluator(space, data, config, checkpoint)
    recal.scores_path.unlink(missing_ok=True)  # scores are measured afresh; the supernet is reused if trained
    recal.prepare(progress=not args.no_progress)
    train_s = time.process_time() - t0
    plain = SharedEvaluator(space, data, dataclasses.replace(config, recalibrate=False), checkpoint)
    plain.prepare()

    rng = random.Random(args.seed)
    archs = [table.arch(i) for i in rng.sample(range(len(table.strings)), args.cells)]
    truth = [table.value(a, FINAL) for a in archs]
    scores, cost = {}, {}
    for name, evaluator in (("recalibrated", recal), ("running_stats", plain)):
        t0 = time.process_time()
        scores[name] = [evaluator.score(a, 0) for a in tqdm(archs, desc=f"score ({name})", disable=args.no_progress)]
        cost[name] = time.process_time() - t0
    params = [sum(p.numel() for p in space.build_model(a.choice_map).parameters()) for a in archs]

    report = {
        "settings": {**vars(args), "supernet": dataclasses.asdict(config), "supernet_reused": reused,
                     "train_images": len(recal.data.train), "heldout_images": len(recal.data.val),
                     "torch_threads": torch.get_num_threads()},
        "kendall_tau_vs_nb201_c10_test_200ep": {
            "spos_bn_recalibrated": tau(scores["recalibrated"], truth),
            "spos_running_bn_stats": tau(scores["running_stats"], truth),
            "baseline_param_count": tau(params, truth),
            "baseline_conv_edge_count": tau([conv_edges(a) for a in archs], truth),
        },
        "cpu_seconds": {"data_load": round(load_s, 1), "supernet_training": round(train_s, 1),
                        "score_recalibrated": round(cost["recalibrated"], 1),
                        "score_running_stats": round(cost["running_stats"], 1),
                        "total_process": round(time.process_time(), 1)},
        "supernet_log": torch.load(checkpoint, weights_only=False).get("log", []),
        "cells": [{"nb201_index": table.index(a), "test_200ep": t, "score_recal": r, "score_plain": s}
                  for a, t, r, s in zip(archs, truth, scores["recalibrated"], scores["running_stats"])],
    }
    atomic_write_json(out / "report.json", report)
    taus = report["kendall_tau_vs_nb201_c10_test_200ep"]
    print(f"SPOS on NAS-Bench-201 (CIFAR-10 subset, {report['settings']['train_images']} training images), "
          f"{args.cells} random cells, Kendall tau vs 200-epoch test accuracy:")
    for key, value in taus.items():
        print(f"  {key:<28} {value:+.3f}")
    print("CPU seconds (process" + (", supernet reused from an earlier run" if reused else "") + "): " + ", ".join(f"{k} {v}" for k, v in report["cpu_seconds"].items()))
    print(f"settings: supernet C={args.channels}, {args.cells_per_stage} cells/stage, {args.epochs} epochs of batch "
          f"{args.batch_size}, lr {args.lr}; BN recalibration {args.calib_batches}x{args.calib_batch_size} images; "
          f"score on {args.score_batches}x256 held-out images; seed {args.seed}")
    print(f"wrote {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
