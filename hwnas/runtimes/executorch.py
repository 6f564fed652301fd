"""ExecuTorch with the XNNPACK delegate: the one place hwnas lowers a module to a `.pte` program,
and its runner.

Lowering (`lower_pte`): `torch.export.export`, then `to_edge_transform_and_lower(...,
partitioner=[XnnpackPartitioner()])` and `.to_executorch()`; the program's bytes are what a
phone runs. With `quantize`, the exported graph is first quantised post-training with the PT2E
XNNPACK quantizer (`prepare_pt2e` / `convert_pt2e`, `XNNPACKQuantizer` with
`get_symmetric_quantization_config(is_per_channel=True)`: int8 weights per channel, int8
activations per tensor), calibrated on the batches given.

Running (`ExecuTorchRunner`): `executorch.runtime.Runtime.get().load_program(bytes)` and the
`forward` method, timed around `execute` by the chosen clock. XNNPACK's thread pool is global to
the process: a runner sets it to `threads` (default 1) when it activates and leaves it so
(resetting it costs a pool rebuild and a log line per op).
With one thread XNNPACK runs its kernels in the calling thread, so the `thread` clock (that
thread's CPU time) is the call's latency without the time other processes took the core.

Per-kernel times come from ETDump, read by `executorch.devtools.Inspector` with the ETRecord of
the lowering (`etdump_breakdown`): XNNPACK reports each of its operators ("Convolution (NHWC,
F32) IGEMM #1", ...) by its own name, not by the torch module it came from.

executorch is optional (requirements-mobile.txt) and imported only here, when a model is lowered or run.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..errors import BackendError, MissingDependencyError
from .base import Runner
from .memory import MemoryInfo
from .module_check import check_against_module

INSTALL_HINT = "pip install -r requirements-mobile.txt (executorch)"


def executorch_missing() -> str | None:
    """Why ExecuTorch cannot run here (not installed, no XNNPACK backend), or None."""
    if importlib.util.find_spec("executorch") is None:
        return f"executorch is not installed ({INSTALL_HINT})"
    try:
        runtime = import_runtime().Runtime.get()
    except Exception as exc:  # a wheel without its native extension
        return f"executorch's runtime does not load: {type(exc).__name__}: {str(exc)[:200]}"
    if not runtime.backend_registry.is_available("XnnpackBackend"):
        return "this executorch build has no XnnpackBackend"
    return None


@contextlib.contextmanager
def _quiet(logger: str):
    """Silence a logger below errors for a while (torchao's import logs a deprecation of torch's
    pytree registration on every process that imports executorch: noise in `hwnas backends`)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def import_runtime():
    """executorch.runtime, imported lazily, with the install hint when missing."""
    try:
        with warnings.catch_warnings(), _quiet("torch.utils._pytree"):
            warnings.simplefilter("ignore")  # "experimental API" notices on import
            import executorch.runtime as runtime
    except ImportError as exc:
        raise MissingDependencyError(f"executorch is not importable ({exc}); {INSTALL_HINT}") from None
    return runtime


def _pybindings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import executorch.extension.pybindings.portable_lib as lib
    return lib


def set_threads(threads: int) -> None:
    """Size ExecuTorch's process-wide thread pool (XNNPACK's) to `threads`, if it is not already."""
    lib = _pybindings()
    if lib._threadpool_get_thread_count() != threads:
        lib._unsafe_reset_threadpool(threads)


def executorch_facts(options: dict) -> dict:
    """ExecuTorch's part of a device fingerprint: version, the backends of this build, the options."""
    runtime = import_runtime().Runtime.get()
    return {"name": "executorch", "version": importlib.metadata.version("executorch"),
            "backends": sorted(runtime.backend_registry.registered_backend_names), "delegate": "XnnpackBackend",
            "options": dict(options)}


@dataclass(frozen=True)
class Lowered:
    """A lowered program: the `.pte` bytes and, when asked for, its ETRecord (for Inspector)."""

    pte: bytes
    etrecord: object | None = None


