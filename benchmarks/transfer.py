"""Benchmark: searched backbones transferred to Penn-Fudan detection and segmentation.

Backbones: a searched architecture (`--arch FILE`, default a uniformly sampled fbnet architecture,
seed 0), FBNet-C (preset:fbnet_c) and torchvision's mobilenet_v3_large (weights=None, the
reference). Each gets the same head, data, schedule and seed:

  detection     Faster R-CNN + FPN  -> COCO box mAP@[.5:.95] and mAP@.5 on the val split
  segmentation  LR-ASPP             -> mean IoU (background, person) on the val split

Each run reports its metric before the first step (the untrained model) and after training, so
the table shows that learning happens and how the backbones compare under one schedule.
Latency: every task model (fresh weights, on the first validation image; detectors in their
worst case, `hwnas.transfer.latency.worst_case`: the most proposals and boxes the model allows are
processed, whatever its weights) is exported whole to ONNX and timed on ONNX Runtime CPU with 1 thread at
`--latency-resolution` (default 224, the LUT's), with its backbone timed alone; the clock is the
calling thread's CPU time by default (robust to the other processes of a shared machine). For
the hwnas backbones the LUT's prediction of the backbone is given beside it.

  python benchmarks/transfer.py                      # default schedule (tens of CPU-minutes)
  python benchmarks/transfer.py --epochs 3 --max-images 80
  python benchmarks/transfer.py --smoke              # seconds: tiny images, 1 epoch

Each run lives in OUT/<task>/<backbone> (metrics.json, predictions.png, per-epoch checkpoints) and
is resumable: rerun the same command after an interruption. Writes OUT/report.json and
OUT/report.md (default OUT: runs/bench_transfer).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hwnas.core.arch import Arch, load_arch, save_arch  # noqa: E402
from hwnas.jsonio import atomic_write_json, atomic_write_text  # noqa: E402
from hwnas.profilers import StatsConfig  # noqa: E402
from hwnas.core.spaces import get_space  # noqa: E402
from hwnas.transfer.heads import build_task_model  # noqa: E402
from hwnas.transfer.latency import backbone_of, task_latency  # noqa: E402
from hwnas.transfer.plots import predictions_png  # noqa: E402
from hwnas.transfer.pipeline import (REFERENCE_BACKBONE, TransferConfig, backbone_source, headline,  # noqa: E402
                                     run_transfer)

DEFAULT_LUT = next((ROOT / "hwnas" / "latency_tables").glob("*_ort-cpu_t1.json"), None)  # the shipped table
TASKS = (("detection", "fasterrcnn", "map"), ("segmentation", "lraspp", "miou"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default=None, help="searched architecture JSON (default: a sampled fbnet arch, seed 0)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "pennfudan"))
    p.add_argument("--epochs", type=int, default=4, help="detection epochs (segmentation gets twice as many)")
    p.add_argument("--resolution", type=int, default=192, help="training resolution")
    p.add_argument("--latency-resolution", type=int, default=224)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--lut", default=str(DEFAULT_LUT))
    p.add_argument("--clock", choices=("wall", "thread"), default="thread",
                   help="thread (default): CPU time of the calling thread, robust to other processes on a shared "
                        "machine; wall: as the LUT records it (use on a quiet machine)")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench_transfer"))
    p.add_argument("--smoke", action="store_true", help="tiny images, 1 epoch, 8 images: checks the plumbing")
    return p.parse_args(argv)


def searched_arch(args, out: Path) -> str:
    if args.arch:
        load_arch(args.arch)
        return args.arch
    space = get_space("fbnet")
    path = out / "searched_arch.json"
    if not path.exists():
        save_arch(Arch.create(space, space.sample(random.Random(0))), path)
    return str(path)


def measure(ref: str, head: str, task: str, num_classes: int, resolution: int, image, lut: str | None, stats,
            clock: str):
    torch.manual_seed(0)
    source, arch = backbone_source(ref, resolution)
    model = build_task_model(source, head, num_classes, resolution)
    use_lut = lut if (arch is not None and arch.space == "fbnet" and resolution == 224) else None
    return task_latency(model, backbone_of(model), task, resolution, arch=arch, lut=use_lut, image=image,
                        stats=stats, clock=clock).to_dict()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        args.epochs, args.resolution, args.latency_resolution, args.max_images = 1, 64, 64, 8
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    backbones = {"searched": searched_arch(args, out), "fbnet_c": "preset:fbnet_c", "mobilenet_v3_large": REFERENCE_BACKBONE}
    stats = StatsConfig.quick() if args.smoke else StatsConfig(max_time_s=5.0, min_repeats=20, target_rel_ci=0.03)
    rows = []
    for task, head, metric in TASKS:
        epochs = args.epochs * (2 if task == "segmentation" else 1)
        for name, ref in backbones.items():
            cfg = TransferConfig(ref, task, head, args.data, "pennfudan", epochs, resolution=args.resolution,
                                 max_images=args.max_images)
            t0, cpu0 = time.perf_counter(), time.process_time()
            result, model, data = run_transfer(cfg, out / task / name, resume=True, progress=True)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            predictions_png(model, data, out / task / name / "predictions.png")
            before, after = headline(result, task)
            image = torch.nn.functional.interpolate(data.val[0][0][None], size=args.latency_resolution,
                                                    mode="bilinear", align_corners=False)
            latency = measure(ref, head, task, data.num_classes, args.latency_resolution, image, args.lut, stats,
                              args.clock)
            row = {"task": task, "head": head, "backbone": name, "arch": ref, "metric": metric, "untrained": before,
                   "trained": after, "final": result.metrics, "epochs": epochs, "train_images": len(data.train),
                   "val_images": len(data.val), "resolution": args.resolution, "wall_s_this_call": round(wall, 1),
                   "cpu_s_this_call": round(cpu, 1), "run_wall_s": round(result.wall_s, 1), "latency": latency}
            rows.append(row)
            print(f"{task:<12} {name:<20} {metric} untrained {before:.4f} -> trained {after:.4f}; "
                  f"latency {latency['total_ms']:.1f} ms (backbone {latency['backbone_ms']:.1f})", flush=True)
    report = {"command": " ".join(["python", "benchmarks/transfer.py", *(argv if argv is not None else sys.argv[1:])]),
              "lut": args.lut, "latency_resolution": args.latency_resolution, "threads": 1, "clock": args.clock,
              "rows": rows,
              "torch_threads": torch.get_num_threads()}
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", markdown(report))
    print(f"wrote {out / 'report.json'} and {out / 'report.md'}")
    return 0


def _fmt(value, digits=4):
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(report: dict) -> str:
    lines = [f"# Transfer benchmark (Penn-Fudan)\n", f"`{report['command']}`\n",
             f"Latency: whole task model on ONNX Runtime CPU, 1 thread, {report['latency_resolution']}px, "
             f"{report['clock']} clock, detectors in their worst case (150 proposals, 100 boxes); backbone timed "
             "alone; head = difference; LUT = the table's backbone prediction.\n",
             "| task | backbone | metric | untrained | trained | epochs | total ms | backbone ms | head ms | LUT backbone ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["rows"]:
        lat = r["latency"]
        lines.append(f"| {r['task']} ({r['head']}) | {r['backbone']} | {r['metric']} | {_fmt(r['untrained'])} | "
                     f"{_fmt(r['trained'])} | {r['epochs']} | {_fmt(lat['total_ms'], 1)} | {_fmt(lat['backbone_ms'], 1)} | "
                     f"{_fmt(lat['head_ms'], 1)} | {_fmt(lat['predicted_backbone_ms'], 1)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
