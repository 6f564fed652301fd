"""Op memory moved to `hwnas.runtimes.memory` (runners report it); this name stays for old imports."""

from ..runtimes.memory import MemoryInfo, cuda_peak_bytes, estimate_on_cpu, param_bytes, tensor_bytes

__all__ = ["MemoryInfo", "cuda_peak_bytes", "estimate_on_cpu", "param_bytes", "tensor_bytes"]
