"""The `openvino` backend and `hwnas export --format openvino`: ops converted with
openvino.convert_model and compiled with the f32 precision hint on one thread, checked against
torch; the tiny space profiled and exported as an IR that matches PyTorch, carries its
preprocessing and is measured against the table's prediction; int8 by NNCF with its accuracy and
speed-up. Skipped where openvino (or nncf) is not installed: pip install -r requirements-mobile.txt.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install -r requirements-mobile.txt)")

from hwnas.cli import main  # noqa: E402
from hwnas.core.arch import Arch, save_arch  # noqa: E402
from hwnas.core.models import arch_model  # noqa: E402
from hwnas.core.spaces import get_space  # noqa: E402
from hwnas.core.weights import save_weights  # noqa: E402
from hwnas.errors import BackendError  # noqa: E402
from hwnas.export.openvino_export import read_metadata  # noqa: E402
from hwnas.preprocessing import Preprocessing  # noqa: E402
from hwnas.profilers import available_backends, get_profiler  # noqa: E402
from hwnas.runtimes.openvino import read_model  # noqa: E402

DIGITS = Preprocessing((0.5,) * 3, (0.5,) * 3)


def block() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()).eval()


@pytest.fixture
def weights(tmp_path):
    """An untrained tiny network saved as `hwnas train` saves a digits model (10 classes, 32 px)."""
    space = get_space("tiny")
    arch = Arch.create(space, space.sample(random.Random(2)))
    save_arch(arch, tmp_path / "arch.json")
    torch.manual_seed(0)
    save_weights(tmp_path / "model.pt", arch, arch_model(arch, num_classes=10).eval(), num_classes=10,
                 resolution=32, preprocessing=DIGITS)
    return tmp_path / "arch.json", tmp_path / "model.pt"


def test_openvino_runs_here_with_f32_one_thread_and_records_its_build():
    assert available_backends()["openvino"] is None
    with get_profiler("openvino") as profiler:
        options, device = profiler.options(), profiler.fingerprint()
    assert options["precision"] == "f32" and options["threads"] == 1 and options["clock"] == "thread"
    runtime = device["runtime"]
    assert runtime["version"] == ov.get_version()
    assert runtime["config"]["INFERENCE_PRECISION_HINT"] == "f32" and runtime["config"]["INFERENCE_NUM_THREADS"] == 1
    assert device["libraries"]["openvino"]


def test_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(BackendError, match="f32, bf16, f16"):
        get_profiler("openvino", precision="int4")


def test_an_op_is_converted_checked_and_timed_and_its_layers_are_reported():
    with get_profiler("openvino") as profiler:
        runner = profiler.prepare(block(), (1, 8, 16, 16))
        with runner:
            x = np.random.default_rng(1).standard_normal((1, 8, 16, 16), dtype=np.float32)
            with torch.inference_mode():
                want = block()(torch.from_numpy(x)).numpy()
            np.testing.assert_allclose(runner.infer(x), want, atol=1e-4 * np.abs(want).max())
            layers = runner.layer_times(calls=5)
        measurement = profiler.measure(block(), (1, 8, 16, 16))
    assert "Convolution" in {layer.type for layer in layers} and all(layer.ms >= 0 for layer in layers)
    assert measurement.p50_ms > 0 and measurement.param_bytes > 0


def test_profile_and_export_tiny_as_an_ir_measured_against_the_prediction(tmp_path, capsys, weights):
    arch, model = weights
    lut, xml = tmp_path / "lut.json", tmp_path / "m.xml"
    assert main(["profile", "--space", "tiny", "--backend", "openvino", "--num-classes", "10", "--out", str(lut),
                 "--quick", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", str(arch), "--weights", str(model), "--format", "openvino", "--out", str(xml),
                 "--lut", str(lut)]) == 0
    out = capsys.readouterr().out
    assert "parity: openvino f32 (CPU) vs pytorch" in out and "latency on openvino: predicted" in out
    report = json.loads((tmp_path / "m.export_report.json").read_text())
    assert report["onnx"] is None and report["parity"]["openvino"]["passed"]
    assert report["parity"]["openvino"]["tolerance"] == 1e-4
    assert report["latency"]["measured_what"] == "exported OpenVINO IR" and report["latency"]["measured_ms"] > 0
    assert report["openvino"]["layer_breakdown"]["layers"] > 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".xml", ".bin")) == ["m.bin", "m.xml"]
    ir = read_model(xml)
    meta = read_metadata(ir)
    assert json.loads(meta["hwnas.mean"]) == [0.5] * 3 and meta["hwnas.num_classes"] == "10"
    assert [o.get_any_name() for o in ir.outputs] == ["logits"]
    # weights are kept in f32 (save_model's default would compress them to f16)
    assert all(op.get_element_type() != ov.Type.f16 for op in ir.get_ops() if op.get_type_name() == "Constant")


@pytest.mark.parametrize("argv, message", [
    (["--format", "openvino", "--out", "m.onnx"], "give --out MODEL.xml"),
    (["--format", "openvino", "--out", "m.xml", "--tensorrt", "m.engine"], "--tensorrt does not apply"),
    (["--format", "openvino", "--out", "m.xml", "--int8"], "--int8 needs calibration images"),
    (["--out", "m.onnx", "--onnx", "n.onnx"], "one of them"),
])
def test_bad_openvino_export_flags_fail_in_one_line_and_write_nothing(tmp_path, capsys, weights, monkeypatch, argv,
                                                                        message):
    arch, _ = weights
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["export", str(arch), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_int8_by_nncf_states_accuracy_drop_and_speed_up(tmp_path, capsys, weights):
    pytest.importorskip("nncf", reason="nncf is not installed (pip install -r requirements-mobile.txt)")
    arch, model = weights
    xml = tmp_path / "q.xml"
    assert main(["export", str(arch), "--weights", str(model), "--format", "openvino", "--out", str(xml),
                 "--int8", "--calib-data", "digits", "--calib-count", "64"]) == 0
    out = capsys.readouterr().out
    assert "int8 speed-up" in out and "points drop" in out
    report = json.loads((tmp_path / "q.export_report.json").read_text())
    int8 = report["openvino"]["int8"]
    assert report["openvino"]["precision"] == "int8" and report["parity"]["openvino_int8"]["passed"]
    assert int8["calibration_images"] == 64 and int8["val_images"] == 359
    assert int8["accuracy_drop_points"] == pytest.approx((int8["accuracy_f32"] - int8["accuracy_int8"]) * 100)
    assert int8["speedup"] == pytest.approx(int8["f32_ms"] / int8["int8_ms"]) and int8["int8_ms"] > 0
    types = {op.get_type_name() for op in read_model(xml).get_ops()}
    assert "FakeQuantize" in types  # the IR is quantized, not the f32 one renamed
