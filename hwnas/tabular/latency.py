"""A published device's measured latency as a search's latency model: HW-NAS-Bench's latency of
the whole NB201 network on a Raspberry Pi 4, a Pixel 3, Eyeriss or an FPGA, looked up per cell.

It answers what the trial loop asks of a latency predictor (`predict`, `latency_ms`, the exact
range of the space, a fingerprint of what a search sees), so `--latency-budget` (ms, or % of the
range) works on it as on a profiled table. The latency is the published figure of the whole
network: no sum of parts, no calibration, and no stated error of ours (HW-NAS-Bench measured it).
Parameters and peak activation bytes are counted from the cell (NB201's modules, fp32).
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..core.arch import Arch
from ..errors import HwnasError
from ..latency_tables.predictor import Prediction
from ..core.spaces import SearchSpace
from ..core.spaces.nb201 import EDGES, NB201Space
from .nb201 import DEVICE_NAMES, DEVICES, NB201Table

_CONV_KERNEL = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}


def nb201_params(choices, num_classes: int = 10, channels=NB201Space.channels,
                 cells: int = NB201Space.cells_per_stage) -> int:
    """Parameters of NB201's network for a cell: stem conv3x3 + BN, cells whose convolutions are
    ReLU-Conv-BN (no bias, affine BN), residual reduction blocks, final BN, linear classifier."""
    total = 3 * 9 * channels[0] + 2 * channels[0]
    for c in channels:
        cell = sum(k * k * c * c + 2 * c for k in (_CONV_KERNEL.get(choices[e]) for e, _, _ in EDGES) if k)
        total += cells * cell
    for c_in, c_out in zip(channels, channels[1:]):  # conv_a (s2), conv_b, shortcut avgpool + conv1x1
        total += 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out + c_in * c_out
    return total + 2 * channels[-1] + channels[-1] * num_classes + num_classes


def nb201_peak_activation_bytes(choices, resolution: int = 32, channels=NB201Space.channels) -> int:
    """The largest input + output (fp32 bytes) of one op the network runs: the stem, a cell's op
    at its stage's shape (none of a cell's ops when all its edges are `none`), a reduction."""
    size = resolution
    peak = 4 * (3 + channels[0]) * size * size
    runs_an_op = any(choices[e] != "none" for e, _, _ in EDGES)
    for i, c in enumerate(channels):
        if i:
            peak = max(peak, 4 * (channels[i - 1] * size * size + c * (size // 2) ** 2))
            size //= 2
        if runs_an_op:
            peak = max(peak, 4 * 2 * c * size * size)
    return peak


class DeviceLatency:
    """HW-NAS-Bench's latency of `device` for the architectures of space nb201."""

    range_is_exact = True
    derived = None  # every latency is a published figure, none derived

    def __init__(self, table: NB201Table, device: str, space: SearchSpace):
        if device not in DEVICES:
            raise HwnasError(f"--device {device!r} is not an HW-NAS-Bench device; choose one of {', '.join(DEVICES)}")
        if space.name != "nb201":
            raise HwnasError(f"--device {device} gives HW-NAS-Bench's latency of NB201 cells, not of space "
                             f"{space.name!r}; search with --space nb201, or profile your space and give --lut")
        if space.resolution != 32 or space.num_classes not in (10, 100):
            raise HwnasError(f"HW-NAS-Bench measured NB201's CIFAR network (32x32 input, 10 or 100 classes), not one "
                             f"at {space.resolution}px with {space.num_classes} classes; with --device use "
                             "--benchmark-dataset cifar10 or cifar100 and the space's resolution")
        self.table, self.device, self.space = table, device, space
        self.values = table.columns[DEVICES[device]]

    @property
    def device_name(self) -> str:
        return DEVICE_NAMES[self.device]

    @property
    def source(self) -> str:
        return f"{self.device_name}: {self.table.path}"

    def latency_ms(self, arch: Arch) -> float:
        return float(self.values[self.table.row(arch)])

    def predict(self, arch: Arch) -> Prediction:
        choices = arch.choice_map
        latency = self.latency_ms(arch)
        return Prediction(latency_ms=latency, raw_sum_ms=latency, error_pct=None,
                          params=nb201_params(choices, self.space.num_classes),
                          peak_activation_bytes=nb201_peak_activation_bytes(choices, self.space.resolution))

    def smallest_memory(self) -> tuple[int, int]:
        """The fewest parameters and the lowest peak activation bytes of any cell (all `none`)."""
        empty = {name: "none" for name, _, _ in EDGES}
        return nb201_params(empty, self.space.num_classes), nb201_peak_activation_bytes(empty, self.space.resolution)

    def latency_range(self, samples: int = 2000, seed: int = 0) -> tuple[float, float]:
        """The fastest and the slowest architecture's latency: exact, over every cell (so neither
        `samples` nor `seed` is needed)."""
        return float(self.values.min()), float(self.values.max())

    def fingerprint(self) -> str:
        """Hash of the latencies a search of this device sees."""
        return hashlib.sha256(self.device.encode() + self.values.tobytes()).hexdigest()[:16]

    def quantile_ms(self, q: float) -> float:
        """The latency that a share `q` of all cells meets."""
        return float(np.quantile(self.values, q))

    def best_under(self, final: np.ndarray, budget_ms: float) -> tuple[int, float]:
        """The oracle: (row, value) of the cell with the highest `final` within `budget_ms`."""
        mask = self.values <= budget_ms * (1 + 1e-9)
        if not mask.any():
            raise HwnasError(f"no NB201 cell runs within {budget_ms:.4g} ms on {self.device}")
        row = int(np.argmax(np.where(mask, final, -np.inf)))
        return row, float(final[row])


__all__ = ["DeviceLatency", "nb201_params", "nb201_peak_activation_bytes"]
