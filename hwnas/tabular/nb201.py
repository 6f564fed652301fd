"""NAS-Bench-201 as a lookup table: every one of its 15,625 cells, trained and measured once by
others (NB201's accuracies, HW-NAS-Bench's device latencies), so a search is simulated in seconds.

The table is the CSV of `../shared/data/nasbench/nb201/` (see its README): one row per cell with
its NB201 index and string, 12- and 200-epoch accuracies on CIFAR-10/100 and ImageNet16-120, and
the latency of the CIFAR-10 network on four devices. A look-up goes through an integer code of the
architecture (its six edge choices as base-5 digits), so it costs one array access.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..core.arch import Arch
from ..errors import HwnasError
from ..core.spaces import get_space
from ..core.spaces.nb201 import EDGES, NB201_OPS, parse_nb201_string

CSV = Path("nb201") / "nb201_cifar_accuracy_latency.csv"
ENV = "HWNAS_NASBENCH"


@dataclass(frozen=True)
class Signal:
    """What a search on one dataset sees (`search`: 12-epoch validation accuracy, the signal of the
    NB201 paper's simulations) and what it reports at the end (`final`: 200-epoch test accuracy)."""

    dataset: str
    search: str
    final: str


SIGNALS = {
    "cifar10": Signal("cifar10", "c10valid_valid_12ep", "c10_test_200ep"),
    "cifar100": Signal("cifar100", "c100_valid_12ep", "c100_test_200ep"),
    "imagenet16-120": Signal("imagenet16-120", "in16_valid_12ep", "in16_test_200ep"),
}
#: HW-NAS-Bench's devices -> the column with the latency (ms) of the whole CIFAR-10 network
DEVICES = {"raspi4": "raspi4_ms", "pixel3": "pixel3_ms", "eyeriss": "eyeriss_ms", "fpga": "fpga_ms"}
DEVICE_NAMES = {"raspi4": "Raspberry Pi 4 (HW-NAS-Bench, measured)", "pixel3": "Google Pixel 3 (HW-NAS-Bench, measured)",
                "eyeriss": "Eyeriss (HW-NAS-Bench, simulated)", "fpga": "FPGA (HW-NAS-Bench, simulated)"}
COLUMNS = tuple(sorted({c for s in SIGNALS.values() for c in (s.search, s.final)}
                       | {"c10_test_12ep", "c100_test_12ep", "in16_test_12ep"} | set(DEVICES.values())))
SIZE = len(NB201_OPS) ** len(EDGES)


class BenchmarkDataError(HwnasError):
    """The benchmark's data is missing or not what this code reads."""


def default_root() -> Path:
    """$HWNAS_NASBENCH, else `shared/data/nasbench` beside the repository (where project machines
    keep it)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nasbench"


def arch_code(choices) -> int:
    """The architecture's six edge choices as one integer (base 5, NB201's op order)."""
    code = 0
    for name, _, _ in EDGES:
        code = code * len(NB201_OPS) + NB201_OPS.index(choices[name])
    return code


class NB201Table:
    """Every NB201 cell's figures, looked up by architecture (or NB201 index)."""

    def __init__(self, path: Path, indices: np.ndarray, strings: list[str], columns: dict[str, np.ndarray]):
        self.path = path
        self.indices, self.strings, self.columns = indices, strings, columns
        self.row_of_code = np.full(SIZE, -1, dtype=np.int64)
        for row, text in enumerate(strings):
            self.row_of_code[arch_code(parse_nb201_string(text))] = row
        self.row_of_index = {int(i): row for row, i in enumerate(indices)}

    @classmethod
    def load(cls, root: str | os.PathLike | None = None) -> "NB201Table":
        """The table under `root` (default: `default_root()`), read once per process."""
        return _load(Path(root) if root is not None else default_root())

    def row(self, arch: Arch) -> int:
        if arch.space != "nb201":
            raise HwnasError(f"the NB201 benchmark holds architectures of space nb201, not {arch.space!r}; "
                             "search with --space nb201")
        return int(self.row_of_code[arch_code(arch.choice_map)])

    def value(self, arch: Arch, column: str) -> float:
        return float(self.columns[column][self.row(arch)])

    def index(self, arch: Arch) -> int:
        """The architecture's NB201 index (0..15624)."""
        return int(self.indices[self.row(arch)])

    def arch(self, index: int) -> Arch:
        """The architecture of NB201 index `index`."""
        if index not in self.row_of_index:
            raise HwnasError(f"NB201 has no architecture of index {index}; indices are 0..{SIZE - 1}")
        return Arch.create(get_space("nb201"), parse_nb201_string(self.strings[self.row_of_index[index]]))

    def archs(self) -> list[Arch]:
        """Every architecture, in row order (the order of `columns`)."""
        space = get_space("nb201")
        return [Arch.create(space, parse_nb201_string(text)) for text in self.strings]

    def record(self, arch: Arch, signal: Signal) -> dict:
        """What a result reports of itself: index, string, the search signal, the final accuracy."""
        row = self.row(arch)
        return {"name": "NAS-Bench-201", "dataset": signal.dataset, "index": int(self.indices[row]),
                "arch_str": self.strings[row], "signal": signal.search,
                "signal_value": float(self.columns[signal.search][row]), "final": signal.final,
                "final_value": float(self.columns[signal.final][row]), "source": str(self.path)}


@lru_cache(maxsize=4)
def _load(root: Path) -> NB201Table:
    path = root / CSV
    if not path.is_file():
        raise BenchmarkDataError(f"NAS-Bench-201 table {path} is missing; set {ENV}=DIR to the folder holding "
                                 f"{CSV} (project machines keep it in ../shared/data/nasbench)")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("arch_idx", "arch_str", *COLUMNS) if c not in (reader.fieldnames or ())]
        if missing:
            raise BenchmarkDataError(f"{path} lacks column(s) {', '.join(missing)}; use the CSV of "
                                     "shared/data/nasbench (see its README)")
        rows = list(reader)
    if len(rows) != SIZE:
        raise BenchmarkDataError(f"{path} has {len(rows)} rows, NAS-Bench-201 has {SIZE}; use the complete table")
    try:
        indices = np.array([int(r["arch_idx"]) for r in rows], dtype=np.int64)
        columns = {c: np.array([float(r[c]) for r in rows], dtype=np.float64) for c in COLUMNS}
    except ValueError as exc:
        raise BenchmarkDataError(f"{path}: a value is not a number ({exc}); use the CSV of shared/data/nasbench") from None
    table = NB201Table(path, indices, [r["arch_str"] for r in rows], columns)
    if (table.row_of_code < 0).any():
        raise BenchmarkDataError(f"{path} does not hold each of the {SIZE} cells once; use the complete table")
    return table


__all__ = ["DEVICES", "DEVICE_NAMES", "SIGNALS", "BenchmarkDataError", "NB201Table", "Signal", "arch_code",
           "default_root"]
