"""Real images for int8 calibration of TensorRT engines: an ImageFolder-style directory ->
normalised NCHW batches. (Not the latency calibration of a LUT: hwnas.latency_tables.calibration.)

Preprocessing is the model's contract (hwnas.preprocessing, read from its weights): resize
('stretch' to R x R as in training, or 'crop': shorter side to R and a centre crop; bilinear),
[0, 1] scaling, the training data's mean/std. `deploy/classify.py` does the same in numpy.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataError
from ..preprocessing import IMAGENET, Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm")


def list_images(root: str | Path) -> list[Path]:
    """Every image file under `root` (class subfolders or flat), in a stable order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root} (give a folder of images, e.g. an ImageFolder val/ split)")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return paths


def load_image(path: str | Path, resolution: int, prep: Preprocessing = IMAGENET) -> np.ndarray:
    """One image as a normalised float32 CHW array of `resolution` x `resolution`, as `prep` says."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            if prep.resize == "stretch":
                size = (resolution, resolution)
            else:
                scale = resolution / min(w, h)
                size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
            if size != (w, h):
                img = img.resize(size, Image.BILINEAR)
            left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
            img = img.crop((left, top, left + resolution, top + resolution))
            pixels = np.asarray(img, dtype=np.float32) / 255.0
    except OSError as exc:
        raise DataError(f"cannot read image {path} ({exc}); remove it from the folder") from None
    pixels = (pixels - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


class ImageBatches:
    """Up to `count` images of a folder, shuffled with a fixed seed (classes mixed), in full batches.

    The final partial batch is dropped: a TensorRT calibrator's batch size is fixed.
    """

    def __init__(self, root: str | Path, resolution: int, batch_size: int, count: int = 512, seed: int = 0,
                 preprocessing: Preprocessing = IMAGENET):
        if batch_size < 1 or count < 1:
            raise DataError(f"calibration needs batch size and image count >= 1, got {batch_size} and {count}")
        paths = list_images(root)
        random.Random(seed).shuffle(paths)
        usable = min(count, len(paths)) // batch_size * batch_size
        if usable == 0:
            raise DataError(
                f"{root} has {len(paths)} images, fewer than one calibration batch of {batch_size}; add images or lower the batch"
            )
        self.paths = paths[:usable]
        self.resolution = resolution
        self.batch_size = batch_size
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.paths) // self.batch_size

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self.paths), self.batch_size):
            chunk = self.paths[start:start + self.batch_size]
            yield np.stack([load_image(p, self.resolution, self.preprocessing) for p in chunk])
