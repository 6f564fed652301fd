"""Latency lookup tables and the predictor built on them."""

from ..profilers.table import LUT_FORMAT, LUT_VERSION, LatencyTable, Measurement, OpKey, canonical_block

__all__ = ["LUT_FORMAT", "LUT_VERSION", "LatencyTable", "Measurement", "OpKey", "canonical_block"]
