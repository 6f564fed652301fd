"""ONNX Runtime backends: `ort-cpu`, `ort-cuda`, `ort-trt` (CPU, CUDA, TensorRT providers).

Each op is exported to its own ONNX file in a temporary folder and run in its own session with
fixed intra-op threads, one inter-op thread and sequential execution. The graph optimisation
level is an option recorded with the table: it changes CPU latency up to 2x, so a table is
only valid at the level it was built with.

Exporter: `torchscript` (the default) is torch's legacy TorchScript-based exporter
(`dynamo=False`, opset 17). It exports one of our blocks in 10-70 ms, against about 2 s for the
torch.export-based `dynamo` exporter (opset 18), which torch 2.9+ makes the default; profiling
fbnet's 98 ops would spend over 3 minutes on export alone. The legacy exporter is deprecated
but present in torch 2.14; `--exporter dynamo` switches. Each exported graph is checked
against the torch module's output before it is timed.

Calls go through an IOBinding with the input and a preallocated output on the provider's
device, so GPU timings do not include host<->device copies; `run_with_iobinding` plus
`synchronize_outputs` returns when the GPU work is done, and the host clock times it.

ONNX Runtime falls back to the CPU silently (a log line) when a GPU provider fails to load:
`check_providers` refuses to time a session whose first provider is not the requested one.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import BackendError, ExportError, MissingDependencyError
from ..export.onnx_export import export_module
from ..latency_tables.table import Measurement
from .base import Profiler, Runner
from .fingerprint import device_fingerprint
from .memory import MemoryInfo, estimate_on_cpu
from .statistics import StatsConfig
from .torch_backend import ThreadScope, check_threads

EXPORTERS = {"torchscript": 17, "dynamo": 18}  # exporter -> ONNX opset
OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}


def import_ort():
    """onnxruntime, imported lazily (it is a pinned dependency, but keep the message clear)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(f"onnxruntime is not importable ({exc}); install it from requirements.txt") from None
    return onnxruntime


def export_onnx(module: nn.Module, example: torch.Tensor, path: str | Path, exporter: str = "torchscript") -> None:
    """Export `module` at the example input's shape (static) to one ONNX file, with hwnas' one
    exporter (hwnas.export.onnx_export.export_module) at this backend's opset for `exporter`."""
    if exporter not in EXPORTERS:
        raise BackendError(f"unknown ONNX exporter {exporter!r}; choose one of: {', '.join(EXPORTERS)}")
    try:
        proto = export_module(module, example, exporter, EXPORTERS[exporter], output_name="output", what="the op")
    except ExportError as exc:
        raise BackendError(f"ONNX export failed: {exc}") from None
    Path(path).write_bytes(proto.SerializeToString())


def identity_graph(path: str | Path, shape: tuple[int, ...]) -> None:
    """An ONNX graph of one Identity node: the per-call cost of the runtime itself."""
    import onnx
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, list(shape))
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "identity", [inp], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    onnx.save(model, str(path))


def check_providers(session, required: str, backend: str) -> None:
    """Refuse a session whose first active provider is not `required` (a silent CPU fallback)."""
    active = list(session.get_providers())
    if not active or active[0] != required:
        raise BackendError(
            f"{backend}: ONNX Runtime activated {', '.join(active) or 'no provider'} instead of {required} "
            f"(the provider failed to load; ORT only logs it); refusing to record those timings as {backend} "
            "ones: check the CUDA/cuDNN/TensorRT libraries onnxruntime-gpu needs"
        )


