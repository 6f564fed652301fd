"""The `executorch` backend (XNNPACK delegate) and `hwnas export --format pte`: ops and networks are
lowered to .pte programs, checked against PyTorch, timed single-threaded; ETDump breaks a network
down by XNNPACK kernel; int8 by PT2E quantisation reports its accuracy drop and speed-up.

Skipped without executorch (pip install -r requirements-mobile.txt).
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

pytest.importorskip("executorch", reason="executorch is not installed (pip install -r requirements-mobile.txt)")

from hwnas.cli import main  # noqa: E402
from hwnas.core.arch import Arch, save_arch  # noqa: E402
from hwnas.core.spaces import get_space  # noqa: E402
from hwnas.errors import BackendError  # noqa: E402
from hwnas.profilers import available_backends, get_profiler  # noqa: E402
from hwnas.profilers.end_to_end import measure_end_to_end  # noqa: E402
from hwnas.profilers.interleaved import RoundsConfig  # noqa: E402
from hwnas.profilers.statistics import StatsConfig  # noqa: E402
from hwnas.runtimes import Runner, load_runner  # noqa: E402
from hwnas.runtimes.executorch import ExecuTorchRunner, etdump_breakdown, lower_pte  # noqa: E402
from hwnas.runtimes.module_check import check_against_module  # noqa: E402

SHAPE = (1, 3, 16, 16)


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4)).eval()


def eager(module, x):
    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def program() -> bytes:
    return lower_pte(small_net(), torch.randn(SHAPE)).pte


def test_executorch_is_listed_as_available_here():
    assert available_backends()["executorch"] is None


def test_a_module_is_lowered_checked_and_timed_like_torch(program):
    module = small_net()
    x = np.random.default_rng(1).standard_normal(SHAPE, dtype=np.float32)
    runner = load_runner("executorch", module, SHAPE, threads=1, clock="thread")
    assert isinstance(runner, Runner)
    with runner:
        np.testing.assert_allclose(runner.infer(x), eager(module, x), rtol=1e-4, atol=1e-5)
        assert runner.time_call() > 0
        memory = runner.memory()
        assert memory.param_bytes == sum(p.numel() * 4 for p in module.parameters())
        assert memory.input_bytes == int(np.prod(SHAPE)) * 4
    # a program's bytes run as they are
    with load_runner("executorch", program, SHAPE) as runner:
        np.testing.assert_allclose(runner.infer(x), eager(module, x), rtol=1e-4, atol=1e-5)


def test_a_program_that_disagrees_with_its_module_is_refused(program):
    with ExecuTorchRunner(program, timing_shape=SHAPE) as runner:
        check_against_module(runner, small_net(), 1e-3, "executorch", "the lowered program")  # its own module: fine
        with pytest.raises(BackendError, match="disagrees with the torch module"):
            check_against_module(runner, small_net(seed=1), 1e-3, "executorch", "the lowered program")


def test_the_profiler_records_runtime_version_and_options_in_the_fingerprint():
    with get_profiler("executorch", stats=StatsConfig.quick()) as profiler:
        assert profiler.options() == {"threads": 1, "delegate": "xnnpack", "precision": "fp32", "clock": "thread"}
        runtime = profiler.fingerprint()["runtime"]
        assert runtime["name"] == "executorch" and runtime["version"].startswith("1.")
        assert "XnnpackBackend" in runtime["backends"] and runtime["options"] == profiler.options()
        m = profiler.measure(nn.Conv2d(8, 8, 3, padding=1), (1, 8, 16, 16))
        assert m.p50_ms > 0 and m.param_bytes == (8 * 8 * 9 + 8) * 4
        assert profiler.overhead_ms() > 0
    with pytest.raises(BackendError, match="--clock wall"):
        get_profiler("executorch", threads=2, clock="thread")


def test_whole_networks_are_timed_end_to_end_as_modules_and_as_programs(program):
    rounds = measure_end_to_end({"module": small_net(), "program": program}, SHAPE, "executorch",
                                config=RoundsConfig.quick())
    assert set(rounds) == {"module", "program"}
    assert all(r.time_ms > 0 for rs in rounds.values() for r in rs)


def test_etdump_breaks_a_network_down_by_xnnpack_kernel():
    kernels, execute_ms = etdump_breakdown(lower_pte(small_net(), torch.randn(SHAPE), etrecord=True), SHAPE, runs=5)
    names = [k.name for k in kernels]
    assert any(n.startswith("Convolution") for n in names), names
    assert all(k.delegated and k.calls == 5 for k in kernels)
    assert execute_ms > 0 and sum(k.p50_ms for k in kernels) <= execute_ms * 1.5
    with pytest.raises(BackendError, match="etrecord=True"):
        etdump_breakdown(lower_pte(small_net(), torch.randn(SHAPE)), SHAPE)


# --- hwnas export --format pte ---------------------------------------------------------------
@pytest.fixture
def tiny_arch(tmp_path):
    import random

    space = get_space("tiny")
    path = tmp_path / "tiny.json"
    save_arch(Arch.create(space, space.sample(random.Random(2))), path)
    return path


def test_pte_export_passes_parity_and_writes_program_sidecar_and_report(tiny_arch, tmp_path, capsys):
    from hwnas.core.models import arch_model
    from hwnas.core.presets import resolve_arch
    from hwnas.core.weights import save_weights

    arch = resolve_arch(str(tiny_arch))
    torch.manual_seed(3)
    model = arch_model(arch, num_classes=10).eval()
    save_weights(tmp_path / "model.pt", arch, model, num_classes=10, resolution=32)
    out = tmp_path / "m.pte"
    assert main(["export", str(tiny_arch), "--weights", str(tmp_path / "model.pt"), "--format", "pte",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "executorch xnnpack fp32 vs pytorch" in text and ": ok" in text
    report = json.loads((tmp_path / "m.export_report.json").read_text())
    assert report["export"]["format"] == "pte" and report["export"]["precision"] == "fp32"
    assert report["parity"]["executorch_fp32"]["passed"] and report["parity"]["executorch_fp32"]["tolerance"] == 1e-4
    assert report["versions"]["executorch"]
    kernels = report["kernels"]  # ETDump of the exported program, by XNNPACK kernel
    assert kernels["kernels"] == kernels["delegated"] > 0 and kernels["execute_ms"] > 0
    assert any(k["name"].startswith("Convolution") for k in kernels["slowest"])
    meta = json.loads((tmp_path / "m.pte.meta.json").read_text())
    assert meta["hwnas.mean"] == list(report["model"]["preprocessing"]["mean"])
    assert meta["hwnas.arch_hash"] == report["arch"]["hash"] and meta["hwnas.resolution"] == 32
    # the file written is the trained network's program
    x = np.random.default_rng(5).standard_normal((1, 3, 32, 32), dtype=np.float32)
    with ExecuTorchRunner(out.read_bytes()) as runner:
        got = runner.infer(x)
    want = eager(model, x)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("extra, message", [
    (["--onnx", "x.onnx"], "--onnx applies to --format onnx"),
    (["--dynamic-batch"], "--dynamic-batch applies to --format onnx"),
    (["--int8"], "--int8 needs calibration data"),
    (["--calib-data", "digits"], "--calib-data is used by --int8 only"),
])
def test_bad_pte_options_fail_with_one_line_and_write_nothing(extra, message, tiny_arch, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    code = main(["export", str(tiny_arch), "--format", "pte", "--out", str(out / "m.pte"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and message in err, err
    assert list(out.iterdir()) == []


def test_pte_needs_out_and_refuses_a_table_of_another_backend(tiny_arch, tmp_path, capsys):
    assert main(["export", str(tiny_arch), "--format", "pte"]) == 2
    assert "needs --out FILE" in capsys.readouterr().err
    lut = tmp_path / "ort.json"
    assert main(["profile", "--space", "tiny", "--backend", "ort-cpu", "--out", str(lut), "--quick", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", str(tiny_arch), "--format", "pte", "--out", str(tmp_path / "m.pte"), "--lut", str(lut)]) == 2
    assert "give an executorch table" in capsys.readouterr().err
    assert not (tmp_path / "m.pte").exists()


@pytest.mark.slow
def test_int8_pte_calibrates_on_images_and_reports_speedup(tiny_arch, tmp_path, capsys):
    images = tmp_path / "calib"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "q.pte"
    assert main(["export", str(tiny_arch), "--format", "pte", "--out", str(out), "--int8", "--calib-data",
                 str(images)]) == 0
    text = capsys.readouterr().out
    assert "speed-up" in text
    report = json.loads((tmp_path / "q.export_report.json").read_text())
    q = report["int8"]
    assert report["export"]["precision"] == "int8" and report["parity"]["executorch_int8"]["passed"]
    assert q["calibration"]["calibration_images"] == 8 and q["top1_fp32_pct"] is None  # unlabelled: no accuracy
    assert q["latency"]["threads"] == 1 and q["latency"]["fp32_ms"] > 0 and q["latency"]["int8_ms"] > 0
    assert q["latency"]["speedup_min"] <= q["latency"]["speedup"] <= q["latency"]["speedup_max"]
    assert q["bytes"]["int8"] > 0 and q["bytes"]["fp32"] > 0


@pytest.mark.slow
def test_int8_on_the_training_data_reports_top1_of_both_programs(tiny_arch, tmp_path, capsys):
    from hwnas.core.models import arch_model
    from hwnas.core.presets import resolve_arch
    from hwnas.core.weights import save_weights
    from hwnas.preprocessing import Preprocessing

    arch = resolve_arch(str(tiny_arch))
    save_weights(tmp_path / "model.pt", arch, arch_model(arch, num_classes=10).eval(), num_classes=10, resolution=32,
                 preprocessing=Preprocessing((0.5,) * 3, (0.5,) * 3))  # the digits' normalisation
    assert main(["export", str(tiny_arch), "--weights", str(tmp_path / "model.pt"), "--format", "pte", "--out",
                 str(tmp_path / "q.pte"), "--int8", "--calib-data", "digits", "--calib-count", "32"]) == 0
    assert "held-out images: drop" in capsys.readouterr().out
    q = json.loads((tmp_path / "q.export_report.json").read_text())["int8"]
    assert q["calibration"] == {"source": "digits", "calibration_images": 32, "accuracy_images": 359}
    assert 0 <= q["top1_int8_pct"] <= 100 and 0 <= q["top1_fp32_pct"] <= 100
    assert q["accuracy_drop_pct_points"] == pytest.approx(q["top1_fp32_pct"] - q["top1_int8_pct"])


def test_int8_on_the_training_data_needs_the_models_preprocessing(tiny_arch, tmp_path, capsys):
    # an untrained model expects ImageNet statistics; the digits are normalised otherwise
    assert main(["export", str(tiny_arch), "--format", "pte", "--out", str(tmp_path / "q.pte"), "--int8",
                 "--calib-data", "digits"]) == 2
    assert "give the data the model was trained on" in capsys.readouterr().err


@pytest.mark.slow
def test_pte_export_with_an_executorch_table_reports_predicted_vs_measured(tiny_arch, tmp_path, capsys):
    lut = tmp_path / "tiny_et.json"
    assert main(["profile", "--space", "tiny", "--backend", "executorch", "--out", str(lut), "--quick",
                 "--no-progress"]) == 0
    assert main(["export", str(tiny_arch), "--format", "pte", "--out", str(tmp_path / "m.pte"), "--lut", str(lut)]) == 0
    assert "latency on executorch: predicted" in capsys.readouterr().out
    latency = json.loads((tmp_path / "m.export_report.json").read_text())["latency"]
    assert latency["measured_what"] == "exported executorch program" and latency["measured_ms"] > 0
