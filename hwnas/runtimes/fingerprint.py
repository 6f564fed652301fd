"""Device fingerprint stored with every table: what the numbers were measured on.

Top-level keys `hostname`, `time`, `load`, `clocks` and `temperature` describe the moment and
are left out when tables are compared (`hwnas.profilers.table.device_identity`);
everything else (CPU model, cores, threads used, GPU, driver, library versions) must match
for two tables to merge or for `--resume` to continue a table.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
from datetime import datetime, timezone
from pathlib import Path

# instruction-set extensions that change which kernels the CPU backends pick
_ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "sve")


def _cpuinfo() -> list[dict[str, str]]:
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return []
    blocks, current = [], {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current = {}
            continue
        key, _, value = line.partition(":")
        current[key.strip()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def cpu_info(threads_used: int | None = None) -> dict:
    """CPU model, vendor/family/model numbers, cores, ISA flags, and the threads the backend uses."""
    blocks = _cpuinfo()
    first = blocks[0] if blocks else {}
    physical = {(b.get("physical id"), b.get("core id")) for b in blocks if "core id" in b}
    flags = set(first.get("flags", first.get("Features", "")).split())
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count()
    info = {
        "model": first.get("model name") or platform.processor() or platform.machine(),
        "vendor": first.get("vendor_id", ""),
        "family_model_stepping": "/".join(first.get(k, "?") for k in ("cpu family", "model", "stepping")),
        "arch": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": len(physical) or None,
        "cpus_available": available,
        "isa": sorted(f for f in _ISA_FLAGS if f in flags),
    }
    max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_freq.is_file():
        info["max_mhz"] = int(max_freq.read_text().strip()) // 1000
    if threads_used is not None:
        info["threads_used"] = threads_used
    return info


def library_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed versions of the given distributions (None where absent), without importing them."""
    aliases = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13")}
    versions = {}
    for name in names:
        versions[name] = None
        for dist in aliases.get(name, (name,)):
            try:
                versions[name] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def gpu_info(index: int = 0) -> tuple[dict | None, dict]:
    """(static GPU facts, volatile clocks/temperature) of CUDA device `index`, via torch and
    pynvml (nvidia-ml-py) where present; (None, {}) without a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        return None, {}
    props = torch.cuda.get_device_properties(index)
    info = {
        "name": props.name,
        "memory_bytes": int(props.total_memory),
        "compute_capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }
    volatile: dict = {}
    try:
        import pynvml
    except ImportError:
        info["nvml"] = "nvidia-ml-py not installed"
        return info, volatile
    try:
        pynvml.nvmlInit()
        try:
            handle = _nvml_handle(pynvml, props, index)
            info["driver"] = _text(pynvml.nvmlSystemGetDriverVersion())
            info["nvml_name"] = _text(pynvml.nvmlDeviceGetName(handle))
            info["max_sm_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)
            info["max_mem_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
            info["power_limit_w"] = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
            volatile["clocks"] = {
                "sm_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                "mem_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            }
            volatile["temperature"] = pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError as exc:  # driver library missing, no permission, ...
        info["nvml"] = f"unavailable ({exc})"
    return info, volatile


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_handle(pynvml, props, index: int):
    """The NVML handle of the torch device: matched by UUID (CUDA_VISIBLE_DEVICES may reorder)."""
    uuid = str(getattr(props, "uuid", "") or "")
    if uuid:
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            if _text(pynvml.nvmlDeviceGetUUID(handle)).removeprefix("GPU-") == uuid.removeprefix("GPU-"):
                return handle
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def device_fingerprint(threads_used: int | None, libraries: tuple[str, ...], gpu_index: int | None = None) -> dict:
    """The full fingerprint: CPU, optional GPU, OS, versions of the libraries the backend uses."""
    doc = {
        "cpu": cpu_info(threads_used),
        "os": {"system": platform.system(), "python": ".".join(platform.python_version_tuple()[:2])},
        "libraries": library_versions(libraries),
        "hostname": socket.gethostname(),
        "time": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
    }
    if hasattr(os, "getloadavg"):
        doc["load"] = [round(v, 2) for v in os.getloadavg()]
    if gpu_index is not None:
        gpu, volatile = gpu_info(gpu_index)
        doc["gpu"] = gpu
        doc.update(volatile)
    return doc


def device_slug(device: dict) -> str:
    """Short file-name-safe name of the device (the GPU where there is one, else the CPU)."""
    gpu = device.get("gpu") or {}
    name = gpu.get("name") or device.get("cpu", {}).get("model") or "device"
    slug = "".join(c if c.isalnum() else "-" for c in name.lower())
    for noise in ("-r-", "-tm-", "-cpu-", "-processor", "nvidia-", "-core-"):
        slug = slug.replace(noise, "-")
    slug = "-".join(part for part in slug.split("-") if part)
    fms = device.get("cpu", {}).get("family_model_stepping", "")
    if not gpu and fms and "?" not in fms:
        slug += "-f" + fms.replace("/", "-")  # "AMD EPYC" alone names many CPUs
    return slug