class OrtRunner(Runner):
    def __init__(self, profiler: "OrtProfiler", path: Path, input_shape, reference=None):
        ort = import_ort()
        self.path = path
        self.session = profiler.session(path)
        x = np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)
        (inp,), (out,) = self.session.get_inputs(), self.session.get_outputs()
        out_shape = [int(d) for d in out.shape]
        device, index = profiler.io_device
        self.binding = self.session.io_binding()
        self._keep = [ort.OrtValue.ortvalue_from_numpy(x, device, index)]
        self.binding.bind_ortvalue_input(inp.name, self._keep[0])
        self.output = ort.OrtValue.ortvalue_from_shape_and_type(out_shape, np.float32, device, index)
        self.binding.bind_ortvalue_output(out.name, self.output)
        self.gpu = device != "cpu"
        if reference is not None:
            self._verify(x, reference, profiler)

    def _verify(self, x: np.ndarray, reference, profiler: "OrtProfiler") -> None:
        module, _ = reference
        self.time_call()
        (got,) = self.binding.copy_outputs_to_cpu()
        with torch.inference_mode():
            want = module(torch.from_numpy(x)).numpy()
        tol = profiler.verify_tolerance
        # relative to the output's scale: deep random-weight networks reach logits in the thousands
        scale = max(float(np.abs(want).max()), 1.0)
        if got.shape != want.shape or float(np.abs(got - want).max()) > tol * scale:
            diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("nan")
            raise BackendError(f"{profiler.name}: the exported ONNX graph disagrees with the torch module "
                               f"(max abs diff {diff:.3g} at output scale {scale:.3g}, shapes {got.shape} vs {want.shape})")

    def time_call(self) -> float:
        start = time.perf_counter_ns()
        self.session.run_with_iobinding(self.binding)
        if self.gpu:
            self.binding.synchronize_outputs()
        end = time.perf_counter_ns()
        return (end - start) / 1e6

    def infer(self, x: np.ndarray) -> np.ndarray:
        """A plain session run (timing uses the IOBinding of time_call)."""
        name = self.session.get_inputs()[0].name
        return self.session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def deactivate(self) -> None:
        self.session = self.binding = self.output = None
        self._keep.clear()
        self.path.unlink(missing_ok=True)


class OrtModuleRunner(OrtRunner):
    """A torch module exported to ONNX and run in ONNX Runtime."""

    def __init__(self, profiler: "OrtProfiler", module: nn.Module, input_shape):
        with ThreadScope(profiler.threads):
            module = module.eval()
            x = torch.randn(input_shape)
            _, self._memory = estimate_on_cpu(module, x)
            path = profiler.new_path()
            export_onnx(module, x, path, profiler.exporter)
            check = (module, x) if profiler.verify_tolerance else None
            super().__init__(profiler, path, input_shape, reference=check)

    def memory(self) -> MemoryInfo:
        return self._memory


class OrtFileRunner(OrtRunner):
    """An existing ONNX file (an exported model) run as it is, from a private copy."""

    def __init__(self, profiler: "OrtProfiler", source: Path, input_shape):
        import onnx
        from onnx import numpy_helper

        path = profiler.new_path()
        shutil.copyfile(source, path)
        model = onnx.load(str(path))
        self._params = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
        super().__init__(profiler, path, input_shape)

    def memory(self) -> MemoryInfo:
        in_bytes = int(np.prod(self._keep[0].shape())) * 4
        out_bytes = int(np.prod(self.output.shape())) * 4
        return MemoryInfo(self._params, in_bytes, out_bytes, None, "unknown")


class OrtIdentityRunner(OrtRunner):
    def __init__(self, profiler: "OrtProfiler", shape):
        path = profiler.new_path()
        identity_graph(path, shape)
        super().__init__(profiler, path, shape)

    def memory(self) -> MemoryInfo:
        nbytes = int(np.prod(self.output.shape())) * 4
        return MemoryInfo(0, nbytes, nbytes, 2 * nbytes, "estimate:hooks")


