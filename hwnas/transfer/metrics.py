"""Task metrics from torchmetrics: COCO box mAP (`MeanAveragePrecision`, pycocotools backend) and
mean IoU (`MulticlassJaccardIndex` per class, averaged over the classes that occur in the
targets or the predictions). A figure with nothing to measure (no ground truth) is None."""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import MissingDependencyError
from .data import IGNORE


class DetectionMetric:
    """COCO mAP@[.5:.95] and mAP@.5 of box predictions; crowd targets are not counted as misses."""

    def __init__(self):
        try:
            from torchmetrics.detection import MeanAveragePrecision
            import pycocotools  # noqa: F401  (the backend; imported lazily by torchmetrics)
        except ImportError as exc:
            raise MissingDependencyError(f"{exc.name} is needed for mAP; install it from requirements.txt") from None
        self.metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
        self.images = 0

    def update(self, predictions: Sequence[dict], targets: Sequence[dict]) -> None:
        preds = [{k: p[k].detach().cpu() for k in ("boxes", "scores", "labels")} for p in predictions]
        gts = [{"boxes": t["boxes"], "labels": t["labels"],
                "iscrowd": t.get("iscrowd", torch.zeros(len(t["labels"]), dtype=torch.int64))} for t in targets]
        self.metric.update(preds, gts)
        self.images += len(gts)

    def compute(self) -> dict:
        out = self.metric.compute()
        # torchmetrics reports -1 where no ground truth exists at all
        values = {"map": float(out["map"]), "map_50": float(out["map_50"]), "map_75": float(out["map_75"])}
        return {k: (v if v >= 0 else None) for k, v in values.items()} | {"images": self.images}


class SegmentationMetric:
    """Mean IoU (and pixel accuracy) over class-index masks; `IGNORE` pixels do not count."""

    def __init__(self, num_classes: int):
        from torchmetrics.classification import MulticlassJaccardIndex

        self.num_classes = num_classes
        self.metric = MulticlassJaccardIndex(num_classes=num_classes, average="none", ignore_index=IGNORE)
        self.present = torch.zeros(num_classes, dtype=torch.bool)
        self.correct = 0
        self.pixels = 0
        self.images = 0

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        """`predicted` and `target`: [B, H, W] class indices (target may hold IGNORE)."""
        predicted, target = predicted.detach().cpu(), target.detach().cpu()
        self.metric.update(predicted, target)
        valid = target != IGNORE
        for labels in (target[valid], predicted[valid]):
            self.present |= torch.bincount(labels.flatten(), minlength=self.num_classes)[: self.num_classes] > 0
        self.correct += int((predicted[valid] == target[valid]).sum())
        self.pixels += int(valid.sum())
        self.images += int(target.shape[0])

    def compute(self) -> dict:
        per_class = self.metric.compute()
        miou = float(per_class[self.present].mean()) if self.present.any() else None
        return {"miou": miou, "pixel_acc": self.correct / self.pixels if self.pixels else None,
                "iou_per_class": [round(float(v), 6) if p else None for v, p in zip(per_class, self.present)],
                "images": self.images}
