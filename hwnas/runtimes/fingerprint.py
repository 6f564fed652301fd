"""Device fingerprint stored with every table: what the numbers were measured on.

The record is `DeviceFingerprint` (JSON Schema: `$defs/device` of hwnas/schemas/lut.schema.json).
A measured table's fingerprint names the CPU (and GPU, OS, library versions) it was profiled on;
an imported published table's names the device and the source instead (`name`, `source`,
`published: true`). Top-level keys `hostname`, `time`, `load`, `clocks`, `temperature` (and
`memory_free` of older writers) describe the moment and are left out when tables are compared
(`DeviceFingerprint.identity`); everything else (CPU model, cores, threads used, GPU, driver,
library versions) must match for two tables to merge or for `--resume` to continue a table.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from ..errors import LutError
from ..schemas import first_error

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


#: keys of a fingerprint that describe the moment of profiling, not the device
VOLATILE = frozenset({"hostname", "time", "clocks", "load", "memory_free", "temperature"})


@dataclass(frozen=True)
class DeviceFingerprint:
    """What a table's numbers were measured on. `cpu`, `gpu`, `os`, `libraries` and `clocks`
    stay JSON objects (their keys are typed by the schema, `$defs/device`); a field that is None
    is absent from the JSON form, and keys this version does not know are kept in `extra`, so
    `from_dict(d).to_dict()` gives `d` back (a `gpu: null`, written where a CUDA device was
    looked for and none found, is the one key it drops: absent and null both mean no GPU)."""

    cpu: Mapping | None = None
    gpu: Mapping | None = None
    os: Mapping | None = None
    libraries: Mapping | None = None
    hostname: str | None = None
    time: str | None = None
    load: tuple[float, ...] | None = None
    clocks: Mapping | None = None
    temperature: float | None = None
    #: the runtime's own build and settings where a backend reports them (OpenVINO: its build
    #: string, the plugin's device name and the compile properties; remote: the command template)
    runtime: Mapping | None = None
    # a published table's device (hwnas lut import): its name and where its numbers come from
    name: str | None = None
    source: str | None = None
    published: bool = False
    extra: Mapping = field(default_factory=dict)

    def to_dict(self) -> dict:
        doc = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None or (f.name == "published" and not value):
                continue
            doc[f.name] = list(value) if f.name == "load" else _plain(value)
        doc.update(_plain(self.extra))
        return doc

    @classmethod
    def from_dict(cls, data: object) -> "DeviceFingerprint":
        """Check `data` against `$defs/device` and build the record; a LutError names the key."""
        if not isinstance(data, Mapping):
            raise LutError(f"device: must be an object, got {data!r}")
        problem = first_error(dict(data), "lut", "device")
        if problem:
            raise LutError(f"device/{problem}" if not problem.startswith("top level") else f"device: {problem[11:]}")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("load") is not None:
            values["load"] = tuple(values["load"])
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def identity(self) -> dict:
        """The parts that identify hardware and software, not the moment (what must match)."""
        return {k: v for k, v in self.to_dict().items() if k not in VOLATILE}


def _plain(value):
    """A JSON-ready copy (mappings become dicts, tuples lists)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def device_fingerprint(threads_used: int | None, libraries: tuple[str, ...], gpu_index: int | None = None,
                       runtime: Mapping | None = None, name: str | None = None) -> dict:
    """The full fingerprint (the JSON form of a `DeviceFingerprint`): CPU, optional GPU, OS,
    versions of the libraries the backend uses, the runtime's own facts (`runtime`), a device
    `name` where the device is not this machine's CPU (a remote one), and the moment (host, time,
    load, clocks)."""
    gpu, volatile = gpu_info(gpu_index) if gpu_index is not None else (None, {})
    return DeviceFingerprint(
        cpu=cpu_info(threads_used),
        gpu=gpu,
        os={"system": platform.system(), "python": ".".join(platform.python_version_tuple()[:2])},
        libraries=library_versions(libraries),
        hostname=socket.gethostname(),
        time=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        load=tuple(round(v, 2) for v in os.getloadavg()) if hasattr(os, "getloadavg") else None,
        clocks=volatile.get("clocks"),
        temperature=volatile.get("temperature"),
        runtime=runtime,
        name=name,
    ).to_dict()


def openvino_runtime(config: Mapping, device: str = "CPU") -> dict:
    """OpenVINO's part of a fingerprint: its build string, the plugin's name of the device, the
    optimisation capabilities that decide its kernels (BF16, INT8, ...), and the compile properties."""
    import openvino as ov

    core = ov.Core()
    return {"name": "openvino", "version": ov.get_version(), "device": str(core.get_property(device, "FULL_DEVICE_NAME")),
            "capabilities": sorted(str(c) for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES")),
            "config": {k: v for k, v in config.items() if k != "PERF_COUNT"}}


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
