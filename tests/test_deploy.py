"""deploy/: standalone scripts run on a model exported by hwnas, without torch or hwnas."""

import ast
import contextlib
import importlib.util
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hwnas.core.arch import Arch, save_arch
from hwnas.cli import main
from hwnas.export.int8_calibration import load_image
from hwnas.preprocessing import Preprocessing
from hwnas.core.spaces import get_space

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ALLOWED = {"numpy", "onnxruntime", "tensorrt", "cuda", "PIL", "runners"}

# run a deploy script with torch, hwnas and timm made unimportable
BLOCKED_RUN = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "hwnas", "timm", "torchvision"}:
            raise ImportError("deploy scripts must not import " + name)
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_script(script, *args, cwd):
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, str(DEPLOY / script), *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=120,
    )


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", DEPLOY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny architecture exported with a dynamic batch and with a fixed batch of 2."""
    folder = tmp_path_factory.mktemp("deploy")
    space = get_space("tiny")
    save_arch(Arch.create(space, space.sample(random.Random(3))), folder / "tiny.json")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", str(folder / "tiny.json"), "--onnx", str(folder / "dynamic.onnx"), "--dynamic-batch"]) == 0
        assert main(["export", str(folder / "tiny.json"), "--onnx", str(folder / "fixed.onnx"), "--batch", "2",
                     "--exporter", "torchscript", "--report", str(folder / "fixed_report.json")]) == 0
    return folder


def test_deploy_scripts_import_only_numpy_onnxruntime_tensorrt_cuda_pillow():
    for path in sorted(DEPLOY.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
        foreign = names - set(sys.stdlib_module_names) - ALLOWED - {"__future__"}
        assert not foreign, f"{path.name} imports {sorted(foreign)}"


def test_benchmark_runs_on_an_exported_model_without_torch_or_hwnas(tiny_models):
    result = run_script("benchmark.py", tiny_models / "dynamic.onnx", "--batch", "3", "--threads", "1",
                        "--warmup", "1", "--iters", "5", "--json", cwd=tiny_models)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["backend"] == "onnxruntime" and doc["providers"] == ["CPUExecutionProvider"]
    assert doc["input_shape"] == [3, 3, 32, 32] and doc["iters"] == 5 and doc["threads"] == 1
    lat = doc["latency_ms"]
    assert 0 < lat["min"] <= lat["p10"] <= lat["p50"] <= lat["p90"] <= lat["max"] and lat["std"] >= 0
    assert doc["throughput_ips"] == pytest.approx(3e3 / lat["mean"])


def test_benchmark_text_output_and_fixed_batch(tiny_models, capsys):
    benchmark = load_script("benchmark")
    assert benchmark.main([str(tiny_models / "fixed.onnx"), "--threads", "1", "--warmup", "0", "--iters", "2"]) == 0
    out = capsys.readouterr().out
    assert "input [2, 3, 32, 32]" in out and "p50" in out and "images/s" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["fixed.onnx", "--batch", "3"], "fixed batch of 2; export with --dynamic-batch"),
        (["missing.onnx"], "model file not found"),
        (["dynamic.onnx", "--iters", "0"], "--iters >= 1"),
        (["dynamic.onnx", "--providers", "NoSuchProvider"], "NoSuchProvider is not available"),
        (["fixed_report.json"], "ONNX Runtime cannot load"),
    ],
)
def test_benchmark_errors_are_one_line(args, message, tiny_models, capsys):
    benchmark = load_script("benchmark")
    assert benchmark.main([str(tiny_models / args[0]), *args[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("benchmark: error:") and "\n" not in err and message in err, err


def test_engines_without_tensorrt_are_a_clean_error(tiny_models, tmp_path, capsys, monkeypatch):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert load_script("benchmark").main([str(engine)]) == 2
    assert "TensorRT engines need the tensorrt package" in capsys.readouterr().err


@pytest.fixture
def image_folder(shared_data, tmp_path):
    """Three cat and two dog images of CIFAR-10's validation split, and its 10 class names."""
    val = shared_data / "cifar10" / "val"
    for cls, n in (("cat", 3), ("dog", 2)):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for src in sorted((val / cls).iterdir())[:n]:
            (tmp_path / "images" / cls / src.name).write_bytes(src.read_bytes())
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(sorted(p.name for p in val.iterdir())) + "\n")
    return tmp_path / "images", labels


def test_classify_an_image_folder_without_torch_or_hwnas(tiny_models, image_folder):
    images, labels = image_folder
    result = run_script("classify.py", tiny_models / "fixed.onnx", images, "--top-k", "3", "--labels", labels,
                        "--threads", "1", cwd=tiny_models)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 6 and lines[0].startswith("cat/") and lines[3].startswith("dog/")
    assert lines[0].count("|") == 2
    assert lines[-1].startswith("accuracy on 5 images with a known class: top-1")


def test_classify_preprocessing_matches_hwnas_calibration(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    classify = load_script("classify")
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    ours = classify.load_image(tmp_path / "x.png", 32, mean, std)
    assert ours.shape == (3, 32, 32)
    np.testing.assert_allclose(ours, load_image(tmp_path / "x.png", 32, Preprocessing(resize="crop")), atol=1e-6)
    stretched = classify.load_image(tmp_path / "x.png", 32, mean, std, "stretch")
    np.testing.assert_allclose(stretched, load_image(tmp_path / "x.png", 32, Preprocessing()), atol=1e-6)
