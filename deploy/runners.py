"""Inference runners for the target machine: an ONNX model in ONNX Runtime, or a TensorRT engine.

Standalone: numpy plus onnxruntime, or (for engines, imported only then) tensorrt plus
cuda-python. Neither torch nor hwnas is needed. Each runner has activate / infer / deactivate
and works as a context manager (the runner pattern of NVIDIA's Polygraphy).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_POLICIES = ("stretch", "crop")  # hwnas.preprocessing: to R x R as training does / shorter side + centre crop


class DeployError(Exception):
    """A problem with the user's input or this machine; printed as one line, exit status 2."""


class OnnxRuntimeRunner:
    """An ONNX Runtime session. `threads` 0 lets ONNX Runtime choose; `providers` default: CPU."""

    backend = "onnxruntime"

    def __init__(self, path, threads: int = 0, providers=None):
        self.path = Path(path)
        self.threads = threads
        self.providers = list(providers or ["CPUExecutionProvider"])
        self._session = None

    def activate(self) -> "OnnxRuntimeRunner":
        try:
            import onnxruntime as ort
        except ImportError:
            raise DeployError("ONNX models need onnxruntime: pip install onnxruntime (or onnxruntime-gpu)") from None
        available = ort.get_available_providers()
        unknown = [p for p in self.providers if p not in available]
        if unknown:
            raise DeployError(f"execution provider {unknown[0]} is not available here; available: {', '.join(available)}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as exc:
            raise DeployError(f"ONNX Runtime cannot load {self.path}: {str(exc).strip().splitlines()[0][:300]}") from None
        inp = self._session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = [d if isinstance(d, int) and d > 0 else None for d in inp.shape]
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        self.versions = {"onnxruntime": ort.__version__}
        return self

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self.input_name: x})[0]

    def describe(self) -> dict:
        return {"backend": self.backend, "providers": self._session.get_providers(), "threads": self.threads}

    def deactivate(self) -> None:
        self._session = None

    def __enter__(self):
        return self.activate()

    def __exit__(self, *exc):
        self.deactivate()


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise DeployError("TensorRT engines need cuda-python: pip install cuda-python") from None
    return cudart


def _check(cudart, result):
    err, *rest = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise DeployError(f"CUDA call failed: {err}")
    return rest[0] if len(rest) == 1 else rest


