"""Memory of one op: parameter bytes, input/output bytes, and peak activation memory.

`peak_bytes` is the activation memory an op needs while it runs, including its input and
output and excluding its parameters. Where it comes from is recorded in `peak_source`:

  cuda:max_memory_allocated   torch-cuda: the allocator's peak during one call minus what was
                              allocated before it (weights, input), plus the input; includes
                              cuDNN workspaces, excludes the allocator's cache slack.
  tensorrt:device_memory      TensorRT: the engine's execution-context memory (activations and
                              scratch) plus input and output.
  estimate:hooks              CPU backends and ONNX Runtime (which exposes no peak): the op's
                              input stays alive (a residual may need it), and each leaf layer
                              needs its input and output at once, so the estimate is
                              max over leaf layers of (leaf input + leaf output), plus the op
                              input when the layer does not read it, and at least input + output.
                              In-place activations, fusions and allocator slack are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MemoryInfo:
    """Bytes of one op; becomes the memory fields of a Measurement."""

    param_bytes: int
    input_bytes: int
    output_bytes: int
    peak_bytes: int | None
    peak_source: str

    def fields(self) -> dict:
        return {
            "param_bytes": self.param_bytes,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "peak_bytes": self.peak_bytes,
            "peak_source": self.peak_source,
        }


def param_bytes(module: nn.Module) -> int:
    """Bytes of the parameters (not buffers such as BatchNorm running statistics)."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


def tensor_bytes(shape, dtype: torch.dtype = torch.float32) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count * torch.empty((), dtype=dtype).element_size()


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def _nbytes(value) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(value))


def estimate_on_cpu(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, MemoryInfo]:
    """Run `module` once on `x` with forward hooks; return its output and the hook estimate
    of the module docstring."""
    input_bytes = _nbytes(x)
    input_ptr = x.data_ptr()
    peak = 0

    def hook(_mod, inputs, output):
        nonlocal peak
        reads_op_input = any(t.data_ptr() == input_ptr for t in _tensors(inputs))
        live = _nbytes(inputs) + _nbytes(output) + (0 if reads_op_input else input_bytes)
        peak = max(peak, live)

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.inference_mode():
            out = module(x)
    finally:
        for h in handles:
            h.remove()
    output_bytes = _nbytes(out)
    info = MemoryInfo(
        param_bytes=param_bytes(module),
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        peak_bytes=max(peak, input_bytes + output_bytes),
        peak_source="estimate:hooks",
    )
    return out, info


def cuda_peak_bytes(call, device: torch.device, input_bytes: int) -> int:
    """Peak activation bytes of one `call()` on `device` from torch's caching allocator."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    call()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before + input_bytes
