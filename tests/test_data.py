"""Data sources: digits (built-in), ImageFolder trees, CIFAR-10 offline, splits and loaders."""

import numpy as np
import pytest
import torch
from PIL import Image

from hwnas.train.data import load_data, make_loader, split_train
from hwnas.errors import DataError


def _digit_folder(root, classes=(0, 1, 2), per_class=(4, 2)):
    """A small ImageFolder tree of real digits images (8x8 gray, saved as PNG)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for split, count in zip(("train", "val"), per_class):
        for c in classes:
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            idx = np.flatnonzero(digits.target == c)[:count] + (0 if split == "train" else 50)
            for i in idx:
                Image.fromarray((digits.images[i] * 16).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def test_digits_are_real_images_at_the_training_resolution():
    data = load_data("digits", resolution=32, seed=0)
    assert data.num_classes == 10 and data.resolution == 32
    assert len(data.train) + len(data.val) == 1797
    x, y = data.val[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    assert torch.equal(x[0], x[1])  # gray made RGB


def test_digits_split_is_deterministic_by_seed():
    a, b, c = (load_data("digits", 16, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.val.labels, b.val.labels) and torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)
    counts = torch.bincount(a.val.labels, minlength=10)
    assert counts.min() >= 30  # stratified: every class in val


def test_image_folder_from_real_digits(tmp_path):
    data = load_data(str(_digit_folder(tmp_path / "d")), resolution=16)
    assert data.classes == ("class0", "class1", "class2")
    assert (len(data.train), len(data.val)) == (12, 6)
    x, y = data.train[5]
    assert x.shape == (3, 16, 16) and y == 1


@pytest.mark.parametrize("breakage, message", [
    ("missing", "does not exist"),
    ("no_val", "no val/ subfolder"),
    ("empty_class", "holds no images"),
    ("class_mismatch", "different classes"),
    ("corrupt", "cannot read image"),
])
def test_malformed_data_dirs_are_clear_errors(tmp_path, breakage, message):
    root = _digit_folder(tmp_path / "d")
    if breakage == "missing":
        root = tmp_path / "nowhere"
    elif breakage == "no_val":
        for f in (root / "val").rglob("*.png"):
            f.unlink()
        for d in sorted((root / "val").iterdir()):
            d.rmdir()
        (root / "val").rmdir()
    elif breakage == "empty_class":
        for f in (root / "train" / "class1").iterdir():
            f.unlink()
    elif breakage == "class_mismatch":
        (root / "val" / "class2").rename(root / "val" / "class9")
    elif breakage == "corrupt":
        (root / "train" / "class0" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=message):
        load_data(str(root), resolution=16)


def test_cifar10_offline_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets

    class Offline:
        def __init__(self, root, train=True, download=False):
            if download:
                raise OSError("network unreachable")
            raise RuntimeError("Dataset not found or corrupted")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    with pytest.raises(DataError, match="offline.*ImageFolder"):
        load_data("cifar10", root=tmp_path)


def test_shared_cifar10_subset(shared_data):
    root = shared_data / "cifar10"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    data = load_data(str(root), resolution=32)
    assert data.num_classes == 10 and "airplane" in data.classes
    assert (len(data.train), len(data.val)) == (10_000, 2_000)
    assert data.train[0][0].shape == (3, 32, 32)


def test_split_is_stratified_disjoint_and_seeded():
    data = load_data("digits", 16)
    a1, b1 = split_train(data.train, 0.2, seed=3)
    a2, b2 = split_train(data.train, 0.2, seed=3)
    assert a1.indices == a2.indices and b1.indices == b2.indices
    assert not set(a1.indices) & set(b1.indices)
    assert len(a1) + len(b1) == len(data.train)
    assert abs(len(b1) - 0.2 * len(data.train)) <= 10


def test_loader_order_depends_only_on_seed_and_epoch():
    data = load_data("digits", 16)
    labels = lambda epoch: torch.cat([y for _, y in make_loader(data.val, 64, True, seed=1, epoch=epoch)])
    assert torch.equal(labels(2), labels(2))
    assert not torch.equal(labels(2), labels(3))