class TensorRTRunner:
    """A serialized TensorRT engine (TensorRT 10 API). `infer` times as an application sees it:
    host-to-device copy, execution and device-to-host copy."""

    backend = "tensorrt"

    def __init__(self, path):
        self.path = Path(path)
        self._context = None
        self._buffers: dict = {}

    def activate(self) -> "TensorRTRunner":
        try:
            import tensorrt as trt
        except ImportError:
            raise DeployError("TensorRT engines need the tensorrt package (pip install tensorrt) and an NVIDIA GPU") from None
        self._trt, self._cudart = trt, _cudart()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise DeployError(f"TensorRT cannot load {self.path} (built by another TensorRT version or for another GPU?)")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self.input_name = next(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self._outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.input_shape = [d if d > 0 else None for d in self._engine.get_tensor_shape(self.input_name)]
        self.max_batch = None
        if self.input_shape[0] is None:
            self.max_batch = int(self._engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
        self.metadata = engine_metadata(self.path)
        self.versions = {"tensorrt": trt.__version__}
        self._stream = _check(self._cudart, self._cudart.cudaStreamCreate())
        return self

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (None, 0))
        if size < nbytes:
            if ptr is not None:
                _check(self._cudart, self._cudart.cudaFree(ptr))
            ptr = _check(self._cudart, self._cudart.cudaMalloc(nbytes))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def infer(self, x: np.ndarray) -> np.ndarray:
        trt, cudart = self._trt, self._cudart
        x = np.ascontiguousarray(x, dtype=trt.nptype(self._engine.get_tensor_dtype(self.input_name)))
        if not self._context.set_input_shape(self.input_name, x.shape):
            raise DeployError(f"the engine does not accept input shape {x.shape}")
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        src = self._device(self.input_name, x.nbytes)
        _check(cudart, cudart.cudaMemcpyAsync(src, x.ctypes.data, x.nbytes, h2d, self._stream))
        self._context.set_tensor_address(self.input_name, int(src))
        results = {}
        for name in self._outputs:
            host = np.empty(tuple(self._context.get_tensor_shape(name)), trt.nptype(self._engine.get_tensor_dtype(name)))
            results[name] = (host, self._device(name, host.nbytes))
            self._context.set_tensor_address(name, int(results[name][1]))
        if not self._context.execute_async_v3(int(self._stream)):
            raise DeployError("TensorRT inference failed (see its log above)")
        for host, dev in results.values():
            _check(cudart, cudart.cudaMemcpyAsync(host.ctypes.data, dev, host.nbytes, d2h, self._stream))
        _check(cudart, cudart.cudaStreamSynchronize(self._stream))
        return results[self._outputs[0]][0]

    def describe(self) -> dict:
        return {"backend": self.backend, "providers": None, "threads": None, "max_batch": self.max_batch}

    def deactivate(self) -> None:
        if self._context is None:
            return
        for ptr, _ in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers.clear()
        self._cudart.cudaStreamDestroy(self._stream)
        self._context = self._engine = self._runtime = None

    def __enter__(self):
        return self.activate()

    def __exit__(self, *exc):
        self.deactivate()


def open_runner(path, threads: int = 0, providers=None):
    """The runner for a model file: TensorRT for .engine/.plan/.trt, else ONNX Runtime."""
    path = Path(path)
    if not path.is_file():
        raise DeployError(f"model file not found: {path}")
    if path.suffix.lower() in ENGINE_SUFFIXES:
        return TensorRTRunner(path)
    return OnnxRuntimeRunner(path, threads=threads, providers=providers)


def batch_shape(runner, batch: int | None) -> tuple[int, ...]:
    """Input shape at `batch`: a fixed-batch model only runs at its own batch size."""
    fixed = runner.input_shape[0]
    if None in runner.input_shape[1:]:
        raise DeployError(f"input shape {runner.input_shape} has symbolic dimensions besides the batch; export a fixed size")
    if fixed is not None:
        if batch not in (None, fixed):
            raise DeployError(f"the model has a fixed batch of {fixed}; export with --dynamic-batch to run batch {batch}")
        return (fixed, *runner.input_shape[1:])
    return (batch or 1, *runner.input_shape[1:])


def engine_metadata(engine_path) -> dict:
    """An engine carries no metadata: take the preprocessing from the report `hwnas export` wrote
    beside it (`MODEL.export_report.json`, or an older `export_report.json`) that names this engine,
    as ONNX metadata keys."""
    engine_path = Path(engine_path)
    for report_path in sorted(engine_path.parent.glob("*export_report.json")):
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
            if Path((report.get("tensorrt") or {}).get("path", "")).name != engine_path.name:
                continue
            prep = report["model"]["preprocessing"]
            return {"hwnas.mean": json.dumps(prep["mean"]), "hwnas.std": json.dumps(prep["std"]),
                    "hwnas.resize": prep["resize"]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return {}


def preprocessing(runner) -> tuple[np.ndarray, np.ndarray, str]:
    """Mean, std and resize policy the model expects: hwnas writes its training data's into the ONNX
    metadata (hwnas.mean, hwnas.std, hwnas.resize); models without them get ImageNet's and 'crop'."""
    meta = runner.metadata
    try:
        mean = json.loads(meta["hwnas.mean"]) if "hwnas.mean" in meta else IMAGENET_MEAN
        std = json.loads(meta["hwnas.std"]) if "hwnas.std" in meta else IMAGENET_STD
        mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    except (ValueError, TypeError):
        raise DeployError("the model's hwnas.mean/hwnas.std metadata is malformed; re-export it with `hwnas export`") from None
    resize = meta.get("hwnas.resize", "crop" if "hwnas.mean" not in meta else "stretch")
    if mean.shape != (3,) or std.shape != (3,) or not (np.isfinite(mean).all() and (std > 0).all()) \
            or resize not in RESIZE_POLICIES:
        raise DeployError(f"the model's preprocessing metadata is invalid (mean {mean}, std {std}, resize {resize!r}); "
                          "re-export it with `hwnas export`")
    return mean, std, resize


def host() -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
            "numpy": np.__version__}
