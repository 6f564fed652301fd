"""One preprocessing contract (issue 16, defect 8): the training data's normalisation and resize
policy travel with the weights into the ONNX metadata, and deploy/classify.py (no torch, no hwnas)
then classifies images exactly as PyTorch does on the same images."""

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from hwnas.core.arch import Arch, save_arch
from hwnas.cli import main
from hwnas.train.data import load_data
from hwnas.export.int8_calibration import ImageBatches
from hwnas.export.model import prepare_model
from hwnas.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from hwnas.core.spaces import get_space
from hwnas.core.weights import load_weights
from test_deploy import BLOCKED_RUN  # deploy scripts run with torch and hwnas unimportable

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 40
DIGITS = Preprocessing((0.5,) * 3, (0.5,) * 3, "stretch", "bilinear")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny network trained one epoch on digits, exported to ONNX, and digits val images as PNGs."""
    folder = tmp_path_factory.mktemp("contract")
    space = get_space("tiny")
    save_arch(Arch.create(space, {"layer0": "k3_e3", "layer1": "k3_e3", "layer2": "k5_e3"}), folder / "arch.json")
    assert main(["train", str(folder / "arch.json"), "--data", "digits", "--epochs", "1", "--max-batches", "8",
                 "--out", str(folder / "run"), "--no-progress"]) == 0
    assert main(["export", str(folder / "arch.json"), "--weights", str(folder / "run" / "model.pt"),
                 "--onnx", str(folder / "model.onnx"), "--exporter", "torchscript", "--opset", "17"]) == 0
    data = load_data("digits", resolution=32, seed=0)
    images = folder / "images"
    for label in range(10):
        (images / str(label)).mkdir(parents=True)
    for i in range(N_IMAGES):
        pixels = data.val.images[i].permute(1, 2, 0).numpy()  # exactly the uint8 image training normalises
        Image.fromarray(pixels).save(images / str(int(data.val.labels[i])) / f"{i:03d}.png")
    (folder / "labels.txt").write_text("".join(f"{c}\n" for c in range(10)))
    return folder, data


def test_the_weights_and_the_onnx_carry_the_training_datas_preprocessing(trained):
    folder, _ = trained
    assert load_weights(folder / "run" / "model.pt")["preprocessing"] == DIGITS
    meta = {p.key: p.value for p in onnx.load(str(folder / "model.onnx")).metadata_props}
    assert json.loads(meta["hwnas.mean"]) == [0.5] * 3 and json.loads(meta["hwnas.std"]) == [0.5] * 3
    assert meta["hwnas.resize"] == "stretch" and meta["hwnas.interpolation"] == "bilinear"
    report = json.loads((folder / "model.export_report.json").read_text())
    assert report["model"]["preprocessing"] == DIGITS.to_dict()


def pytorch_top1(folder, data) -> dict[str, int]:
    """Top-1 of the trained model in PyTorch on the val images, normalised as training does."""
    model = prepare_model(str(folder / "arch.json"), weights=str(folder / "run" / "model.pt")).model
    x = torch.stack([data.val[i][0] for i in range(N_IMAGES)])
    with torch.inference_mode():
        top1 = model(x).argmax(1).tolist()
    return {f"{int(data.val.labels[i])}/{i:03d}.png": top1[i] for i in range(N_IMAGES)}


def test_deploy_classify_gives_pytorchs_top1_on_the_same_images(trained):
    folder, data = trained
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, str(ROOT / "deploy" / "classify.py"), str(folder / "model.onnx"),
         str(folder / "images"), "--labels", str(folder / "labels.txt"), "--top-k", "1", "--threads", "1"],
        capture_output=True, text=True, cwd=folder, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    deployed = {}
    for line in result.stdout.splitlines()[:-1]:
        path, rest = line.split("  ", 1)
        deployed[path] = int(rest.split()[0])
    assert deployed == pytorch_top1(folder, data)


def test_imagenet_statistics_would_have_changed_predictions(trained):
    """Why the contract matters: the old fixed ImageNet normalisation changes this model's answers."""
    folder, data = trained
    want = pytorch_top1(folder, data)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.stack([data.val.images[i].numpy().astype(np.float32) / 255.0 for i in range(N_IMAGES)])
    x = (x - np.array(IMAGENET_MEAN, np.float32)[:, None, None]) / np.array(IMAGENET_STD, np.float32)[:, None, None]
    got = [int(session.run(None, {"input": x[i:i + 1]})[0].argmax()) for i in range(N_IMAGES)]
    assert any(g != w for g, w in zip(got, want.values()))


def test_int8_calibration_images_follow_the_model_contract(trained):
    folder, data = trained
    prep = load_weights(folder / "run" / "model.pt")["preprocessing"]
    batches = ImageBatches(folder / "images", 32, batch_size=4, count=4, preprocessing=prep)
    (batch,) = batches
    for image, path in zip(batch, batches.paths):
        np.testing.assert_allclose(image, data.val[int(path.stem)][0].numpy(), atol=1e-6)


def test_deploy_reads_an_engines_preprocessing_from_its_export_report(tmp_path):
    sys.path.insert(0, str(ROOT / "deploy"))
    try:
        import runners
    finally:
        sys.path.remove(str(ROOT / "deploy"))
    report = {"tensorrt": {"path": str(tmp_path / "m.engine")}, "model": {"preprocessing": DIGITS.to_dict()}}
    (tmp_path / "m.export_report.json").write_text(json.dumps(report))
    engine = types.SimpleNamespace(metadata=runners.engine_metadata(tmp_path / "m.engine"))
    mean, std, resize = runners.preprocessing(engine)
    assert mean.tolist() == [0.5] * 3 and std.tolist() == [0.5] * 3 and resize == "stretch"
    other = types.SimpleNamespace(metadata=runners.engine_metadata(tmp_path / "other.engine"))
    assert runners.preprocessing(other)[2] == "crop"  # a report of another engine is not used
