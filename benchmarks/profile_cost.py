"""Cost and repeatability of profiling a space (issue 3, item 7).

For each backend, profile the whole space twice into fresh tables, report the wall time of each
profile and the drift between the two: per entry the relative change of its latency in units of
its table's reference network (the machine's speed of the moment cancels), median and max.
Targets: under 3 minutes per backend for fbnet at 224 px with 1 thread, median drift under 5%.

    .venv/bin/python benchmarks/profile_cost.py                          # fbnet@224, ort-cpu + torch-cpu
    .venv/bin/python benchmarks/profile_cost.py --space tiny --quick     # smoke run, seconds
    .venv/bin/python benchmarks/profile_cost.py --json report.json --keep-dir tables/

Run it on a quiet machine: the load average before and after is printed with the result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's hwnas

from hwnas.errors import HwnasError  # noqa: E402
from hwnas.latency_tables import LatencyTable  # noqa: E402
from hwnas.profilers import get_profiler  # noqa: E402
from hwnas.profilers.session import ProfileSettings, profile_space  # noqa: E402
from hwnas.profilers.interleaved import RoundsConfig  # noqa: E402
from hwnas.profilers.statistics import StatsConfig  # noqa: E402
from hwnas.core.spaces import get_space  # noqa: E402

TARGET_WALL_S = 180.0
TARGET_MEDIAN_DRIFT = 0.05


def drift(a: LatencyTable, b: LatencyTable) -> dict:
    """Relative change of every shared entry's latency in units of its own table's reference
    network (what a table's predictions rest on: ratios, not the machine's speed of the moment)."""
    ra, rb = a.reference["ms"], b.reference["ms"]
    changes = {k: abs(b.entries[k].p50_ms / rb - m.p50_ms / ra) / (m.p50_ms / ra)
               for k, m in a.entries.items() if k in b.entries}
    if not changes:
        return {"entries": 0, "median": None, "max": None, "worst": None}
    worst = max(changes, key=changes.get)
    return {"entries": len(changes), "median": statistics.median(changes.values()), "max": changes[worst],
            "worst": worst, "p90": sorted(changes.values())[int(0.9 * (len(changes) - 1))]}


def run_backend(backend: str, args, folder: Path) -> dict:
    space = get_space(args.space, resolution=args.resolution)
    stats = StatsConfig.quick() if args.quick else StatsConfig()
    options = {"threads": args.threads}
    runs, tables = [], []
    for i in range(1, args.runs + 1):
        out = folder / f"{args.space}{space.resolution}_{backend}_run{i}.json"
        out.unlink(missing_ok=True)
        start = time.perf_counter()
        with get_profiler(backend, stats=stats, **options) as profiler:
            report = profile_space(space, profiler, out, ProfileSettings(
                progress=not args.no_progress, rounds=RoundsConfig.quick() if args.quick else RoundsConfig()))
        wall = time.perf_counter() - start
        table = LatencyTable.load(out)
        tables.append(table)
        runs.append({"wall_s": round(wall, 2), "entries": len(table), "remeasured": report.remeasured,
                     "reference_ms": report.reference_ms, "machine_drift": report.drift,
                     "sum_p50_ms": round(sum(m.p50_ms for m in table.entries.values()), 4),
                     "table": str(out)})
        print(f"  {backend} run {i}: {wall:.1f} s, {len(table)} entries, {report.remeasured} segments re-timed for drift",
              file=sys.stderr)
    result = {"backend": backend, "options": tables[0].backend_options, "runs": runs}
    if len(tables) >= 2:
        result["drift"] = drift(tables[0], tables[1])
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="fbnet")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--backends", default="ort-cpu,torch-cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=2, help="consecutive profiles per backend (2 for drift)")
    parser.add_argument("--quick", action="store_true", help="quick statistics: a smoke run, not the benchmark")
    parser.add_argument("--keep-dir", default=None, help="keep the tables here (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.space == "tiny" and args.resolution == 224:
        args.resolution = None

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="hwnas-bench-") as tmp:
            folder = Path(args.keep_dir or tmp)
            folder.mkdir(parents=True, exist_ok=True)
            for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
                results.append(run_backend(backend, args, folder))
    except HwnasError as exc:
        print(f"profile_cost: error: {exc}", file=sys.stderr)
        return 2
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None

    report = {
        "space": args.space, "resolution": args.resolution, "threads": args.threads, "quick": args.quick,
        "load_before": load_before, "load_after": load_after, "results": results,
        "targets": {"wall_s": TARGET_WALL_S, "median_drift": TARGET_MEDIAN_DRIFT},
    }
    print(f"profile cost: {args.space}@{args.resolution or 'default'}, {args.threads} thread(s)"
          f"{' (QUICK statistics: smoke run only)' if args.quick else ''}; load {load_before} -> {load_after}")
    print(f"{'backend':<10} {'entries':>7} {'wall s (each run)':>20} {'median drift':>13} {'p90 drift':>10} "
          f"{'max drift':>10}  verdict")
    ok_all = True
    for r in results:
        walls = [run["wall_s"] for run in r["runs"]]
        d = r.get("drift") or {}
        ok = max(walls) < TARGET_WALL_S and (d.get("median") is None or d["median"] < TARGET_MEDIAN_DRIFT)
        ok_all &= ok
        fmt = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
        print(f"{r['backend']:<10} {r['runs'][0]['entries']:>7} {' / '.join(f'{w:.1f}' for w in walls):>20} "
              f"{fmt(d.get('median')):>13} {fmt(d.get('p90')):>10} {fmt(d.get('max')):>10}  "
              f"{'meets targets' if ok else 'MISSES a target'}")
        if d.get("worst"):
            print(f"{'':<10} largest drift: {d['worst']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