def quantize_pt2e(module, example, batches: Iterable) -> object:
    """`module` quantised post-training for XNNPACK (PT2E): observers inserted by XNNPACKQuantizer
    (symmetric int8, weights per channel), `batches` (tensors or arrays) run through them, converted.
    Returns the quantised graph module (to lower with `lower_pte`)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                             get_symmetric_quantization_config)
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(module.eval(), (example,)).module()
    prepared = move_exported_model_to_eval(prepare_pt2e(graph, quantizer))
    size, seen = example.shape[0], 0  # the exported graph takes the example's batch size only
    with torch.no_grad():
        for batch in batches:
            batch = torch.as_tensor(np.ascontiguousarray(batch, dtype=np.float32))
            for start in range(0, batch.shape[0] - size + 1, size):
                prepared(batch[start:start + size])
                seen += 1
    if seen == 0:
        raise BackendError("int8 quantisation saw no calibration batch; give calibration images")
    return convert_pt2e(prepared)


def lower_pte(module, example, *, etrecord: bool = False, what: str = "the model") -> Lowered:
    """`module` (an eval-mode torch module or a PT2E-quantised graph module) at `example`'s shape,
    lowered to an ExecuTorch program with every supported op delegated to XNNPACK."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

    if not isinstance(module, torch.fx.GraphModule):  # a quantised graph refuses .eval(); it is in eval mode
        module = module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(module, (example,))
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()], generate_etrecord=etrecord)
            et = edge.to_executorch()
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise BackendError(f"ExecuTorch could not lower {what}: {type(exc).__name__}: {detail}") from None
    return Lowered(bytes(et.buffer), et.get_etrecord() if etrecord else None)


class ExecuTorchRunner(Runner):
    """An ExecuTorch program (`.pte` bytes): `infer(x) -> first output`; `time_call()` runs a fixed
    seeded input of `timing_shape`. Activated lazily (`with`), with the XNNPACK thread pool
    set to `threads` threads."""

    def __init__(self, pte: bytes, *, threads: int = 1, timing_shape=None, clock=None,
                 memory: MemoryInfo | None = None, etdump: bool = False):
        self.pte = bytes(pte)
        self.threads = int(threads)
        self.timing_shape = tuple(timing_shape) if timing_shape is not None else None
        self.clock_ns = clock or time.perf_counter_ns
        self._memory = memory
        self.etdump = etdump
        self.program = self.method = None

    @property
    def active(self) -> bool:
        return self.method is not None

    def activate(self) -> "ExecuTorchRunner":
        if self.method is None:
            import torch

            set_threads(self.threads)
            runtime = import_runtime()
            try:
                self.program = runtime.Runtime.get().load_program(
                    self.pte, verification=runtime.Verification.Minimal, enable_etdump=self.etdump)
                self.method = self.program.load_method("forward")
            except Exception as exc:
                self.deactivate()
                raise BackendError(f"ExecuTorch could not load the program: {type(exc).__name__}: "
                                   f"{str(exc)[:300]}") from None
            if self.timing_shape is not None:
                self.timing_input = np.random.default_rng(0).standard_normal(self.timing_shape, dtype=np.float32)
                self._timing_tensor = torch.from_numpy(self.timing_input)
        return self

    def time_call(self) -> float:
        if self.method is None:
            raise RuntimeError("call activate() (or use the runner as a context manager) first")
        inputs = [self._timing_tensor]
        start = self.clock_ns()
        self.method.execute(inputs)
        end = self.clock_ns()
        return (end - start) / 1e6

    def infer(self, x: np.ndarray) -> np.ndarray:
        if self.method is None:
            raise RuntimeError("call activate() (or use the runner as a context manager) first")
        import torch

        out = self.method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])[0]
        return out.detach().numpy().copy()  # the program reuses its output buffer

    def memory(self) -> MemoryInfo:
        """What the runner was given (a module's hook estimate), else the program's input and output
        bytes, with the program's size as its parameter bytes."""
        if self._memory is not None:
            return self._memory
        meta = self.activate().method.metadata
        in_bytes = sum(meta.input_tensor_meta(i).nbytes() for i in range(meta.num_inputs()))
        out_bytes = sum(meta.output_tensor_meta(i).nbytes() for i in range(meta.num_outputs()))
        return MemoryInfo(len(self.pte), in_bytes, out_bytes, None, "unknown")

    def write_etdump(self, path: str) -> None:
        """Write the events recorded since activation (needs `etdump=True`) to `path`."""
        debug = path + ".debug"
        self.program.write_etdump_result_to_file(path, debug)
        if os.path.exists(debug):
            os.remove(debug)

    def deactivate(self) -> None:
        self.program = self.method = None


