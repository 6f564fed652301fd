"""A PNG of a task model's predictions on a few validation images: boxes (ground truth green,
predictions red with scores) or masks (ground truth beside the prediction)."""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from torch import nn

from ..jsonio import atomic_write_bytes
from .data import IGNORE, TaskData


@torch.no_grad()
def predictions_png(model: nn.Module, data: TaskData, path: str | os.PathLike, count: int = 4,
                    score_thresh: float = 0.3) -> None:
    """Draw `count` validation images with their predictions; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    model.eval()
    samples = [data.val[i] for i in range(min(count, len(data.val)))]
    rows = 2 if data.task == "segmentation" else 1
    fig, axes = plt.subplots(rows, len(samples), figsize=(3 * len(samples), 3 * rows), squeeze=False)
    for col, (image, target) in enumerate(samples):
        picture = image.permute(1, 2, 0).numpy()
        if data.task == "detection":
            ax = axes[0][col]
            ax.imshow(picture)
            pred = model([image])[0]
            for box in target["boxes"].tolist():
                ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, color="lime", lw=1.5))
            for box, score, label in zip(pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist()):
                if score < score_thresh:
                    continue
                ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, color="red", lw=1))
                ax.text(box[0], box[1], f"{data.class_names[label]} {score:.2f}", color="red", fontsize=6)
        else:
            predicted = model(image[None])["out"][0].argmax(0).numpy()
            truth = target["mask"].numpy().astype(float)
            truth[truth == IGNORE] = np.nan
            for row, (mask, title) in enumerate(((truth, "truth"), (predicted, "prediction"))):
                ax = axes[row][col]
                ax.imshow(picture)
                ax.imshow(np.ma.masked_where(~(np.nan_to_num(mask) > 0), mask), alpha=0.55, cmap="tab20",
                          vmin=0, vmax=max(data.num_classes - 1, 1), interpolation="nearest")
                ax.set_title(title, fontsize=8)
        for ax in axes[:, col]:
            ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
