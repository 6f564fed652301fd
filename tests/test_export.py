"""`hwnas export`: presets and sampled architectures of every space to ONNX, checked against
ONNX Runtime; dynamic batch; trained weights; bad input fails with one line and writes nothing.

Small resolutions (64, 32 for tiny) keep the dynamo exports to a few seconds each.
"""

import contextlib
import io
import json
import random
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from hwnas.core.arch import Arch, save_arch
from hwnas.core.presets import resolve_arch
from hwnas.cli import main
from hwnas.errors import DataError
from hwnas.export import tensorrt_engine
from hwnas.export.int8_calibration import ImageBatches, load_image
from hwnas.preprocessing import Preprocessing
from hwnas.export.model import prepare_model
from hwnas.export.parity import OnnxRuntimeRunner
from hwnas.latency_tables import LatencyTable
from hwnas.core.models import arch_model
from hwnas.core.presets import PRESETS
from hwnas.core.spaces import SPACES, get_space
from hwnas.core.weights import save_weights


def sampled_arch(space_name: str, seed: int = 1) -> Arch:
    space = get_space(space_name)
    return Arch.create(space, space.sample(random.Random(seed)))


@pytest.fixture
def tiny_arch(tmp_path):
    path = tmp_path / "tiny.json"
    save_arch(sampled_arch("tiny", seed=2), path)
    return path


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def assert_one_line_error(code, err, message):
    assert code == 2
    assert err.startswith("hwnas: error:") and "\n" not in err, err
    assert message in err, err


