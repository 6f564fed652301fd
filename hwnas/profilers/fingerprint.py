"""The device fingerprint moved to `hwnas.runtimes.fingerprint`; this name stays for old imports."""

from ..runtimes.fingerprint import cpu_info, device_fingerprint, device_slug, gpu_info, library_versions

__all__ = ["cpu_info", "device_fingerprint", "device_slug", "gpu_info", "library_versions"]
