"""Detection and segmentation data: COCO-format JSON and Penn-Fudan, resized to square images.

A sample is `(image, target)`: a float image [3, R, R] in [0, 1] and, for detection, `boxes`
(xyxy pixels), `labels` (1..K, 0 is the background) and `iscrowd`; for segmentation `mask`,
[R, R] class indices with `IGNORE` where a crowd region lies. Crowd boxes are kept for the COCO
metric (it does not count them as misses) and left out of the training targets.

COCO masks (polygons, RLE, crowd RLE) are decoded with pycocotools. Penn-Fudan's `PedMasks`
hold instance ids (pixel value k = pedestrian k); its boxes are the extents of those masks.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import DataError

FORMATS = ("coco", "pennfudan")
IGNORE = 255


@dataclass(frozen=True)
class TaskData:
    """A dataset ready for one task: train/val splits, classes (index 0 is the background)."""

    name: str
    task: str
    resolution: int
    class_names: tuple[str, ...]
    train: Dataset
    val: Dataset

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class Samples(Dataset):
    """Decoded samples held in memory as uint8 images and small targets."""

    def __init__(self, items: Sequence[tuple[torch.Tensor, dict]]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        image, target = self.items[i]
        return image.float() / 255.0, dict(target)


@dataclass(frozen=True)
class _Record:
    """One image to decode: its path, size and a function giving its target at resolution R."""

    path: Path
    width: int
    height: int
    target: Callable[[int], dict]


def load_task_data(directory: str | Path, fmt: str, task: str, resolution: int, val_fraction: float = 0.2,
                   seed: int = 0, max_images: int | None = None, progress: bool = False) -> TaskData:
    """Read DIR in `fmt` for `task`, split it (seeded) into train and val, decode and resize."""
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if task not in ("detection", "segmentation"):
        raise DataError(f"unknown task {task!r}; choose detection or segmentation")
    if not 0 < val_fraction < 1:
        raise DataError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"data directory not found: {directory} (give the folder that holds the dataset)")
    reader = _coco_records if fmt == "coco" else _pennfudan_records
    records, class_names = reader(directory, task)
    if not records:
        raise DataError(f"{directory} holds no images for the {fmt} format; check the folder and its annotations")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    if max_images is not None:
        order = order[:max(2, max_images)]
    n_val = max(1, round(len(order) * val_fraction))
    if len(order) - n_val < 1:
        raise DataError(f"{directory}: {len(order)} images cannot make a train and a val split; add images")
    decoded = [_decode(records[i], task, resolution) for i in tqdm(order, desc=f"reading {directory.name}",
                                                                   unit="img", leave=False, disable=not progress)]
    return TaskData(f"{fmt}:{directory.name}", task, resolution, ("background", *class_names),
                    Samples(decoded[n_val:]), Samples(decoded[:n_val]))


def _decode(record: _Record, task: str, resolution: int) -> tuple[torch.Tensor, dict]:
    try:
        with Image.open(record.path) as img:
            rgb = img.convert("RGB")
            if rgb.size != (record.width, record.height):
                raise DataError(f"{record.path} is {rgb.size[0]}x{rgb.size[1]}, its annotation says "
                                f"{record.width}x{record.height}; fix the annotations")
            rgb = rgb.resize((resolution, resolution), Image.BILINEAR)
    except OSError as exc:
        raise DataError(f"cannot read image {record.path} ({exc}); check the file") from None
    image = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
    target = record.target(resolution)
    if task == "segmentation":
        return image, {"mask": target["mask"]}
    return image, {k: target[k] for k in ("boxes", "labels", "iscrowd")}


def _scale_boxes(boxes: np.ndarray, width: int, height: int, resolution: int) -> torch.Tensor:
    scale = np.array([resolution / width, resolution / height] * 2, dtype=np.float32)
    return torch.from_numpy((boxes.reshape(-1, 4) * scale).astype(np.float32))


def _resize_mask(mask: np.ndarray, resolution: int) -> torch.Tensor:
    img = Image.fromarray(mask.astype(np.uint8)).resize((resolution, resolution), Image.NEAREST)
    return torch.from_numpy(np.asarray(img, dtype=np.int64).copy())


# --- COCO --------------------------------------------------------------------------------
def coco_annotation_file(directory: Path) -> Path:
    """The one JSON in DIR/annotations (COCO's layout)."""
    folder = directory / "annotations"
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise DataError(f"no annotations file: expected COCO JSON in {folder}/ (e.g. instances_train2017.json)")
    if len(files) > 1:
        raise DataError(f"{folder} holds {len(files)} JSON files ({', '.join(f.name for f in files)}); keep one per folder")
    return files[0]


def _coco_records(directory: Path, task: str) -> tuple[list[_Record], tuple[str, ...]]:
    from pycocotools import mask as mask_utils

    ann_file = coco_annotation_file(directory)
    try:
        doc = json.loads(ann_file.read_text(encoding="utf-8"))
        images, annotations, categories = doc["images"], doc.get("annotations", []), doc["categories"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{ann_file} is not COCO JSON ({type(exc).__name__}: {exc}); it needs images, "
                        "annotations and categories") from None
    stem = ann_file.stem.split("_", 1)[1] if ann_file.stem.startswith("instances_") else ""
    candidates = ([directory / stem] if stem else []) + [directory / "images", directory]
    image_dir = next(d for d in candidates if d.is_dir())
    cats = sorted(categories, key=lambda c: c["id"])
    label_of = {c["id"]: i + 1 for i, c in enumerate(cats)}
    by_image: dict[int, list[dict]] = {}
    for ann in annotations:
        by_image.setdefault(ann["image_id"], []).append(ann)

    def target_fn(info: dict, anns: list[dict]):
        w, h = int(info["width"]), int(info["height"])

        def target(resolution: int) -> dict:
            kept = [a for a in anns if a["bbox"][2] > 0 and a["bbox"][3] > 0 and a["category_id"] in label_of]
            xywh = np.array([a["bbox"] for a in kept], dtype=np.float32).reshape(-1, 4)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            out = {"boxes": _scale_boxes(xyxy, w, h, resolution),
                   "labels": torch.tensor([label_of[a["category_id"]] for a in kept], dtype=torch.int64),
                   "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in kept], dtype=torch.int64)}
            if task == "segmentation":
                semantic = np.zeros((h, w), dtype=np.uint8)
                for a in sorted(kept, key=lambda a: int(a.get("iscrowd", 0))):  # crowd last: it wins
                    m = _decode_segmentation(mask_utils, a["segmentation"], h, w)
                    semantic[m > 0] = IGNORE if a.get("iscrowd", 0) else label_of[a["category_id"]]
                out["mask"] = _resize_mask(semantic, resolution)
            return out

        return target

    records = []
    for info in sorted(images, key=lambda i: i["id"]):
        path = image_dir / info["file_name"]
        if not path.is_file():
            raise DataError(f"image {path} listed in {ann_file.name} is missing; restore it or fix the annotations")
        records.append(_Record(path, int(info["width"]), int(info["height"]),
                               target_fn(info, by_image.get(info["id"], []))))
    return records, tuple(c["name"] for c in cats)


def _decode_segmentation(mask_utils, segm, h: int, w: int) -> np.ndarray:
    """Polygons, uncompressed RLE (crowd) or compressed RLE -> HxW uint8 mask."""
    if isinstance(segm, list):
        polys = [p for p in segm if len(p) >= 6]
        if not polys:
            return np.zeros((h, w), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        rle = mask_utils.frPyObjects(segm, h, w)
    elif isinstance(segm, dict):
        rle = dict(segm)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise DataError(f"unknown COCO segmentation {type(segm).__name__}; expected polygons or RLE")
    mask = mask_utils.decode(rle)
    if mask.shape != (h, w):
        raise DataError(f"a COCO mask is {mask.shape[1]}x{mask.shape[0]}, its image {w}x{h}; fix the annotations")
    return mask


# --- Penn-Fudan ---------------------------------------------------------------------------
def _pennfudan_records(directory: Path, task: str) -> tuple[list[_Record], tuple[str, ...]]:
    root = directory / "PennFudanPed" if (directory / "PennFudanPed").is_dir() else directory
    images_dir, masks_dir = root / "PNGImages", root / "PedMasks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise DataError(f"no annotations: {root} needs PNGImages/ and PedMasks/ (the Penn-Fudan layout)")
    records = []
    for path in sorted(images_dir.glob("*.png")):
        mask_path = masks_dir / f"{path.stem}_mask.png"
        if not mask_path.is_file():
            raise DataError(f"image {path.name} has no mask {mask_path.name} in {masks_dir}; add it or remove the image")
        width, height = _image_size(path)
        records.append(_Record(path, width, height, _pennfudan_target(mask_path, width, height)))
    return records, ("person",)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file; one line naming the file when it cannot be decoded."""
    try:
        with Image.open(path) as img:
            return img.size
    except OSError as exc:  # PIL.UnidentifiedImageError is an OSError
        raise DataError(f"cannot read image {path} ({type(exc).__name__}); remove or replace it") from None


def _pennfudan_target(mask_path: Path, width: int, height: int):
    def target(resolution: int) -> dict:
        try:
            with Image.open(mask_path) as img:
                ids = np.asarray(img)
        except OSError as exc:
            raise DataError(f"cannot read mask {mask_path} ({type(exc).__name__}); remove or replace it") from None
        if ids.shape != (height, width):
            raise DataError(f"mask {mask_path.name} is {ids.shape[1]}x{ids.shape[0]}, its image {width}x{height}; "
                            "masks must match their images")
        boxes = []
        for k in [int(v) for v in np.unique(ids) if v != 0]:
            ys, xs = np.nonzero(ids == k)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
        return {"boxes": _scale_boxes(boxes, width, height, resolution),
                "labels": torch.ones(len(boxes), dtype=torch.int64),
                "iscrowd": torch.zeros(len(boxes), dtype=torch.int64),
                "mask": _resize_mask((ids > 0).astype(np.uint8), resolution)}

    return target


# --- batches -----------------------------------------------------------------------------
def collate(batch):
    return tuple(zip(*batch))


def make_task_loader(ds: Dataset, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0,
                     drop_last: bool = False) -> DataLoader:
    """Lists of images and targets; shuffling depends only on (seed, epoch), so a resumed run
    sees the same order."""
    generator = torch.Generator()
    generator.manual_seed(seed * 100_003 + epoch)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate,
                      drop_last=drop_last and len(ds) > batch_size)


def hflip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Horizontal flip of an image and its boxes or mask."""
    width = image.shape[-1]
    target = dict(target)
    if "boxes" in target:
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
        target["boxes"] = boxes
    if "mask" in target:
        target["mask"] = target["mask"].flip(-1)
    return image.flip(-1), target


def augment(images, targets, generator: torch.Generator):
    """Training transform: a random horizontal flip per sample (drawn from `generator`)."""
    out_images, out_targets = [], []
    for image, target in zip(images, targets):
        if torch.rand((), generator=generator) < 0.5:
            image, target = hflip(image, target)
        out_images.append(image)
        out_targets.append(target)
    return out_images, out_targets