def ort_run(path, x):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def rel_diff(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# --- every preset and a sampled architecture of every space --------------------------------
#: DARTS's evaluation network (C=36, 20 cells: preset darts_v2, space darts) and its CPU search size
#: export as darts_tiny does, the same cell code at another width and depth; they are left out here
#: for time (2 minutes), darts_tiny stands for them (tests/test_darts_space.py checks darts_v2 itself)
DARTS_SIZES = {"preset:darts_v2", "space:darts", "space:darts_small"}
CASES = [c for c in [(f"preset:{name}", 64) for name in sorted(PRESETS)] + [
    (f"space:{name}", 32 if name == "tiny" else 64) for name in sorted(SPACES)] if c[0] not in DARTS_SIZES]


@pytest.mark.parametrize("ref, resolution", CASES, ids=[c[0] for c in CASES])
def test_presets_and_spaces_export_with_dynamic_batch_and_match_pytorch(ref, resolution, tmp_path, capsys):
    if ref.startswith("space:"):
        save_arch(sampled_arch(ref.split(":")[1]), tmp_path / "arch.json")
        ref = str(tmp_path / "arch.json")
    onnx_path = tmp_path / "model.onnx"
    torch.manual_seed(0)
    code, out, err = run_cli(["export", ref, "--onnx", str(onnx_path), "--resolution", str(resolution), "--dynamic-batch"], capsys)
    assert code == 0, err
    assert "onnx.checker: ok" in out and ": ok" in out.split("parity:")[1]

    report = json.loads((tmp_path / "model.export_report.json").read_text())
    parity = report["parity"]["onnxruntime"]
    assert parity["passed"] and parity["batches"] == [1, 3] and parity["rel_diff"] <= 1e-4
    assert report["onnx"]["input"]["shape"] == ["batch", 3, resolution, resolution]

    # independently of the export's own check: the file on disk, at batch 1 and 3, against
    # the same network rebuilt from the same seed
    onnx.checker.check_model(onnx.load(str(onnx_path)))
    torch.manual_seed(0)
    model = prepare_model(ref, resolution=resolution).model
    for batch in (1, 3):
        x = torch.randn(batch, 3, resolution, resolution)
        got = ort_run(onnx_path, x.numpy())
        with torch.inference_mode():
            want = model(x).numpy()
        assert got.shape == (batch, report["model"]["num_classes"])
        assert rel_diff(got, want) < 1e-4


# --- one tiny export, inspected by several tests --------------------------------------------
@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_export")
    arch_path = folder / "tiny.json"
    save_arch(sampled_arch("tiny", seed=2), arch_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["export", str(arch_path), "--onnx", str(folder / "tiny.onnx"), "--dynamic-batch", "--json"])
    assert code == 0
    return folder, json.loads(out.getvalue())


def test_report_contents(tiny_export):
    folder, printed = tiny_export
    report = json.loads((folder / "tiny.export_report.json").read_text())
    assert printed == report
    assert listing(folder) == ["tiny.export_report.json", "tiny.json", "tiny.onnx"]  # no exporter leftovers
    assert report["format"] == "hwnas.export_report" and report["version"] == 1
    assert report["arch"]["space"] == "tiny" and report["weights"] is None
    assert report["onnx"]["exporter"] == "dynamo" and report["onnx"]["opset"] == 18
    assert report["onnx"]["input"] == {"name": "input", "shape": ["batch", 3, 32, 32], "dynamic_batch": True}
    assert report["onnx"]["output"] == {"name": "logits", "shape": ["batch", 10]}
    parity = report["parity"]["onnxruntime"]
    assert parity["tolerance"] == 1e-4 and parity["passed"] and parity["max_abs_diff"] >= 0
    assert report["sizes"]["onnx_bytes"] == (folder / "tiny.onnx").stat().st_size
    assert report["sizes"]["engine_bytes"] is None and report["tensorrt"] is None
    assert report["latency"] is None
    assert {"torch", "onnx", "onnxruntime", "timm", "python", "hwnas"} <= set(report["versions"])
    device = report["device"]
    assert device["cpu"]["model"] and device["cpu"]["logical_cpus"] >= 1 and device["libraries"]["onnxruntime"]


def test_onnx_carries_architecture_and_preprocessing_metadata(tiny_export):
    folder, report = tiny_export
    model = onnx.load(str(folder / "tiny.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["hwnas.arch_hash"] == report["arch"]["hash"]
    assert json.loads(meta["hwnas.arch"]) == report["arch"]["definition"]
    assert meta["hwnas.resolution"] == "32" and meta["hwnas.num_classes"] == "10"
    assert json.loads(meta["hwnas.mean"]) == [0.485, 0.456, 0.406]
    assert meta["hwnas.weights_sha256"] == "untrained"


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_dynamic_batch_runs_at_any_batch(tiny_export, batch):
    folder, _ = tiny_export
    x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32), dtype=np.float32)
    assert ort_run(folder / "tiny.onnx", x).shape == (batch, 10)


def test_fixed_batch_and_torchscript_exporter_with_an_older_opset(tiny_arch, tmp_path, capsys):
    onnx_path = tmp_path / "out" / "m.onnx"
    report_path = tmp_path / "elsewhere" / "r.json"
    argv = ["export", str(tiny_arch), "--onnx", str(onnx_path), "--batch", "2", "--exporter", "torchscript",
            "--opset", "13", "--report", str(report_path)]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    model = onnx.load(str(onnx_path))
    assert [o.version for o in model.opset_import if o.domain == ""] == [13]
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 32, 32]
    report = json.loads(report_path.read_text())
    assert report["parity"]["onnxruntime"]["batches"] == [2] and report["onnx"]["exporter"] == "torchscript"
    assert listing(onnx_path.parent) == ["m.onnx"]  # the report went to --report only


# --- trained weights --------------------------------------------------------------------------
def trained_tiny(arch, num_classes=5, seed=7):
    """A tiny model whose weights differ from any fresh initialisation (as trained ones would)."""
    torch.manual_seed(seed)
    model = arch_model(arch, num_classes=num_classes)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.1)
                if "running_var" in name:
                    tensor.abs_().add_(0.5)
    return model.eval()


