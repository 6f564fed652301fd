"""Image-classification data for searching and training: an ImageFolder directory, scikit-learn's
bundled digits (offline, the demo default) or CIFAR-10 through torchvision (needs the network once).

Every source becomes an `ImageData`: a train and a val dataset of (3 x R x R float tensor, label)
at the training resolution R. Small sources are decoded once into a uint8 tensor in memory, so an
epoch costs no JPEG decoding; augmentation (random shift, optional flip) runs on those tensors.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import DataError
from ..preprocessing import IMAGENET, IMAGENET_MEAN, IMAGENET_STD, Preprocessing
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: ImageFolder trees whose decoded uint8 images exceed this are read lazily from disk instead
MAX_CACHE_BYTES = 2 << 30
BUILTIN = ("digits", "cifar10")


@dataclass
class ImageData:
    """A train and a val split of one classification dataset at one resolution."""

    name: str
    train: Dataset
    val: Dataset
    classes: tuple[str, ...]
    resolution: int
    #: normalisation and resize policy of these images: saved with trained weights, exported to ONNX
    preprocessing: Preprocessing = IMAGENET

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train)} train / {len(self.val)} val images, "
                f"{self.num_classes} classes, {self.resolution}px")


class TensorImages(Dataset):
    """uint8 images (N x 3 x R x R) and labels; `augment` is 'none', 'shift' or 'shift_flip'.

    'shift' is a random crop of the image padded by R/8 on every side (the CIFAR recipe);
    randomness comes from torch's global generator, so a seeded run is repeatable.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: str = "none",
                 mean=IMAGENET_MEAN, std=IMAGENET_STD):
        if augment not in ("none", "shift", "shift_flip"):
            raise ValueError(f"augment must be none, shift or shift_flip, not {augment!r}")
        self.images, self.labels, self.augment = images, labels, augment
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return _prepare(self.images[index], self.augment, self.mean, self.std), int(self.labels[index])


def _prepare(image: torch.Tensor, augment: str, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 3 x R x R -> normalised float, with the random shift (and flip) of training."""
    x = image.float().div_(255.0)
    if augment != "none":
        size = x.shape[-1]
        pad = max(1, size // 8)
        dy, dx = torch.randint(0, 2 * pad + 1, (2,)).tolist()
        x = F.pad(x, (pad, pad, pad, pad))[:, dy:dy + size, dx:dx + size]
        if augment == "shift_flip" and torch.rand(()) < 0.5:
            x = x.flip(-1)
    return (x - mean) / std


def load_data(source: str, resolution: int = 32, seed: int = 0, root: str | os.PathLike | None = None) -> ImageData:
    """`source` is 'digits', 'cifar10' or an ImageFolder directory with train/ and val/ subfolders."""
    if resolution < 8 or resolution > 1024:
        raise DataError(f"training resolution {resolution} is out of range; use 8..1024 (e.g. 32 or 64)")
    if source == "digits":
        return load_digits_data(resolution, seed)
    if source == "cifar10":
        return load_cifar10(resolution, root)
    return load_image_folder(source, resolution)


def peek_num_classes(source: str) -> int | None:
    """The class count of `source` without decoding it (None for a folder `load_data` would refuse)."""
    if source in ("digits", "cifar10"):
        return 10
    train = Path(source) / "train"
    if not train.is_dir():
        return None
    return len(_class_files(train)) or None


def load_digits_data(resolution: int = 32, seed: int = 0, val_fraction: float = 0.2) -> ImageData:
    """scikit-learn's 1,797 8x8 handwritten digits, upsampled to `resolution` and made RGB;
    a deterministic (by `seed`) stratified train/val split. Bundled with scikit-learn: no download."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(digits.target.astype(np.int64))
    rng = np.random.default_rng(seed)
    val_idx = []
    for c in range(10):
        idx = np.flatnonzero(digits.target == c)
        val_idx.extend(rng.permutation(idx)[: int(round(len(idx) * val_fraction))].tolist())
    is_val = np.zeros(len(labels), dtype=bool)
    is_val[val_idx] = True
    train_idx, val_idx = torch.from_numpy(np.flatnonzero(~is_val)), torch.from_numpy(np.flatnonzero(is_val))
    prep = Preprocessing((0.5,) * 3, (0.5,) * 3)
    # digits are not mirror-symmetric: shift only
    train = TensorImages(images[train_idx], labels[train_idx], "shift", prep.mean, prep.std)
    val = TensorImages(images[val_idx], labels[val_idx], "none", prep.mean, prep.std)
    return ImageData("digits", train, val, tuple(str(c) for c in range(10)), resolution, prep)


def load_cifar10(resolution: int = 32, root: str | os.PathLike | None = None) -> ImageData:
    """CIFAR-10 through torchvision, downloaded once to `root` (default ~/.cache/hwnas/cifar10)."""
    from torchvision.datasets import CIFAR10

    root = Path(root or Path.home() / ".cache" / "hwnas" / "cifar10")
    splits = {}
    for split, train in (("train", True), ("val", False)):
        try:
            ds = CIFAR10(str(root), train=train, download=False)
        except RuntimeError:
            try:
                ds = CIFAR10(str(root), train=train, download=True)
            except Exception as exc:  # offline: URLError, socket errors, ...
                raise DataError(
                    f"CIFAR-10 is not in {root} and could not be downloaded ({type(exc).__name__}); this machine may be "
                    f"offline: give an ImageFolder directory instead (e.g. --data ../shared/data/cifar10) or --data digits"
                ) from None
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        if resolution != 32:
            images = _resize_uint8(images, resolution)
        splits[split] = (images, torch.tensor(ds.targets, dtype=torch.int64))
    train = TensorImages(*splits["train"], "shift_flip")
    val = TensorImages(*splits["val"], "none")
    return ImageData("cifar10", train, val, tuple(ds.classes), resolution)


def _resize_uint8(images: torch.Tensor, resolution: int, chunk: int = 2048) -> torch.Tensor:
    out = []
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].float()
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
        out.append(x.clamp(0, 255).round().to(torch.uint8))
    return torch.cat(out)


