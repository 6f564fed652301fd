"""How many architectures a second does `hwnas predict --archs-file LIST.jsonl --json` predict?

End to end through the CLI, in this process (table load, space, predictor, reading and checking
every line, one JSON line out per architecture; stdout to /dev/null), threads pinned to 1. The
workload is HELP's 5,000 measured FBNet CIFAR-100 architectures (their op_idx_list) on the
imported HW-NAS-Bench Raspberry Pi 4 table, where the shared data is present; otherwise 5,000
uniform fbnet_cifar100 architectures on a table of hand-set numbers. Prints the median of
--rounds rounds and the spread between them (the noise of a shared machine), and once the wall
time of the same command as a fresh process (Python start and imports included).

    python benchmarks/batch_predict.py [--rounds 7] [--archs 5000]

Target (issue 24): >= 1,000 architectures per second on 2 cores.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from hwnas.core.arch import Arch  # noqa: E402
from hwnas.cli import main as hwnas_main  # noqa: E402
from hwnas.profilers.table import LatencyTable, Measurement, OpKey  # noqa: E402
from hwnas.core.spaces import get_space  # noqa: E402

torch.set_num_threads(1)
NASBENCH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nasbench"


def _workload(folder: Path, count: int) -> tuple[Path, Path, str]:
    """(table, JSON-lines file, what they are)."""
    space = get_space("fbnet_cifar100")
    lut, jsonl = folder / "table.json", folder / "archs.jsonl"
    help_csv = NASBENCH / "help_fbnet" / "fbnet_cifar_5000archs_latency.csv"
    source = NASBENCH / "fbnet_hwnasbench" / "fbnet_lut_raspi4_cifar100_wide.csv"
    if help_csv.is_file() and source.is_file():
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            assert hwnas_main(["lut", "import", str(source), "--format", "hwnasbench", "--out", str(lut)]) == 0
        with help_csv.open() as handle:
            indices = [list(map(int, row["op_idx_list"].split())) for row in csv.DictReader(handle)]
        archs = [Arch.create(space, space.choices_from_indices(indices[i % len(indices)])) for i in range(count)]
        what = f"{count} of HELP's FBNet architectures on the HW-NAS-Bench Raspberry Pi 4 table"
    else:
        table = LatencyTable(backend="hand-set", backend_options={}, device={"name": "none"},
                             spaces=[space.name], resolutions=[space.resolution])
        for i, op in enumerate(space.all_ops()):
            ms = 0.01 * (1 + i % 7)
            table.put(OpKey.for_op(op, space.build_config.name),
                      Measurement(p10_ms=ms, p50_ms=ms, p90_ms=ms, mean_ms=ms, std_ms=0.0, count=1))
        table.save(lut)
        rng = random.Random(0)
        archs = [Arch.create(space, space.sample(rng)) for _ in range(count)]
        what = f"{count} uniform fbnet_cifar100 architectures on a hand-set table (shared data absent)"
    jsonl.write_text("".join(json.dumps(a.to_dict()) + "\n" for a in archs))
    return lut, jsonl, what


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--archs", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lut, jsonl, what = _workload(Path(tmp), args.archs)
        argv = ["predict", "--lut", str(lut), "--archs-file", str(jsonl), "--json"]
        rates = []
        for _ in range(args.rounds):
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                start = time.perf_counter()
                assert hwnas_main(argv) == 0
                rates.append(args.archs / (time.perf_counter() - start))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "hwnas", *argv], check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        process_s = time.perf_counter() - start
    median = statistics.median(rates)
    print(f"batch predict: {what}, threads 1, {os.cpu_count()} cpus")
    print(f"  {median:,.0f} archs/s median of {args.rounds} rounds in process (min {min(rates):,.0f}, max "
          f"{max(rates):,.0f}: spread {(max(rates) - min(rates)) / median:.0%} of the median)")
    print(f"  as a fresh process: {process_s:.2f} s for {args.archs} ({args.archs / process_s:,.0f} archs/s, Python "
          "start and imports included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