def test_trained_weights_export_with_their_classes_and_resolution(tiny_arch, tmp_path, capsys):
    arch = resolve_arch(str(tiny_arch))
    model = trained_tiny(arch)
    save_weights(tmp_path / "model.pt", arch, model, num_classes=5, resolution=64)
    onnx_path = tmp_path / "m.onnx"
    code, out, err = run_cli(["export", str(tiny_arch), "--weights", str(tmp_path / "model.pt"), "--onnx", str(onnx_path)], capsys)
    assert code == 0, err
    assert "weights model.pt" in out
    report = json.loads((tmp_path / "m.export_report.json").read_text())
    assert report["model"]["resolution"] == 64 and report["model"]["num_classes"] == 5
    assert report["weights"]["num_classes"] == 5 and len(report["weights"]["sha256"]) == 64
    # the ONNX file computes the trained network, not a fresh one
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        want = model(x).numpy()
    assert rel_diff(ort_run(onnx_path, x.numpy()), want) < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert meta["hwnas.weights_sha256"] == report["weights"]["sha256"]


def damaged_state_dict(arch, path):
    save_weights(path, arch, trained_tiny(arch), num_classes=5, resolution=32)
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["classifier.weight"]
    torch.save(payload, path)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "weights file not found"),
        ("corrupt", "is not a readable checkpoint"),
        ("not_hwnas", "is not an hwnas weights file"),
        ("other_arch", "weights were trained for architecture"),
        ("damaged", "1 missing (first: classifier.weight)"),
    ],
)
def test_bad_weights_fail_with_one_line_and_write_nothing(case, message, tiny_arch, tmp_path, capsys):
    arch = resolve_arch(str(tiny_arch))
    weights = tmp_path / "model.pt"
    if case == "corrupt":
        weights.write_bytes(b"\x80\x02 this is not a checkpoint")
    elif case == "not_hwnas":
        torch.save({"state_dict": {}}, weights)
    elif case == "other_arch":
        other = sampled_arch("tiny", seed=5)
        assert other != arch
        save_weights(weights, other, arch_model(other), num_classes=10, resolution=32)
    elif case == "damaged":
        damaged_state_dict(arch, weights)
    before = listing(tmp_path)
    code, _, err = run_cli(["export", str(tiny_arch), "--weights", str(weights), "--onnx", str(tmp_path / "m.onnx")], capsys)
    assert_one_line_error(code, err, message)
    assert listing(tmp_path) == before


# --- bad input: one line, exit 2, nothing written ------------------------------------------------
@pytest.mark.parametrize(
    "arch, message",
    [
        ("preset:nope", "unknown preset 'nope'"),
        ("missing.json", "neither an existing JSON file"),
        ("{broken", "not valid JSON"),
        ('{"space": "tiny", "choices": {"layer0": "k9_e9"}}', "is not allowed"),
    ],
)
def test_bad_arch_fails_cleanly(arch, message, tmp_path, capsys):
    if arch.startswith("{"):
        (tmp_path / "bad.json").write_text(arch)
        arch = str(tmp_path / "bad.json")
    elif arch.endswith(".json"):
        arch = str(tmp_path / arch)
    before = listing(tmp_path)
    code, _, err = run_cli(["export", arch, "--onnx", str(tmp_path / "m.onnx")], capsys)
    assert_one_line_error(code, err, message)
    assert listing(tmp_path) == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--int8"], "--int8 applies to a TensorRT engine"),
        (["--fp16"], "--fp16 applies to a TensorRT engine"),
        (["--tensorrt", "m.engine", "--int8"], "--int8 needs calibration images"),
        (["--tensorrt", "m.engine", "--calib-data", "."], "--calib-data is used by --int8 only"),
        (["--tensorrt", "m.engine", "--max-batch", "4"], "--max-batch applies to --dynamic-batch"),
        (["--opset", "13"], "use --exporter torchscript"),
        (["--exporter", "torchscript", "--opset", "21"], "use 9..20"),
        (["--resolution", "100"], "multiple of 32"),
        (["--batch", "0"], "batch must be >= 1"),
        (["--report", "m.onnx"], "must be different files"),
    ],
)
def test_bad_options_fail_cleanly(extra, message, tiny_arch, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    code, _, err = run_cli(["export", str(tiny_arch), "--onnx", "m.onnx", *extra], capsys)
    assert_one_line_error(code, err, message)
    assert listing(tmp_path) == before


def test_batch_and_dynamic_batch_exclude_each_other(tiny_arch, tmp_path):
    assert main(["export", str(tiny_arch), "--onnx", str(tmp_path / "m.onnx"), "--batch", "2", "--dynamic-batch"]) == 2
    assert not (tmp_path / "m.onnx").exists()


def test_failed_parity_check_writes_nothing(tiny_arch, tmp_path, capsys, monkeypatch):
    real_infer = OnnxRuntimeRunner.infer
    monkeypatch.setattr(OnnxRuntimeRunner, "infer", lambda self, x: real_infer(self, x) + 0.5)
    before = listing(tmp_path)
    argv = ["export", str(tiny_arch), "--onnx", str(tmp_path / "m.onnx"), "--exporter", "torchscript"]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "parity check failed: onnxruntime (CPUExecutionProvider) differs from pytorch")
    assert "nothing was written" in err
    assert listing(tmp_path) == before


