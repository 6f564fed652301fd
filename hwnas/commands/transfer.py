"""`hwnas transfer ARCH`: fine-tune an architecture's backbone with a detection or segmentation head."""

from __future__ import annotations

from pathlib import Path

from ..transfer.data import FORMATS
from ..transfer.heads import HEADS, TASKS
from ..transfer.job import TransferRequest, transfer
from ..transfer.pipeline import REFERENCE_BACKBONE, TransferConfig
from .common import COUNT, SEED


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "transfer", help="fine-tune an architecture for detection or segmentation",
        description="Put ARCH's backbone under a torchvision head (Faster R-CNN + FPN, SSDLite, LR-ASPP, DeepLabV3), "
                    "train it on a COCO-format or Penn-Fudan folder and report COCO mAP or mean IoU. Writes "
                    "RUN_DIR/metrics.json, predictions.png, model.pt, log.jsonl and a checkpoint per epoch.",
    )
    p.add_argument("arch", metavar="ARCH",
                   help=f"architecture JSON or preset:NAME, or {REFERENCE_BACKBONE} (random init, for comparison)")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--head", required=True, choices=tuple(HEADS))
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder")
    p.add_argument("--format", required=True, dest="fmt", metavar="|".join(FORMATS),
                   help="coco (DIR/annotations/*.json and the images) or pennfudan (PNGImages/ and PedMasks/)")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (must be new or empty)")
    p.add_argument("--weights", default=None, metavar="CKPT", help="initialise the backbone from `hwnas train`'s model.pt")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in RUN_DIR")
    p.add_argument("--onnx", default=None, metavar="FILE", help="export the trained task model to ONNX (parity checked)")
    p.add_argument("--resolution", type=int, default=256, help="square input size, a multiple of 32 (default 256)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (warm-up, cosine decay)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of the images held out for validation")
    p.add_argument("--max-images", type=COUNT, default=None, metavar="N", help="use N images of the folder (smoke runs)")
    p.add_argument("--latency", action="store_true",
                   help="time the task model and its backbone on ONNX Runtime CPU (the head = the difference)")
    p.add_argument("--lut", default=None, help="latency table: predict the backbone's latency beside the measurement")
    p.add_argument("--threads", type=COUNT, default=1, help="ONNX Runtime threads for --latency (default 1)")
    p.add_argument("--clock", choices=("wall", "thread"), default="wall",
                   help="wall time (default, as the LUT records it) or the calling thread's CPU time (1 thread "
                        "only; stays near the quiet figure on a busy machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_transfer)


def cmd_transfer(args) -> int:
    cfg = TransferConfig(arch=args.arch, task=args.task, head=args.head, data=args.data, fmt=args.fmt,
                         epochs=args.epochs, resolution=args.resolution, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=args.weight_decay, seed=args.seed, val_fraction=args.val_fraction,
                         max_images=args.max_images, weights=args.weights)
    request = TransferRequest(cfg, args.out, resume=args.resume, onnx=args.onnx, latency=args.latency, lut=args.lut,
                              threads=args.threads, clock=args.clock, progress=not args.no_progress)
    done = transfer(request)
    name = "box mAP" if cfg.task == "detection" else "mean IoU"
    before, after = done.headline
    print(f"{name} {after:.4f} on {done.val_images} val images after {done.result.epochs_done} epochs "
          f"(untrained {before:.4f}; {done.result.wall_s:.1f} s)")
    if done.parity is not None:
        print(f"wrote {args.onnx}: torch vs ONNX Runtime {done.parity.rel_diff:.2g} of output scale "
              f"(tolerance {done.parity.tolerance:g})")
    latency = done.latency
    if latency is not None:
        lut = (f"; backbone from the LUT {latency.predicted_backbone_ms:.2f} ms -> predicted total "
               f"{latency.predicted_total_ms:.2f} ms") if latency.predicted_backbone_ms is not None else ""
        lut += f" ({latency.derived})" if latency.derived else ""
        print(f"latency ({latency.backend}, {latency.threads} thread, {latency.clock} clock): total "
              f"{latency.total_ms:.2f} ms = backbone {latency.backbone_ms:.2f} ms + head {latency.head_ms:.2f} ms{lut}")
    print(f"wrote {Path(args.out) / 'metrics.json'} and {done.predictions}")
    return 0
