"""How far is the LUT's prediction from measured end-to-end latency?

For each backend: copy the table, calibrate it on `--calib` sampled architectures (or keep its
own calibration with `--calibrated`), then
validate on `--samples` other sampled architectures plus the space's presets, measured in
interleaved rounds; print raw and calibrated MAPE, share within ±5% / ±10%, Kendall tau and the
backend's own run-to-run noise, against the targets of issue 4, and the same calibrated figures
with every measurement rescaled by the speed of a reference op timed beside it (how much of the
error is the machine changing speed since calibration):
  >= 95% within ±10% after calibration, Kendall tau >= 0.9, calibrated MAPE <= 1.5 x noise.

    python benchmarks/lut_fidelity.py --lut hwnas/latency_tables/<table>.json [--lut ...] \
        --calib 20 --samples 50 --rounds 3 --out benchmarks/results/lut_fidelity

Measure on a quiet machine: tables are profiled with 1 thread; nothing else should run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from hwnas.cli import main as hwnas_main
from hwnas.latency_tables.table import LatencyTable
from hwnas.presets import PRESETS


def run(lut: Path, args) -> dict:
    table = LatencyTable.load(lut)
    space = args.space or table.spaces[0]
    out = Path(args.out) / f"{table.backend}-{space}"
    out.mkdir(parents=True, exist_ok=True)
    work_lut = out / "lut.json"
    shutil.copyfile(lut, work_lut)
    common = ["--lut", str(work_lut), "--space", space, "--rounds", str(args.rounds)]
    if args.resolution:
        common += ["--resolution", str(args.resolution)]
    start = time.perf_counter()
    if args.calibrated:
        if not (table.calibration or {}).get(str(args.resolution or table.resolutions[0])):
            raise SystemExit(f"{lut} has no calibration at that resolution; run `hwnas calibrate` or drop --calibrated")
    elif hwnas_main(["calibrate", *common, "--samples", str(args.calib)]) != 0:
        raise SystemExit(f"calibration failed for {lut}")
    calibrate_s = time.perf_counter() - start
    presets = [f"preset:{name}" for name, (space_name, _, _) in PRESETS.items() if space_name == space]
    start = time.perf_counter()
    if hwnas_main(["validate", *common, "--samples", str(args.samples), "--archs", *presets, "--out", str(out)]) != 0:
        raise SystemExit(f"validation failed for {lut}")
    validate_s = time.perf_counter() - start
    report = json.loads((out / "report.json").read_text())
    summary = report["summary"]
    summary["calibrate_s"], summary["validate_s"] = calibrate_s, validate_s
    return summary


def meets_targets(errors: dict, mape_over_noise: float | None) -> bool:
    """Issue 4's targets: >= 95% within ±10%, Kendall tau >= 0.9, MAPE <= 1.5 x the noise."""
    return (errors["within_10pct"] >= 0.95 and errors["kendall_tau"] >= 0.9
            and mape_over_noise is not None and mape_over_noise <= 1.5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lut", action="append", required=True, help="table to check (repeatable)")
    parser.add_argument("--space", default=None)
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--calib", type=int, default=20)
    parser.add_argument("--calibrated", action="store_true",
                        help="use the table's own calibration (e.g. a shipped table) instead of fitting a new one")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/lut_fidelity")
    args = parser.parse_args(argv)
    rows = {lut: run(Path(lut), args) for lut in args.lut}
    print()
    print(f"{'backend':<10} {'n':>3} {'noise':>6} | {'raw MAPE':>8} {'±10%':>6} {'tau':>5} | "
          f"{'cal MAPE':>8} {'±5%':>6} {'±10%':>6} {'tau':>5} {'MAPE/noise':>10} | model")
    ok = True
    for lut, s in rows.items():
        raw, cal = s["raw"], s["calibrated"]
        ratio = s["mape_over_noise"]
        print(f"{s['backend']:<10} {s['n_archs']:>3} {s['noise_cv_median'] * 100:5.1f}% | {raw['mape_pct']:7.1f}% "
              f"{raw['within_10pct'] * 100:5.0f}% {raw['kendall_tau']:5.3f} | {cal['mape_pct']:7.1f}% "
              f"{cal['within_5pct'] * 100:5.0f}% {cal['within_10pct'] * 100:5.0f}% {cal['kendall_tau']:5.3f} "
              f"{ratio if ratio is None else f'{ratio:10.2f}'} | {s['calibration']['model']} a={s['calibration']['a']:.3f} "
              f"b={s['calibration']['b']:.2f} (calibrate {s['calibrate_s']:.0f}s, validate {s['validate_s']:.0f}s)")
        met = meets_targets(cal, ratio)
        ok &= met
        print(f"  targets (>=95% within ±10%, tau >= 0.9, MAPE <= 1.5x noise): {'met' if met else 'NOT met'}")
        adjusted = s.get("calibrated_speed_adjusted")
        if adjusted:
            noise_pct = s["noise_cv_median"] * 100
            ratio_adj = adjusted["mape_pct"] / noise_pct if noise_pct > 0 else None
            met_adj = meets_targets(adjusted, ratio_adj)
            print(f"  reference op {s['speed_vs_calibration']:.3f}x its time at calibration; rescaled by it: MAPE "
                  f"{adjusted['mape_pct']:.1f}%, ±5% {adjusted['within_5pct'] * 100:.0f}%, ±10% "
                  f"{adjusted['within_10pct'] * 100:.0f}%, tau {adjusted['kendall_tau']:.3f}, MAPE/noise {ratio_adj if ratio_adj is None else f'{ratio_adj:.2f}'}: "
                  f"targets {'met' if met_adj else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