# --- TensorRT: clean errors here, real builds where TensorRT and a GPU exist ---------------------
def test_missing_tensorrt_is_a_clean_error(tiny_arch, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    before = listing(tmp_path)
    argv = ["export", str(tiny_arch), "--onnx", str(tmp_path / "m.onnx"), "--tensorrt", str(tmp_path / "m.engine")]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "--tensorrt needs the TensorRT Python package")
    assert "requirements-gpu.txt" in err
    assert listing(tmp_path) == before


def test_tensorrt_without_a_gpu_is_a_clean_error(tiny_arch, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tensorrt_engine, "import_tensorrt", lambda: object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = listing(tmp_path)
    argv = ["export", str(tiny_arch), "--onnx", str(tmp_path / "m.onnx"), "--tensorrt", str(tmp_path / "m.engine")]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "--tensorrt needs an NVIDIA GPU")
    assert listing(tmp_path) == before


def test_engine_spec_precisions_profiles_and_tolerances():
    spec = tensorrt_engine.EngineSpec(resolution=32, batch=None, max_batch=8, fp16=True)
    assert spec.precision == "fp16" and spec.tolerance == 2e-2
    assert spec.profile_shapes() == {"min": (1, 3, 32, 32), "opt": (8, 3, 32, 32), "max": (8, 3, 32, 32)}
    assert spec.calibration_batch == 8
    assert tensorrt_engine.engine_batches(spec, (1, 3, 16)) == [1, 3, 8]
    fixed = tensorrt_engine.EngineSpec(resolution=32, batch=4, int8=True, fp16=True)
    assert fixed.precision == "int8+fp16" and fixed.tolerance == 0.25 and fixed.profile_shapes() is None
    assert fixed.calibration_batch == 4 and tensorrt_engine.engine_batches(fixed, (1, 3)) == [4]
    assert tensorrt_engine.EngineSpec(resolution=32).precision == "fp32"
    assert tensorrt_engine.EngineSpec(resolution=32).to_dict()["tf32"] is False


def _tensorrt_and_gpu():
    try:
        tensorrt_engine.check_available()
    except Exception as exc:
        return str(exc)
    return None


_NO_TRT = _tensorrt_and_gpu()


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(_NO_TRT is not None, reason=f"TensorRT engine build needs TensorRT and a GPU: {_NO_TRT}")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_builds_and_matches_onnxruntime(precision, tiny_arch, tmp_path, capsys):
    argv = ["export", str(tiny_arch), "--onnx", str(tmp_path / "m.onnx"), "--dynamic-batch", "--max-batch", "4",
            "--tensorrt", str(tmp_path / "m.engine")] + (["--fp16"] if precision == "fp16" else [])
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "m.export_report.json").read_text())
    assert report["parity"]["tensorrt"]["passed"] and report["parity"]["tensorrt"]["batches"] == [1, 3]
    assert report["tensorrt"]["precision"] == precision
    assert report["sizes"]["engine_bytes"] == (tmp_path / "m.engine").stat().st_size


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(_NO_TRT is not None, reason=f"TensorRT engine build needs TensorRT and a GPU: {_NO_TRT}")
def test_tensorrt_int8_engine_calibrates_on_real_images(tiny_arch, tmp_path, capsys, shared_data):
    argv = ["export", str(tiny_arch), "--onnx", str(tmp_path / "m.onnx"), "--batch", "8",
            "--tensorrt", str(tmp_path / "m.engine"), "--int8", "--calib-data", str(shared_data / "cifar10" / "val"),
            "--calib-count", "64"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "m.export_report.json").read_text())
    assert report["parity"]["tensorrt"]["inputs"] == "calibration image"


