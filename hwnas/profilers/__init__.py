"""Profiling backends, chosen by name."""

from .base import Profiler

__all__ = ["Profiler"]
