"""Test fixture: latency tables made from hand-set numbers (latency proportional to an op's MACs),
complete for a space, so that search tests need no profiler. Real runs always take a profiled table."""

from __future__ import annotations

from hwnas.latency_tables import LatencyTable, Measurement, OpKey
from hwnas.profilers.session import op_module
from hwnas.core.summary import count_macs


def op_macs(op, space) -> int:
    return count_macs(op_module(op, space.build_config), op.input_shape())[0]


def mac_table(space, ms_per_mmac: float = 1.0, base_ms: float = 0.01, calibration: dict | None = None) -> LatencyTable:
    """A complete table for `space`: latency = base_ms + ms_per_mmac * MACs / 1e6 for every op."""
    table = LatencyTable(backend="test-macs", backend_options={}, device={"name": "fixture"},
                         spaces=[space.name], resolutions=[space.resolution], calibration=calibration)
    for op in space.all_ops():
        ms = base_ms + ms_per_mmac * op_macs(op, space) / 1e6
        table.put(OpKey.for_op(op, space.build_config.name),
                  Measurement(p10_ms=ms * 0.95, p50_ms=ms, p90_ms=ms * 1.05, mean_ms=ms, std_ms=ms * 0.02, count=10))
    return table


def activation_table(space, ms_per_melem: float = 2.0, base_ms: float = 0.05) -> LatencyTable:
    """A complete table of a memory-bound device: latency = base_ms + ms_per_melem * (input +
    output elements) / 1e6 per op, which ranks ops unlike `mac_table` (1x1 convolutions on wide
    tensors are dear, a 5x5 kernel costs no more than a 3x3)."""
    import math

    table = LatencyTable(backend="test-activations", backend_options={}, device={"name": "fixture-npu"},
                         spaces=[space.name], resolutions=[space.resolution])
    for op in space.all_ops():
        out_h, out_w = op.out_hw()
        elems = math.prod(op.input_shape()) + op.out_chs() * out_h * out_w
        ms = base_ms + ms_per_melem * elems / 1e6
        table.put(OpKey.for_op(op, space.build_config.name),
                  Measurement(p10_ms=ms * 0.95, p50_ms=ms, p90_ms=ms * 1.05, mean_ms=ms, std_ms=ms * 0.02, count=10))
    return table
