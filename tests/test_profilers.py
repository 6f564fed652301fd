"""Backends: registry, CPU measurements (contract), memory, fingerprint, provider checks; GPU
backends run only where a GPU (and the GPU packages) are present."""

import importlib.util

import pytest
import torch
from torch import nn

from hwnas.core.build import BuildConfig, build_block
from hwnas.errors import BackendError, MissingDependencyError
from hwnas.profilers.table import device_identity
from hwnas.profilers import PROFILERS, available_backends, get_profiler
from hwnas.runtimes.fingerprint import device_fingerprint, device_slug
from hwnas.runtimes.memory import estimate_on_cpu, param_bytes
from hwnas.runtimes.ort import check_providers
from hwnas.profilers.statistics import StatsConfig

CFG = BuildConfig(stem_size=8, num_features=16)
QUICK = StatsConfig.quick()
CPU_BACKENDS = ["torch-cpu", "ort-cpu"]
HAS_CUDA = torch.cuda.is_available()


def block(spec="ir_r1_k3_s1_e3_c8", in_chs=8):
    torch.manual_seed(0)
    return build_block(spec, in_chs, CFG)


def test_registry_names():
    assert {"torch-cpu", "torch-cuda", "ort-cpu", "ort-cuda", "ort-trt", "tensorrt", "executorch", "litert"} <= set(PROFILERS)
    reasons = available_backends()
    assert reasons["torch-cpu"] is None and reasons["ort-cpu"] is None


def test_unknown_backend_lists_what_is_available():
    with pytest.raises(BackendError, match=r"unknown backend 'nope'; available here: torch-cpu.*ort-cpu") as info:
        get_profiler("nope")
    assert "\n" not in str(info.value)


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal on a machine without a CUDA device")
def test_gpu_backend_without_gpu_is_refused_with_reason():
    with pytest.raises(BackendError, match=r"backend 'torch-cuda' is not available here: no CUDA device"):
        get_profiler("torch-cuda")


def test_option_a_backend_does_not_take_is_refused():
    with pytest.raises(BackendError, match="does not take option 'opt_level'"):
        get_profiler("torch-cpu", opt_level="all")


@pytest.mark.parametrize("bad", [dict(threads=0), dict(threads=-2)])
@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_bad_thread_counts(name, bad):
    with pytest.raises(BackendError, match="threads must be a positive integer"):
        get_profiler(name, **bad)


def test_bad_ort_options():
    with pytest.raises(BackendError, match="unknown graph optimisation level"):
        get_profiler("ort-cpu", opt_level="max")
    with pytest.raises(BackendError, match="unknown ONNX exporter"):
        get_profiler("ort-cpu", exporter="magic")


# --- the contract every CPU backend meets ---------------------------------------------------
@pytest.fixture(params=CPU_BACKENDS)
def cpu_profiler(request):
    with get_profiler(request.param, stats=QUICK) as profiler:
        yield profiler


def test_measurement_contract(cpu_profiler):
    module = block()
    m = cpu_profiler.measure(module, (1, 8, 16, 16))
    assert 0 < m.p10_ms <= m.p50_ms <= m.p90_ms
    assert m.mean_ms > 0 and m.std_ms >= 0 and QUICK.min_repeats <= m.count <= QUICK.max_repeats + 10
    assert m.param_bytes == param_bytes(module) == sum(p.numel() for p in module.parameters()) * 4
    assert m.input_bytes == 8 * 16 * 16 * 4 and m.output_bytes == 8 * 16 * 16 * 4
    assert m.peak_bytes >= m.input_bytes + m.output_bytes and m.peak_source == "estimate:hooks"
    assert m.rel_ci is None or m.rel_ci >= 0


def test_options_fingerprint_and_overhead(cpu_profiler):
    options = cpu_profiler.options()
    assert options["threads"] == 1
    device = cpu_profiler.fingerprint()
    assert device["cpu"]["threads_used"] == 1 and device["cpu"]["model"]
    assert device["libraries"]["torch"] == torch.__version__.split("+")[0]
    overhead = cpu_profiler.overhead_ms()
    assert 0 < overhead < 1.0


def test_torch_cpu_restores_thread_count():
    before = torch.get_num_threads()
    with get_profiler("torch-cpu", threads=2, stats=QUICK) as profiler:
        profiler.measure(block(), (1, 8, 16, 16))
        assert torch.get_num_threads() == before
    assert profiler.options()["threads"] == 2


class DenormalProbe(nn.Module):
    """Records whether a denormal float survives a multiplication while the runner times it."""

    def __init__(self):
        super().__init__()
        self.survived = []

    def forward(self, x):
        tiny = torch.tensor([1e-39], dtype=torch.float32)  # below float32's smallest normal, 1.2e-38
        self.survived.append(bool((tiny * 1.0).item() != 0.0))
        return x


@pytest.mark.parametrize("flush", [True, False])
def test_torch_cpu_flushes_denormals_while_measuring_and_restores(flush):
    probe = DenormalProbe()
    with get_profiler("torch-cpu", flush_denormal=flush, stats=QUICK) as profiler:
        profiler.measure(probe, (1, 2))
    assert probe.survived and set(probe.survived) == {not flush}
    assert profiler.options()["flush_denormal"] is flush
    assert (torch.tensor([1e-39]) * 1.0).item() != 0.0  # torch's default is back


