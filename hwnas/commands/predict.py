"""`hwnas predict`, `hwnas calibrate` and `hwnas validate`: latency predictions and their error."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from ..arch import resolve_arch
from ..errors import HwnasError
from ..jsonio import atomic_write_json
from ..latency_tables.calibration import Calibration
from ..latency_tables.loading import open_profiler, space_for_table
from ..latency_tables.plot import scatter_png
from ..latency_tables.predictor import LatencyPredictor
from ..latency_tables.table import LatencyTable
from ..latency_tables.validation import (
    calibrate_table,
    calibration_hashes,
    fidelity_report,
    measure_archs,
    sample_archs,
)


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predicted latency and memory of an architecture")
    p.add_argument("--lut", required=True, help="latency table JSON")
    p.add_argument("arch", metavar="ARCH", help="architecture JSON file or preset:NAME")
    p.add_argument("--resolution", type=int, default=None, help="input resolution (default: the table's)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes of the deployed head (default: the space's; the table must hold that head)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_predict)

    c = subparsers.add_parser("calibrate", help="fit the LUT-sum correction from end-to-end measurements")
    _common(c)
    c.add_argument("--samples", type=int, default=20, help="sampled architectures to measure (default 20)")
    c.add_argument("--seed", type=int, default=1000)
    c.set_defaults(func=cmd_calibrate)

    v = subparsers.add_parser("validate", help="predicted vs measured latency on held-out architectures")
    _common(v)
    v.add_argument("--samples", type=int, default=20, help="sampled architectures (not used for calibration)")
    v.add_argument("--archs", nargs="*", default=[], help="more architectures: JSON files or preset:NAME")
    v.add_argument("--seed", type=int, default=2000)
    v.add_argument("--out", required=True, help="directory for report.json and scatter.png")
    v.add_argument("--no-store", action="store_true",
                   help="do not record the held-out error in the table (by default predictions then state the "
                        "larger of it and the cross-validated error)")
    v.set_defaults(func=cmd_validate)


def _common(parser) -> None:
    parser.add_argument("--lut", required=True, help="latency table JSON (calibrations are stored in it)")
    parser.add_argument("--space", default=None, help="space (default: the table's only one)")
    parser.add_argument("--resolution", type=int, default=None, help="resolution (default: the table's only one)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds per architecture")


def _positive(value: int, flag: str) -> None:
    if value < 1:
        raise HwnasError(f"{flag} must be >= 1, got {value}")


def cmd_predict(args) -> int:
    table = LatencyTable.load(args.lut)
    arch = resolve_arch(args.arch)
    space = space_for_table(table, arch.space, args.resolution, args.num_classes)
    predictor = LatencyPredictor(table, space)
    prediction = predictor.predict(arch)
    doc = {"arch": arch.hash, "space": space.name, "resolution": space.resolution, "num_classes": space.num_classes,
           "backend": table.backend, **prediction.to_dict()}
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    calibration = predictor.calibration
    if calibration is None:
        error = " (uncalibrated raw sum: run `hwnas calibrate` for a stated error)"
    elif calibration.stated_error_pct > calibration.error_pct:
        error = f" ± {prediction.error_pct:.1f}% (MAPE on {calibration.validated_n} held-out architectures)"
    else:
        error = f" ± {prediction.error_pct:.1f}% (cross-validated MAPE)"
    print(f"{args.arch} on {table.backend} at {space.resolution}px, {space.num_classes} classes: "
          f"{prediction.latency_ms:.2f} ms{error}")
    print(f"  raw LUT sum {prediction.raw_sum_ms:.2f} ms, params {prediction.params:,}, "
          f"peak activations {prediction.peak_activation_bytes / 2**20:.1f} MiB")
    return 0


def _measure(table, space, archs, rounds, seed, what):
    with open_profiler(table) as profiler, tqdm(total=rounds * len(archs), desc=what, unit="arch") as bar:
        def progress(done, _total):
            bar.update(done - bar.n)

        return measure_archs(profiler, space, archs, batch=table.batch, rounds=rounds, seed=seed, progress=progress)


def cmd_calibrate(args) -> int:
    _positive(args.samples, "--samples")
    _positive(args.rounds, "--rounds")
    table = LatencyTable.load(args.lut)
    space = space_for_table(table, args.space, args.resolution)
    LatencyPredictor(table, space)  # refuses incomplete tables before measuring anything
    archs = sample_archs(space, args.samples, args.seed)
    measurements = _measure(table, space, archs, args.rounds, args.seed, "calibrating")
    calibration = calibrate_table(table, space, measurements)
    table.save(args.lut)
    print(f"calibration at {space.resolution}px stored in {args.lut}: {calibration.model} "
          f"a={calibration.a:.4f} b={calibration.b:.3f} ms, cross-validated error {calibration.error_pct:.1f}% "
          f"on {calibration.n_samples} architectures")
    return 0


def cmd_validate(args) -> int:
    _positive(args.samples + len(args.archs), "--samples plus --archs")
    _positive(args.rounds, "--rounds")
    table = LatencyTable.load(args.lut)
    space = space_for_table(table, args.space, args.resolution)
    predictor = LatencyPredictor(table, space)
    given = [resolve_arch(ref) for ref in args.archs]
    for ref, arch in zip(args.archs, given):
        arch.check_space(space)
    exclude = calibration_hashes(table, space.resolution) | {a.hash for a in given}
    sampled = sample_archs(space, args.samples, args.seed, exclude=exclude)
    archs = given + sampled
    labels = list(args.archs) + [f"sample:{a.hash}" for a in sampled]
    out = Path(args.out)
    measurements = _measure(table, space, archs, args.rounds, args.seed, "validating")
    report = fidelity_report(predictor, measurements, labels)
    report["summary"].update({"backend": table.backend, "space": space.name, "resolution": space.resolution,
                              "lut": str(args.lut)})
    atomic_write_json(out / "report.json", report)
    scatter_png(report, out / "scatter.png")
    s = report["summary"]
    print(f"{s['n_archs']} architectures on {table.backend} at {space.resolution}px "
          f"(run-to-run noise: median CV {s['noise_cv_median'] * 100:.1f}%)")
    for name in ("raw", "calibrated"):
        r = s[name]
        print(f"  {name:<10} MAPE {r['mape_pct']:5.1f}%  within ±5% {r['within_5pct'] * 100:5.1f}%  "
              f"within ±10% {r['within_10pct'] * 100:5.1f}%  Kendall tau {r['kendall_tau']:.3f}")
    speed, adjusted = s["speed_vs_calibration"], s["calibrated_speed_adjusted"]
    if adjusted is not None:
        print(f"  the reference op runs {speed:.3f}x its time at calibration; measurements rescaled by it: "
              f"MAPE {adjusted['mape_pct']:5.1f}%  within ±10% {adjusted['within_10pct'] * 100:5.1f}%")
        if abs(speed - 1.0) > 0.03:
            print(f"  note: this machine is {abs(speed - 1) * 100:.0f}% {'slower' if speed > 1 else 'faster'} than when "
                  "the table was calibrated (load, clocks); every prediction is off by that much now")
    print(f"wrote {out / 'report.json'} and {out / 'scatter.png'}")
    record = (table.calibration or {}).get(str(space.resolution))
    if record is not None and not args.no_store:
        c = s["calibrated"]
        record["validation"] = {"mape_pct": c["mape_pct"], "within_10pct": c["within_10pct"],
                                "kendall_tau": c["kendall_tau"], "n_archs": s["n_archs"],
                                "noise_cv_median": s["noise_cv_median"], "seed": args.seed,
                                "speed_vs_calibration": speed,
                                "speed_adjusted_mape_pct": adjusted["mape_pct"] if adjusted else None}
        table.save(args.lut)
        stated = Calibration.from_dict(record).stated_error_pct
        print(f"stored the held-out error in {args.lut}: predictions state ±{stated:.1f}% "
              f"(the larger of it and the cross-validated {record['error_pct']:.1f}%)")
    return 0