def _class_files(split_dir: Path) -> dict[str, list[Path]]:
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = {c: sorted(f for f in (split_dir / c).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES) for c in classes}
    return files


def load_image_folder(directory: str | os.PathLike, resolution: int = 32) -> ImageData:
    """A torchvision-ImageFolder tree: DIR/train/CLASS/*.jpg and DIR/val/CLASS/*.jpg, same classes."""
    root = Path(directory)
    hint = "expected DIR/train/CLASS/IMAGE and DIR/val/CLASS/IMAGE (torchvision ImageFolder layout), or --data digits"
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist; {hint}")
    per_split = {}
    for split in ("train", "val"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(f"data directory {root} has no {split}/ subfolder; {hint}")
        files = _class_files(split_dir)
        if not files:
            raise DataError(f"{split_dir} has no class subfolders; {hint}")
        empty = [c for c, fs in files.items() if not fs]
        if empty:
            raise DataError(f"class folder {split_dir / empty[0]} holds no images ({', '.join(IMAGE_SUFFIXES)}); {hint}")
        per_split[split] = files
    if list(per_split["train"]) != list(per_split["val"]):
        diff = sorted(set(per_split["train"]) ^ set(per_split["val"]))
        raise DataError(f"{root}: train/ and val/ have different classes (e.g. {diff[0]!r}); give both the same class folders")
    classes = tuple(per_split["train"])
    if len(classes) < 2:
        raise DataError(f"{root}: needs at least 2 classes, found {len(classes)}")
    count = sum(len(fs) for split in per_split.values() for fs in split.values())
    if count * 3 * resolution * resolution <= MAX_CACHE_BYTES:
        train = _decode_split(per_split["train"], resolution, "shift_flip")
        val = _decode_split(per_split["val"], resolution, "none")
    else:
        train = _LazyImages(per_split["train"], resolution, train=True)
        val = _LazyImages(per_split["val"], resolution, train=False)
    return ImageData(root.name or str(root), train, val, classes, resolution)


def _read_image(path: Path, resolution: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (resolution, resolution):
                img = img.resize((resolution, resolution), Image.BILINEAR)
            return np.array(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path} ({type(exc).__name__}); remove or replace it") from None


def _flat(files: dict[str, list[Path]]) -> list[tuple[Path, int]]:
    return [(f, label) for label, c in enumerate(files) for f in files[c]]


def _decode_split(files: dict[str, list[Path]], resolution: int, augment: str) -> TensorImages:
    items = _flat(files)
    images = torch.empty((len(items), 3, resolution, resolution), dtype=torch.uint8)
    for i, (path, _) in enumerate(items):
        images[i] = torch.from_numpy(_read_image(path, resolution)).permute(2, 0, 1)
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return TensorImages(images, labels, augment)


class _LazyImages(Dataset):
    """Images read from disk on every access (trees too large to decode into memory)."""

    def __init__(self, files: dict[str, list[Path]], resolution: int, train: bool):
        self.items = _flat(files)
        self.resolution = resolution
        self.labels = torch.tensor([label for _, label in self.items], dtype=torch.int64)
        self.augment = "shift_flip" if train else "none"
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, label = self.items[index]
        image = torch.from_numpy(_read_image(path, self.resolution)).permute(2, 0, 1)
        return _prepare(image, self.augment, self.mean, self.std), label


def without_augmentation(ds: Dataset) -> Dataset:
    """The same images without the training augmentation (a shallow copy sharing the tensors): a
    held-out part of the training set is scored on what it is, not on random shifts and flips
    drawn from torch's global generator (which would make a score depend on what ran before)."""
    if isinstance(ds, Subset):
        return Subset(without_augmentation(ds.dataset), ds.indices)
    if getattr(ds, "augment", "none") == "none":
        return ds
    plain = copy.copy(ds)
    plain.augment = "none"
    return plain


def dataset_labels(ds: Dataset) -> torch.Tensor:
    """Labels of a dataset made here (or a Subset of one) without decoding images."""
    if isinstance(ds, Subset):
        return dataset_labels(ds.dataset)[torch.as_tensor(ds.indices)]
    return ds.labels


def split_train(ds: Dataset, fraction: float, seed: int) -> tuple[Subset, Subset]:
    """Stratified deterministic split of a training set: (1 - fraction) and fraction of every class.

    The supernet search trains weights on the first part and architecture parameters on the
    second, as FBNet does (80% / 20%).
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must be between 0 and 1, got {fraction}")
    labels = dataset_labels(ds).numpy()
    rng = np.random.default_rng(seed)
    second = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        second.extend(idx[: max(1, int(round(len(idx) * fraction)))].tolist())
    mask = np.zeros(len(labels), dtype=bool)
    mask[second] = True
    first_idx, second_idx = np.flatnonzero(~mask).tolist(), np.flatnonzero(mask).tolist()
    if not first_idx:
        raise DataError(f"the training set ({len(labels)} images) is too small to split")
    return Subset(ds, first_idx), Subset(ds, second_idx)


def make_loader(ds: Dataset, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0,
                num_workers: int = 0, drop_last: bool = False) -> DataLoader:
    """A DataLoader whose shuffling depends only on (seed, epoch): a resumed run sees the same order."""
    generator = torch.Generator()
    generator.manual_seed(seed * 100_003 + epoch)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, drop_last=drop_last and len(ds) > batch_size)