# --- calibration images (pure Python: runs without TensorRT) -----------------------------------
def test_calibration_batches_read_real_images(shared_data):
    val = shared_data / "cifar10" / "val"
    batches = ImageBatches(val, resolution=32, batch_size=4, count=10)
    assert len(batches) == 2 and len(batches.paths) == 8
    assert len({p.parent.name for p in batches.paths}) > 1, "classes are mixed"
    arrays = list(batches)
    assert [a.shape for a in arrays] == [(4, 3, 32, 32)] * 2 and arrays[0].dtype == np.float32
    low, high = (0 - 0.485) / 0.229, (1 - 0.406) / 0.225
    assert low - 1e-4 <= arrays[0].min() and arrays[0].max() <= high + 1e-4
    assert arrays[0].std() > 0.3  # real pixels, not a constant
    assert ImageBatches(val, 32, 4, count=10).paths == batches.paths  # same seed, same images
    (upscaled,) = ImageBatches(val, resolution=64, batch_size=2, count=2)
    assert upscaled.shape == (2, 3, 64, 64)


def test_calibration_rejects_missing_empty_and_too_small_folders(tmp_path):
    with pytest.raises(DataError, match="image folder not found"):
        ImageBatches(tmp_path / "nope", 32, 4)
    with pytest.raises(DataError, match="no images"):
        ImageBatches(tmp_path, 32, 4)
    for i in range(2):
        Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(tmp_path / f"{i}.png")
    with pytest.raises(DataError, match="fewer than one calibration batch of 4"):
        ImageBatches(tmp_path, 32, 4)


def test_load_image_keeps_aspect_ratio_and_centre_crops(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 8, 20))  # a black band at the left edge is cropped away
    img.save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", 32, Preprocessing(resize="crop"))
    assert x.shape == (3, 32, 32)
    white = (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    assert np.allclose(x[:, :, 0], white[:, None], atol=0.05)


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    path = tmp_path_factory.mktemp("lut") / "tiny_ort.json"
    assert main(["profile", "--space", "tiny", "--backend", "ort-cpu", "--out", str(path), "--quick", "--no-progress"]) == 0
    return path


def test_export_with_lut_reports_predicted_vs_measured_latency(tiny_arch, tiny_table, tmp_path, capsys):
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(tiny_arch), "--onnx", str(onnx_path), "--lut", str(tiny_table)]) == 0
    out = capsys.readouterr().out
    assert "latency on ort-cpu: predicted" in out
    report = json.loads((tmp_path / "m.export_report.json").read_text())
    latency = report["latency"]
    assert latency["backend"] == "ort-cpu" and latency["measured_what"] == "exported ONNX model"
    assert latency["measured_ms"] > 0 and latency["predicted_ms"] > 0
    assert latency["num_classes"] == 10
    # the graph deployed is the one the table's ops were measured as: same exporter and opset
    options = LatencyTable.load(tiny_table).backend_options
    assert (report["onnx"]["exporter"], report["onnx"]["opset"]) == (options["exporter"], options["opset"])
    assert latency["error_pct"] == pytest.approx((latency["predicted_ms"] / latency["measured_ms"] - 1) * 100)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dynamic-batch"], "drop --dynamic-batch or --lut"),
        (["--batch", "2"], "measured at batch 1"),
    ],
)
def test_export_with_unusable_lut_fails_before_writing(extra, message, tiny_arch, tiny_table, tmp_path, capsys):
    onnx_path = tmp_path / "out" / "m.onnx"
    assert main(["export", str(tiny_arch), "--onnx", str(onnx_path), "--lut", str(tiny_table), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_export_with_lut_of_another_space_fails_before_writing(tiny_table, tmp_path, capsys):
    assert main(["export", "preset:fbnet_c", "--onnx", str(tmp_path / "m.onnx"), "--lut", str(tiny_table)]) == 2
    assert "the table lacks" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
