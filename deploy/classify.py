#!/usr/bin/env python3
"""Classify a folder of images with an ONNX model (ONNX Runtime) or a TensorRT engine.

    python deploy/classify.py model.onnx photos/ --top-k 3 --labels labels.txt

Needs numpy, Pillow, and onnxruntime (or tensorrt plus cuda-python for engines). Images are
prepared as the model was trained (its ONNX metadata says how: hwnas.resize 'stretch' resizes to
the input size, 'crop' the shorter side then centre-crops; bilinear; then the training data's
hwnas.mean/hwnas.std); models without that metadata get 'crop' and ImageNet's mean/std.
With class subfolders (IMAGE_DIR/<class>/*.jpg) and a labels file (one class name per line, line i
is output i), it also reports top-1 and top-k accuracy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runners import DeployError, batch_shape, open_runner, preprocessing  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm")


def parse_args(argv):
    p = argparse.ArgumentParser(description="Classify an image folder with an ONNX model or TensorRT engine.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("images", metavar="IMAGE_DIR")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--labels", metavar="FILE", default=None, help="class names, one per line")
    p.add_argument("--batch", type=int, default=None, help="batch size for a dynamic-batch model (default 8)")
    p.add_argument("--limit", type=int, default=None, help="classify at most this many images")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--providers", nargs="+", default=None)
    return p.parse_args(argv)


def load_image(path, size: int, mean: np.ndarray, std: np.ndarray, resize: str = "crop") -> np.ndarray:
    """Resize ('stretch': to size x size; 'crop': shorter side to `size`, centre crop), [0, 1],
    (x - mean) / std, CHW float32."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = size / min(w, h)
            new = (size, size) if resize == "stretch" else (max(size, round(w * scale)), max(size, round(h * scale)))
            if new != (w, h):
                img = img.resize(new, Image.BILINEAR)
            left, top = (new[0] - size) // 2, (new[1] - size) // 2
            pixels = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    except OSError as exc:
        raise DeployError(f"cannot read image {path} ({exc})") from None
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))


def list_images(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DeployError(f"image folder not found: {root}")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DeployError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return paths


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def classify(runner, paths, batch, mean, std, resize="crop"):
    """Probabilities for every image, in batches (a fixed-batch model's last batch is padded)."""
    shape = batch_shape(runner, batch or (None if runner.input_shape[0] else 8))
    size = shape[-1]
    if shape[-2] != size:
        raise DeployError(f"input {shape} is not square; this script crops square images")
    probs = []
    for start in range(0, len(paths), shape[0]):
        chunk = paths[start:start + shape[0]]
        x = np.stack([load_image(p, size, mean, std, resize) for p in chunk])
        if runner.input_shape[0] is not None and len(chunk) < shape[0]:
            x = np.concatenate([x, np.zeros((shape[0] - len(chunk), *x.shape[1:]), np.float32)])
        probs.append(softmax(np.asarray(runner.infer(x), np.float32)[: len(chunk)]))
    return np.concatenate(probs)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        root = Path(args.images)
        paths = list_images(root)[: args.limit]
        labels = None
        if args.labels:
            if not Path(args.labels).is_file():
                raise DeployError(f"labels file not found: {args.labels}")
            labels = [line.strip() for line in Path(args.labels).read_text(encoding="utf-8").splitlines() if line.strip()]
        with open_runner(args.model, threads=args.threads, providers=args.providers) as runner:
            mean, std, resize = preprocessing(runner)
            probs = classify(runner, paths, args.batch, mean, std, resize)
    except DeployError as exc:
        print(f"classify: error: {exc}", file=sys.stderr)
        return 2
    k = max(1, min(args.top_k, probs.shape[1]))
    if labels is not None and len(labels) != probs.shape[1]:
        print(f"classify: warning: {len(labels)} labels for {probs.shape[1]} outputs; printing indices", file=sys.stderr)
        labels = None
    name = (lambda i: labels[i]) if labels else (lambda i: f"class {i}")
    top1 = topk = known = 0
    for path, p in zip(paths, probs):
        order = np.argsort(-p)[:k]
        print(f"{path.relative_to(root)}  " + " | ".join(f"{name(i)} {p[i]:.3f}" for i in order))
        truth = path.parent.name if path.parent != root else None
        if labels and truth in labels:
            known += 1
            top1 += int(order[0] == labels.index(truth))
            topk += int(labels.index(truth) in order)
    if known:
        print(f"accuracy on {known} images with a known class: top-1 {top1 / known:.1%}, top-{k} {topk / known:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
