"""Test fixture: latency tables made from hand-set numbers (latency proportional to an op's MACs),
complete for a space, so that search tests need no profiler. Real runs always take a profiled table."""

from __future__ import annotations

import torch

from hwnas.build import Head, Stem, build_block
from hwnas.latency_tables import LatencyTable, Measurement, OpKey


def op_macs(op, space) -> int:
    cfg = space.build_config
    if op.kind == "stem":
        module = Stem(cfg)
    elif op.kind == "head":
        module = Head(op.in_chs, cfg, space.num_classes)
    else:
        module = build_block(op.spec, op.in_chs, cfg)
    macs = 0

    def hook(m, _inputs, out):
        nonlocal macs
        if isinstance(m, torch.nn.Conv2d):
            kh, kw = m.kernel_size
            macs += out.numel() * (m.in_channels // m.groups) * kh * kw
        else:
            macs += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    module.eval()
    with torch.no_grad():
        module(torch.zeros(op.input_shape()))
    for h in handles:
        h.remove()
    return macs


def mac_table(space, ms_per_mmac: float = 1.0, base_ms: float = 0.01, calibration: dict | None = None) -> LatencyTable:
    """A complete table for `space`: latency = base_ms + ms_per_mmac * MACs / 1e6 for every op."""
    table = LatencyTable(backend="test-macs", backend_options={}, device={"name": "fixture"},
                         spaces=[space.name], resolutions=[space.resolution], calibration=calibration)
    for op in space.all_ops():
        ms = base_ms + ms_per_mmac * op_macs(op, space) / 1e6
        table.put(OpKey.for_op(op, space.build_config.name),
                  Measurement(p10_ms=ms * 0.95, p50_ms=ms, p90_ms=ms * 1.05, mean_ms=ms, std_ms=ms * 0.02, count=10))
    return table
