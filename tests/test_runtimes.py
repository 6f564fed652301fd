"""The runtime layer: one runner protocol per runtime, a registry by backend name, and one
end-to-end timing path (measure_end_to_end) that the task head's cost runs on the LUT's backend."""

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import hwnas
from hwnas.core.arch import Arch
from hwnas.errors import BackendError, ExportError
from hwnas.export.parity import OnnxRuntimeRunner
from hwnas.profilers.table import LatencyTable
from hwnas.profilers import StatsConfig, get_profiler
from hwnas.profilers.end_to_end import measure_end_to_end
from hwnas.profilers.interleaved import RoundRecord, RoundsConfig
from hwnas.runtimes import RUNTIMES, Runner, Runtime, get_runtime, load_runner
from hwnas.runtimes.onnx_model import export_onnx
from hwnas.runtimes.ort import OrtRunner, OrtSettings
from hwnas.core.spaces import get_space

SHAPE = (1, 3, 8, 8)
QUICK = RoundsConfig.quick()


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()


def eager(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


CPU_RUNTIMES = {
    "torch-cpu": {"threads": 1, "clock": "thread"},
    "ort-cpu": {"threads": 1, "name": "ort-cpu"},
}


@pytest.mark.parametrize("backend", sorted(CPU_RUNTIMES))
def test_each_cpu_runtime_prepares_runs_and_closes_like_torch_eager(backend):
    module = small_net()
    x = np.random.default_rng(1).standard_normal(SHAPE, dtype=np.float32)
    runner = load_runner(backend, module, SHAPE, **CPU_RUNTIMES[backend])
    assert isinstance(runner, Runner)
    with runner:  # active already (profilers time it at once); entering again is harmless
        np.testing.assert_allclose(runner.infer(x), eager(module, x), rtol=1e-4, atol=1e-5)
        assert runner.time_call() > 0
        memory = runner.memory()
        assert memory.param_bytes == sum(p.numel() * 4 for p in module.parameters())
        assert memory.input_bytes == int(np.prod(SHAPE)) * 4
    runner.close()  # twice is harmless


def test_onnx_runtimes_run_onnx_bytes_as_they_are():
    module = small_net()
    x = np.random.default_rng(2).standard_normal(SHAPE, dtype=np.float32)
    onnx_bytes = export_onnx(module, torch.from_numpy(x), "torchscript").SerializeToString()
    assert get_runtime("ort-cpu").runs_onnx and not get_runtime("torch-cpu").runs_onnx
    with load_runner("ort-cpu", onnx_bytes, SHAPE) as runner:
        np.testing.assert_allclose(runner.infer(x), eager(module, x), rtol=1e-4, atol=1e-5)
        assert runner.time_call() > 0 and runner.memory().param_bytes > 0


def test_the_parity_runner_is_the_ort_runner_activated_lazily():
    module = small_net()
    x = np.random.default_rng(3).standard_normal(SHAPE, dtype=np.float32)
    onnx_bytes = export_onnx(module, torch.from_numpy(x), "torchscript").SerializeToString()
    runner = OnnxRuntimeRunner(onnx_bytes, threads=1)
    assert isinstance(runner, OrtRunner) and not runner.active  # nothing loaded until `with`
    with pytest.raises(RuntimeError, match="activate"):
        runner.infer(x)
    with runner:
        np.testing.assert_allclose(runner.infer(x), eager(module, x), rtol=1e-4, atol=1e-5)
    assert not runner.active
    with pytest.raises(ExportError, match="onnxruntime: ONNX Runtime could not load the exported model"):
        OnnxRuntimeRunner(b"not onnx").activate()
    with pytest.raises(BackendError, match="unknown graph optimisation level"):
        OrtSettings(opt_level="max")


def test_the_registry_is_keyed_by_backend_name_and_takes_new_runtimes(monkeypatch):
    from hwnas.profilers import PROFILERS

    assert set(PROFILERS) <= set(RUNTIMES)  # every profiler has its runtime
    with pytest.raises(BackendError, match="no runtime for backend 'coreml'; registered: torch-cpu"):
        get_runtime("coreml")

    class EchoRunner(Runner):  # what a mobile runtime (ExecuTorch, OpenVINO, LiteRT) provides
        def __init__(self, model, input_shape):
            self.timing_input = np.zeros(input_shape, np.float32)

        def infer(self, x):
            return x

    monkeypatch.setitem(RUNTIMES, "echo", Runtime("echo", lambda model, shape, **o: EchoRunner(model, shape)))
    with load_runner("echo", None, SHAPE) as runner:
        assert runner.infer(np.ones(2)).tolist() == [1.0, 1.0] and runner.time_call() >= 0


@pytest.mark.parametrize("backend", sorted(CPU_RUNTIMES))
def test_measure_end_to_end_times_modules_interleaved_with_a_reference(backend):
    options = {"threads": 1}
    rounds = measure_end_to_end(small_net(), SHAPE, backend, options=options, config=QUICK, stats=StatsConfig.quick())
    assert len(rounds) == QUICK.rounds and all(isinstance(r, RoundRecord) and r.reference_ms == 1.0 for r in rounds)
    named = measure_end_to_end({"a": small_net, "b": small_net()}, SHAPE, backend, options=options,
                               reference=(nn.Identity(), SHAPE), config=QUICK,
                               records={"a": rounds[:1]})  # one round of "a" already timed
    assert [len(named["a"]), len(named["b"])] == [QUICK.rounds, QUICK.rounds] and named["a"][0] == rounds[0]
    assert all(r.reference_ms != 1.0 for r in named["b"])


def test_measure_end_to_end_refuses_onnx_on_a_torch_backend():
    onnx_bytes = export_onnx(small_net(), torch.randn(SHAPE), "torchscript").SerializeToString()
    with pytest.raises(BackendError, match="torch-cpu runs torch modules, not ONNX graphs"):
        measure_end_to_end(onnx_bytes, SHAPE, "torch-cpu", config=QUICK)


def spy_on_runtimes(monkeypatch) -> list[str]:
    """Record the backend of every runner loaded from the registry."""
    loaded = []
    for name, runtime in list(RUNTIMES.items()):
        def load(model, shape, _name=name, _load=runtime.load, **options):
            loaded.append(_name)
            return _load(model, shape, **options)
        monkeypatch.setitem(RUNTIMES, name, replace(runtime, load=load))
    return loaded


def torch_table() -> LatencyTable:
    profiler = get_profiler("torch-cpu", clock="thread")
    return LatencyTable(backend="torch-cpu", backend_options=profiler.options(), device=profiler.fingerprint())


def test_the_task_head_is_timed_on_the_tables_own_backend(monkeypatch):
    from hwnas.transfer import latency

    monkeypatch.setattr(latency, "END_TO_END", RoundsConfig.quick())
    tiny = Arch.create(get_space("tiny"), {"layer0": "k3_e3", "layer1": "k5_e3", "layer2": "k3_e1"})
    loaded = spy_on_runtimes(monkeypatch)
    cost = latency.task_head_cost_ms(tiny, "lraspp", 64, table=torch_table())
    assert loaded == ["torch-cpu", "torch-cpu"]  # the task model and its backbone, on the table's torch runner
    assert np.isfinite(cost)
    loaded.clear()
    latency.task_head_cost_ms(tiny, "lraspp", 64, clock="thread")  # no table: ONNX Runtime CPU as before
    assert loaded == ["ort-cpu", "ort-cpu"]


def test_the_search_times_its_task_head_on_the_luts_backend(monkeypatch):
    from hwnas.search import run as search
    from hwnas.latency_tables.predictor import LatencyPredictor
    from hwnas.transfer import latency

    seen = {}

    def head_latency(*args, table=None, **kwargs):
        seen["table"] = table
        return latency.TaskLatency("torch-cpu", 1, "wall", 64, 3.0, 1.0, 2.0)

    monkeypatch.setattr(latency, "task_head_latency", head_latency)
    space = get_space("tiny")
    from lut_fixtures import mac_table

    table = mac_table(space)  # a full table of the space, on the torch backend
    table.backend, table.backend_options = "torch-cpu", torch_table().backend_options
    predictor = LatencyPredictor(table, space)
    monkeypatch.setattr(LatencyPredictor, "use_task_head",
                        lambda self, ms, derived=None: setattr(self, "task_head_offset_ms", ms))

    class Config:
        task_classes, task_head = 2, "lraspp"

    search.use_task_head(predictor, Config(), search.Report())
    assert seen["table"] is table


def test_end_to_end_timing_has_one_path():
    """Whole networks are timed only through measure_end_to_end; time_rounds is called by it and by
    op profiling (profilers/session.py), nowhere else."""
    root = Path(hwnas.__file__).parent
    callers = {str(p.relative_to(root)) for p in root.rglob("*.py")
               if re.search(r"\btime_rounds\(", p.read_text()) and p.name != "interleaved.py"}
    assert callers == {"profilers/end_to_end.py", "profilers/session.py"}
    users = {str(p.relative_to(root)) for p in root.rglob("*.py") if "measure_end_to_end(" in p.read_text()}
    assert {"latency_tables/validation.py", "transfer/latency.py"} <= users
    import inspect

    from hwnas.latency_tables import validation
    from hwnas.search import verify

    assert "measure_archs(" in inspect.getsource(verify.device_measure)  # verify and repair
    for function in (validation.measure_archs, validation.exported_latency):  # calibrate/validate, export report
        assert "measure_end_to_end(" in inspect.getsource(function)
    assert validation.measure_end_to_end is measure_end_to_end


def test_the_runtime_layer_imports_nothing_above_it():
    root = Path(hwnas.__file__).parent
    for path in (root / "runtimes").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"from \.\.(profilers|export|latency_tables|search|commands|transfer)\b", text), path
    for layer, other in (("profilers", "export"), ("export", "profilers")):
        for path in (root / layer).glob("*.py"):
            assert not re.search(rf"from \.\.{other}\b|hwnas\.{other}\b import", path.read_text()), path
