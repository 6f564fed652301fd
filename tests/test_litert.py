"""The `litert` backend and `hwnas export --format tflite`: modules converted by litert-torch, run
and timed end to end in the ai-edge-litert interpreter, checked against PyTorch.

Skipped without ai-edge-litert and litert-torch (litert-torch pins typing-extensions<4.13: it
lives in its own environment, see requirements-mobile.txt).
"""

import json

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (see requirements-mobile.txt)")
pytest.importorskip("litert_torch", reason="litert-torch is not installed (see requirements-mobile.txt)")

from hwnas.cli import main  # noqa: E402
from hwnas.errors import BackendError  # noqa: E402
from hwnas.profilers import available_backends, get_profiler  # noqa: E402
from hwnas.profilers.end_to_end import measure_end_to_end  # noqa: E402
from hwnas.profilers.interleaved import RoundsConfig  # noqa: E402
from hwnas.profilers.statistics import StatsConfig  # noqa: E402
from hwnas.runtimes import load_runner  # noqa: E402
from hwnas.runtimes.module_check import check_against_module  # noqa: E402
from hwnas.runtimes.litert import LiteRTRunner, convert_tflite  # noqa: E402

SHAPE = (1, 3, 16, 16)


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4)).eval()


@pytest.fixture(scope="module")
def tflite() -> bytes:
    return convert_tflite(small_net(), torch.randn(SHAPE))


def test_a_converted_model_runs_like_torch_and_a_wrong_one_is_refused(tflite):
    assert available_backends()["litert"] is None
    x = np.random.default_rng(1).standard_normal(SHAPE, dtype=np.float32)
    with torch.inference_mode():
        want = small_net()(torch.from_numpy(x)).numpy()
    with load_runner("litert", tflite, SHAPE) as runner:
        np.testing.assert_allclose(runner.infer(x), want, rtol=1e-4, atol=1e-5)
        assert runner.time_call() > 0
        check_against_module(runner, small_net(), 1e-3, "litert", "the lowered program")
        with pytest.raises(BackendError, match="disagrees"):
            check_against_module(runner, small_net(seed=1), 1e-3, "litert", "the lowered program")


def test_the_profiler_times_ops_and_networks_and_records_its_versions(tflite):
    with get_profiler("litert", stats=StatsConfig.quick()) as profiler:
        runtime = profiler.fingerprint()["runtime"]
        assert runtime["name"] == "litert" and runtime["version"] and runtime["converter"]
        assert runtime["options"] == profiler.options() == {"threads": 1, "precision": "fp32", "clock": "thread"}
        assert profiler.measure(nn.Conv2d(8, 8, 3, padding=1), (1, 8, 16, 16)).p50_ms > 0
        rounds = measure_end_to_end({"model": tflite}, SHAPE, profiler, config=RoundsConfig.quick())
    assert all(r.time_ms > 0 for r in rounds["model"])


@pytest.mark.slow
def test_tflite_export_passes_parity_and_writes_a_sidecar(tmp_path, capsys):
    import random

    from hwnas.core.arch import Arch, save_arch
    from hwnas.core.spaces import get_space

    out = tmp_path / "m.tflite"
    space = get_space("tiny")
    save_arch(Arch.create(space, space.sample(random.Random(2))), tmp_path / "a.json")
    assert main(["export", str(tmp_path / "a.json"), "--format", "tflite", "--out", str(out)]) == 0
    assert "litert fp32 vs pytorch" in capsys.readouterr().out
    report = json.loads((tmp_path / "m.export_report.json").read_text())
    assert report["parity"]["litert_fp32"]["passed"] and report["export"]["backend"] == "litert"
    assert json.loads((tmp_path / "m.tflite.meta.json").read_text())["hwnas.format"] == "tflite"
    with LiteRTRunner(out.read_bytes()) as runner:
        assert runner.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)