def test_ort_records_graph_optimisation_level_and_exporter():
    with get_profiler("ort-cpu", opt_level="basic", stats=QUICK) as profiler:
        options = profiler.options()
        assert options["graph_optimization_level"] == "basic"
        assert options["exporter"] == "torchscript" and options["opset"] == 17
        assert options["inter_op_threads"] == 1 and options["execution_mode"] == "sequential"
        assert options["provider"] == "CPUExecutionProvider"
        profiler.measure(block("ir_r1_k3_s2_e1_c16_g2"), (1, 8, 16, 16))  # grouped + shuffle exports


class RandomOutput(nn.Module):
    def forward(self, x):
        return x + torch.rand_like(x)


def test_ort_refuses_an_exported_graph_that_disagrees_with_torch():
    with get_profiler("ort-cpu", stats=QUICK) as profiler:
        with pytest.raises(BackendError, match="disagrees with the torch module"):
            profiler.measure(RandomOutput(), (1, 4, 8, 8))


class FakeSession:
    def __init__(self, providers):
        self.providers = providers

    def get_providers(self):
        return self.providers


def test_provider_check_refuses_a_silent_cpu_fallback():
    with pytest.raises(BackendError, match="activated CPUExecutionProvider instead of CUDAExecutionProvider.*refusing"):
        check_providers(FakeSession(["CPUExecutionProvider"]), "CUDAExecutionProvider", "ort-cuda")
    with pytest.raises(BackendError, match="instead of TensorrtExecutionProvider"):
        check_providers(FakeSession(["CUDAExecutionProvider", "CPUExecutionProvider"]), "TensorrtExecutionProvider", "ort-trt")
    check_providers(FakeSession(["CUDAExecutionProvider", "CPUExecutionProvider"]), "CUDAExecutionProvider", "ort-cuda")


def test_ort_gpu_backends_explain_a_cpu_only_onnxruntime():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    assert "onnxruntime-gpu" in available_backends()["ort-cuda"]
    with pytest.raises(BackendError, match="ort-trt' is not available here: .*TensorrtExecutionProvider"):
        get_profiler("ort-trt")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_absent_is_a_clear_message():
    from hwnas.profilers.tensorrt_backend import TensorRTProfiler, import_tensorrt

    assert "tensorrt is not installed" in available_backends()["tensorrt"]
    with pytest.raises(BackendError, match="tensorrt is not installed"):
        get_profiler("tensorrt")
    with pytest.raises(MissingDependencyError, match="requirements-gpu.txt"):
        import_tensorrt()
    with pytest.raises(MissingDependencyError):
        TensorRTProfiler()


# --- memory and fingerprint -----------------------------------------------------------------
def test_memory_estimate_of_a_residual_block():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.expand = nn.Conv2d(4, 16, 1, bias=False)
            self.project = nn.Conv2d(16, 4, 1, bias=False)

        def forward(self, x):
            return x + self.project(self.expand(x))

    x = torch.randn(1, 4, 8, 8)
    out, info = estimate_on_cpu(Residual(), x)
    small, big = 4 * 64 * 4, 16 * 64 * 4
    assert out.shape == x.shape
    assert info.param_bytes == (4 * 16 + 16 * 4) * 4
    assert (info.input_bytes, info.output_bytes) == (small, small)
    # project: its input (big) + its output (small) + the op input kept for the residual (small)
    assert info.peak_bytes == big + 2 * small


def test_fingerprint_identity_is_stable_and_volatile_parts_are_ignored():
    a = device_fingerprint(1, ("torch", "timm", "onnxruntime"))
    b = device_fingerprint(1, ("torch", "timm", "onnxruntime"))
    assert {"hostname", "time"} <= set(a)
    assert device_identity(a) == device_identity(b)
    assert device_identity(a) != device_identity(device_fingerprint(2, ("torch", "timm", "onnxruntime")))
    assert a["libraries"]["onnxruntime"] and "tensorrt" not in a["libraries"]
    assert device_slug(a) and "/" not in device_slug(a)


# --- GPU backends: real code, run where the hardware is -----------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_torch_cuda_measures_with_cuda_events(precision):
    with get_profiler("torch-cuda", precision=precision, stats=QUICK) as profiler:
        m = profiler.measure(block(), (1, 8, 16, 16))
        assert m.p50_ms > 0 and m.peak_source == "cuda:max_memory_allocated" and m.peak_bytes > 0
        assert profiler.fingerprint()["gpu"]["name"]
        assert profiler.dtype == {"fp32": "float32", "fp16": "float16"}[precision]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA or available_backends()["ort-cuda"] is not None,
                    reason="needs an NVIDIA GPU and onnxruntime-gpu")
def test_ort_cuda_measures_on_the_gpu():
    with get_profiler("ort-cuda", stats=QUICK) as profiler:
        m = profiler.measure(block(), (1, 8, 16, 16))
        assert m.p50_ms > 0 and profiler.options()["provider"] == "CUDAExecutionProvider"


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_CUDA or available_backends()["tensorrt"] is not None,
                    reason="needs an NVIDIA GPU and TensorRT")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_builds_and_times_an_engine(precision):
    with get_profiler("tensorrt", precision=precision, stats=QUICK) as profiler:
        m = profiler.measure(block(), (1, 8, 16, 16))
        assert m.p50_ms > 0 and m.peak_source == "tensorrt:device_memory"
        assert profiler.overhead_ms() > 0