class OrtProfiler(Profiler):
    """Shared code of the ONNX Runtime backends; subclasses name the provider."""

    provider = "CPUExecutionProvider"
    libraries = ("onnxruntime", "onnx", "torch", "timm")
    verify_tolerance: float | None = 1e-3

    def __init__(self, threads: int = 1, opt_level: str = "all", exporter: str = "torchscript",
                 stats: StatsConfig | None = None):
        super().__init__(stats)
        self.threads = check_threads(threads)
        if opt_level not in OPT_LEVELS:
            raise BackendError(f"unknown graph optimisation level {opt_level!r}; choose one of: {', '.join(OPT_LEVELS)}")
        if exporter not in EXPORTERS:
            raise BackendError(f"unknown ONNX exporter {exporter!r}; choose one of: {', '.join(EXPORTERS)}")
        self.opt_level = opt_level
        self.exporter = exporter
        self.ort = import_ort()
        self._tmp = tempfile.TemporaryDirectory(prefix="hwnas-ort-")
        self._count = 0

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed"
        ort = import_ort()
        if cls.provider not in ort.get_available_providers():
            return (f"onnxruntime {ort.__version__} has no {cls.provider} (a CPU-only build; install "
                    "onnxruntime-gpu, see requirements-gpu.txt)")
        if cls.provider != "CPUExecutionProvider" and not torch.cuda.is_available():
            return "no CUDA device"
        return None

    # --- what subclasses adjust -------------------------------------------------------
    @property
    def io_device(self) -> tuple[str, int]:
        return ("cpu", 0)

    def providers(self) -> list:
        return ["CPUExecutionProvider"]

    def provider_options(self) -> dict:
        return {}

    # --- common -----------------------------------------------------------------------
    def options(self) -> dict:
        return {
            "threads": self.threads,
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            "graph_optimization_level": self.opt_level,
            "exporter": self.exporter,
            "opset": EXPORTERS[self.exporter],
            "provider": self.provider,
            **self.provider_options(),
        }

    def fingerprint(self) -> dict:
        gpu = self.io_device[1] if self.io_device[0] != "cpu" else None
        return device_fingerprint(self.threads, self.libraries, gpu_index=gpu)

    def new_path(self) -> Path:
        self._count += 1
        return Path(self._tmp.name) / f"op{self._count}.onnx"

    def session(self, path: Path):
        ort = self.ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[self.opt_level])
        so.log_severity_level = 3  # the fallback warning is checked below, not printed
        try:
            session = ort.InferenceSession(str(path), so, providers=self.providers())
        except Exception as exc:
            raise BackendError(f"{self.name}: ONNX Runtime could not create a session: {str(exc)[:300]}") from exc
        check_providers(session, self.provider, self.name)
        return session

    def prepare(self, module: nn.Module, input_shape) -> Runner:
        return OrtModuleRunner(self, module, input_shape)

    def measure_onnx(self, path: str | Path, input_shape) -> Measurement:
        """Latency of an existing ONNX file (e.g. the exported model) with this backend's settings."""
        return self.measure_runner(self.prepare_onnx(path, input_shape))

    def prepare_onnx(self, path: str | Path, input_shape) -> Runner:
        """A runner of an existing ONNX file (e.g. the exported model) with this backend's settings."""
        return OrtFileRunner(self, Path(path), input_shape)

    def overhead_ms(self) -> float | None:
        from .statistics import measure_adaptive

        with OrtIdentityRunner(self, (1, 8, 8, 8)) as runner:
            return measure_adaptive(runner.time_call, self.stats).summary()["p50_ms"]

    def close(self) -> None:
        self._tmp.cleanup()


class OrtCPUProfiler(OrtProfiler):
    """ONNX Runtime, CPU execution provider."""

    name = "ort-cpu"


class OrtCUDAProfiler(OrtProfiler):
    """ONNX Runtime, CUDA execution provider (float32 graphs), IOBinding on the GPU."""

    name = "ort-cuda"
    provider = "CUDAExecutionProvider"

    def __init__(self, threads: int = 1, opt_level: str = "all", exporter: str = "torchscript", device: int = 0,
                 stats: StatsConfig | None = None):
        super().__init__(threads, opt_level, exporter, stats)
        self.device_index = int(device)

    @property
    def io_device(self) -> tuple[str, int]:
        return ("cuda", self.device_index)

    def provider_options(self) -> dict:
        return {"device_id": self.device_index, "cudnn_conv_algo_search": "EXHAUSTIVE"}

    def providers(self) -> list:
        return [(self.provider, {k: str(v) for k, v in self.provider_options().items()}), "CPUExecutionProvider"]


class OrtTensorRTProfiler(OrtCUDAProfiler):
    """ONNX Runtime, TensorRT execution provider (CUDA, then CPU, for nodes TensorRT rejects)."""

    name = "ort-trt"
    provider = "TensorrtExecutionProvider"
    libraries = ("onnxruntime", "onnx", "tensorrt", "torch", "timm")

    def __init__(self, threads: int = 1, opt_level: str = "all", exporter: str = "torchscript", device: int = 0,
                 precision: str = "fp32", stats: StatsConfig | None = None):
        super().__init__(threads, opt_level, exporter, device, stats)
        if precision not in ("fp32", "fp16"):
            raise BackendError(f"ort-trt precision must be fp32 or fp16, not {precision!r} (int8 needs a "
                               "calibration table; use the tensorrt backend)")
        self.precision = precision
        if precision == "fp16":
            self.verify_tolerance = 5e-2

    def provider_options(self) -> dict:
        return {
            "device_id": self.device_index,
            "trt_fp16_enable": self.precision == "fp16",
            "trt_engine_cache_enable": False,
            "trt_max_workspace_size": 1 << 30,
        }

    def providers(self) -> list:
        trt_opts = {k: str(v) if not isinstance(v, bool) else ("True" if v else "False")
                    for k, v in self.provider_options().items()}
        cuda_opts = {"device_id": str(self.device_index)}
        return [(self.provider, trt_opts), ("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
