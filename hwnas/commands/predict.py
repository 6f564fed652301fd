"""`hwnas predict`, `hwnas calibrate` and `hwnas validate`: latency predictions and their error."""

from __future__ import annotations

import json
import sys

from ..core.presets import resolve_arch
from ..errors import HwnasError
from ..jobs.calibrate import VALIDATE_ROUNDS, CalibrateRequest, ValidateRequest, calibrate, validate
from ..latency_tables.batch import predict_many, read_archs_file
from ..latency_tables.loading import space_for_table
from ..latency_tables.predictor import LatencyPredictor
from ..latency_tables.published import is_published
from ..latency_tables.validation import END_TO_END
from ..profilers.table import LatencyTable
from .common import SEED


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predicted latency and memory of architectures")
    p.add_argument("--lut", required=True, help="latency table JSON")
    p.add_argument("arch", metavar="ARCH", nargs="*", help="architecture JSON file or preset:NAME (several, or with "
                   "--archs-file: one JSON object per line with --json)")
    p.add_argument("--archs-file", default=None, metavar="LIST.jsonl",
                   help="many architectures, one architecture object per line (as in an architecture file); "
                        "with --json, prints one prediction per line in input order")
    p.add_argument("--resolution", type=int, default=None, help="input resolution (default: the table's)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes of the deployed head (default: the space's; the table must hold that head)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_predict)

    c = subparsers.add_parser("calibrate", help="fit the LUT-sum correction from end-to-end measurements")
    _common(c, END_TO_END.rounds)
    c.add_argument("--samples", type=int, default=40,
                   help="architectures to measure (default 40: half uniform, half lopsided: all-e1, all-e6, many "
                        "skips, heavy front or back, ...)")
    c.add_argument("--seed", type=SEED, default=1000)
    c.add_argument("--resume", action="store_true",
                   help="continue an interrupted calibration from its checkpoint (TABLE.calibrate-progress.json)")
    c.set_defaults(func=cmd_calibrate)

    v = subparsers.add_parser("validate", help="predicted vs measured latency on held-out architectures")
    _common(v, VALIDATE_ROUNDS)
    v.add_argument("--samples", type=int, default=50, help="uniform samples (none used for calibration; default 50)")
    v.add_argument("--lopsided", type=int, default=20,
                   help="lopsided samples of the kinds searches return (all-e1, all-e6, many skips, ...; default 20)")
    v.add_argument("--archs", nargs="*", default=[], help="more architectures: JSON files or preset:NAME")
    v.add_argument("--seed", type=SEED, default=2000)
    v.add_argument("--out", required=True, help="directory for report.json and scatter.png")
    v.add_argument("--force", action="store_true", help="overwrite the report of an earlier validation in --out")
    v.add_argument("--no-store", action="store_true",
                   help="do not record the held-out error in the table (by default predictions then state the "
                        "larger of it and the cross-validated error)")
    v.set_defaults(func=cmd_validate)


def _common(parser, rounds: int) -> None:
    parser.add_argument("--lut", required=True, help="latency table JSON (calibrations are stored in it)")
    parser.add_argument("--space", default=None, help="space (default: the table's only one)")
    parser.add_argument("--resolution", type=int, default=None, help="resolution (default: the table's only one)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classes of the deployed head (default: the space's; the table must hold that head)")
    parser.add_argument("--rounds", type=int, default=rounds,
                        help=f"interleaved measurement rounds per architecture (default {rounds})")


def _predict_batch(args, table: LatencyTable) -> int:
    """Many architectures -> one JSON object per line, in input order (nothing printed on a bad input)."""
    if not args.json:
        raise HwnasError("several architectures are predicted as JSON lines (one object per architecture): pass --json")
    archs = [(ref, ref, resolve_arch(ref)) for ref in args.arch]
    if args.archs_file is not None:
        archs += read_archs_file(args.archs_file)
    docs = predict_many(table, archs, args.resolution, args.num_classes)
    sys.stdout.write("\n".join(json.dumps(doc, sort_keys=True) for doc in docs) + "\n")
    return 0


def cmd_predict(args) -> int:
    table = LatencyTable.load(args.lut)
    if not args.arch and args.archs_file is None:
        raise HwnasError("name an architecture to predict (ARCH: a JSON file or preset:NAME) or --archs-file LIST.jsonl")
    if len(args.arch) > 1 or args.archs_file is not None:
        return _predict_batch(args, table)
    args.arch = args.arch[0]
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
    if is_published(table):
        error = (f" (error unknown: a published table of {table.device['name']}, whose error was not published and "
                 "cannot be measured from here)")
    elif calibration is None:
        error = " (uncalibrated raw sum: run `hwnas calibrate` for a stated error)"
    elif calibration.stated_error_pct == (calibration.validated_error_pct or 0.0):
        error = f" ± {prediction.error_pct:.1f}% (MAPE on {calibration.validated_n} held-out architectures)"
    elif calibration.stated_error_pct == calibration.noise_pct:
        error = f" ± {prediction.error_pct:.1f}% (the run-to-run noise of the calibration's measurements)"
    else:
        error = f" ± {prediction.error_pct:.1f}% (cross-validated MAPE)"
    if prediction.coverage_note:
        error = f" ± {prediction.error_pct:.1f}% (widened: {prediction.coverage_note})"
    print(f"{args.arch} on {table.backend} at {space.resolution}px, {space.num_classes} classes: "
          f"{prediction.latency_ms:.2f} ms{error}")
    if table.reference and table.reference.get("ms"):
        print(f"  at the table's machine speed (its reference network: {table.reference['ms']:.3f} ms); "
              "`hwnas validate` states how fast the machine runs now")
    print(f"  raw LUT sum {prediction.raw_sum_ms:.2f} ms, params {prediction.params:,}, "
          f"peak activations {prediction.peak_activation_bytes / 2**20:.1f} MiB")
    if prediction.derived:
        print(f"  derived: {prediction.derived}")
    return 0


def cmd_calibrate(args) -> int:
    done = calibrate(CalibrateRequest.from_args(args))
    calibration, record = done.calibration, done.record
    groups = ", ".join(f"{g} {v:.1f}%" for g, v in calibration.group_error_pct)
    print(f"calibration at {done.space.resolution}px stored in {args.lut}: {calibration.model} "
          f"(cross-validated MAPE {groups}; states ±{calibration.stated_error_pct:.1f}%, the larger of that and the "
          f"measurements' run-to-run noise) on {calibration.n_samples} architectures")
    print("  models, cross-validated MAPE (uniform / lopsided): " + ", ".join(
        f"{m} {'/'.join(f'{v:.1f}' for v in e.values())}" for m, e in record["model_group_errors_pct"].items()))
    print(f"  run-to-run noise (median CV) {record['noise_cv_median'] * 100:.1f}%; the machine ran "
          f"{record['speed_vs_table']:.3f}x its speed at profiling (measurements rescaled by the reference network)")
    return 0


def cmd_validate(args) -> int:
    done = validate(ValidateRequest.from_args(args))
    s = done.report["summary"]
    print(f"{s['n_archs']} architectures on {done.table.backend} at {done.space.resolution}px "
          f"(run-to-run noise: median CV {s['noise_cv_median'] * 100:.1f}%)")
    print("  at the table's speed (every measurement rescaled by the reference network):")
    for name in ("raw", "calibrated"):
        _print_errors(name, s[name])
    for group, errors in s["groups"].items():
        _print_errors(f"{group} calibrated", errors["calibrated"])
    drift = s["speed_vs_table"]
    print(f"  the machine runs {drift:.3f}x its time at profiling (range {s['speed_range'][0]:.3f}-"
          f"{s['speed_range'][1]:.3f}); as measured now, predictions x that speed:")
    _print_errors("as measured", s["as_measured"])
    if s.get("stated_error_pct") is not None:
        print(f"  stated error ±{s['stated_error_pct']:.1f}% ({'covers' if s['stated_covers_mape'] else 'BELOW'} the "
              f"measured MAPE); {s['within_stated'] * 100:.0f}% of architectures within their stated error, "
              f"{s['widened']} widened as unlike the calibration")
    print(f"wrote {done.out / 'report.json'} and {done.out / 'scatter.png'}")
    if done.stored:
        print(done.stored)
    return 0


def _print_errors(name: str, r: dict) -> None:
    print(f"    {name:<20} MAPE {r['mape_pct']:5.1f}%  within ±5% {r['within_5pct'] * 100:5.1f}%  "
          f"within ±10% {r['within_10pct'] * 100:5.1f}%  Kendall tau {r['kendall_tau']:.3f}  (n={r['n']})")
