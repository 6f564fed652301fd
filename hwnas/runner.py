"""The runner protocol moved to `hwnas.runtimes.base`; this name stays for code that imports it."""

from .runtimes.base import Runner

__all__ = ["Runner"]