def executorch_runner(model, input_shape, *, threads: int = 1, clock: str | None = "wall",
                      verify_tolerance: float | None = 1e-3, quantize_batches=None,
                      what: str = "the op") -> ExecuTorchRunner:
    """The `executorch` runtime's runner (active): `model` is `.pte` bytes, run as they are, or a
    torch module, lowered to XNNPACK (int8 PT2E with `quantize_batches`), its memory estimated
    and, with `verify_tolerance`, its output checked against the module's before it is timed."""
    if isinstance(clock, str):
        from .torch_eager import CLOCKS

        clock = CLOCKS[clock]
    if isinstance(model, (bytes, bytearray)):
        return ExecuTorchRunner(model, threads=threads, timing_shape=input_shape, clock=clock).activate()
    import torch

    from .memory import estimate_on_cpu
    from .torch_eager import ThreadScope

    with ThreadScope(threads):
        module = model.eval()
        x = torch.randn(input_shape)
        _, memory = estimate_on_cpu(module, x)
        source = quantize_pt2e(module, x, quantize_batches) if quantize_batches is not None else module
        lowered = lower_pte(source, x, what=what)
    runner = ExecuTorchRunner(lowered.pte, threads=threads, timing_shape=input_shape, clock=clock,
                              memory=memory).activate()
    if verify_tolerance and quantize_batches is None:
        check_against_module(runner, module, verify_tolerance, "executorch", "the lowered program")
    return runner


@dataclass(frozen=True)
class KernelTime:
    """One XNNPACK operator (or a non-delegated op) of a program, as ETDump timed it."""

    name: str
    delegated: bool
    p50_ms: float
    calls: int

    def to_dict(self) -> dict:
        return {"name": self.name, "delegated": self.delegated, "p50_ms": round(self.p50_ms, 5), "calls": self.calls}


def etdump_breakdown(lowered: Lowered, input_shape, *, threads: int = 1,
                     runs: int = 20) -> tuple[list[KernelTime], float]:
    """Per-kernel times of a program lowered with its ETRecord (`lower_pte(..., etrecord=True)`):
    ETDump of `runs` calls, read by Inspector with the ETRecord. Returns the kernels in execution
    order and the median `Method::execute` time (ms), both by ExecuTorch's own clock."""
    if lowered.etrecord is None:
        raise BackendError("the kernel breakdown needs the lowering's ETRecord: lower with etrecord=True")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from executorch.devtools import Inspector

        with tempfile.TemporaryDirectory(prefix="hwnas-etdump-") as tmp:
            record, dump = os.path.join(tmp, "etrecord.bin"), os.path.join(tmp, "etdump.etdp")
            lowered.etrecord.save(record)
            with ExecuTorchRunner(lowered.pte, threads=threads, timing_shape=input_shape, etdump=True) as runner:
                for _ in range(runs):
                    runner.time_call()
                runner.write_etdump(dump)
            inspector = Inspector(etdump_path=dump, etrecord=record)
    kernels, execute_ms = [], float("nan")
    for block in inspector.event_blocks:
        for event in block.events:
            if event.perf_data is None:
                continue
            if event.name == "Method::execute":
                execute_ms = float(event.perf_data.p50)
            elif event.name != "DELEGATE_CALL" and block.name == "Execute":
                kernels.append(KernelTime(event.name, bool(event.is_delegated_op), float(event.perf_data.p50),
                                          len(event.perf_data.raw)))
    return kernels, execute_ms
