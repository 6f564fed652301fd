"""`hwnas predict`, `hwnas calibrate` and `hwnas validate`: latency predictions and their error."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from ..arch import Arch, arch_from_dict
from ..presets import resolve_arch
from ..errors import ArchError, HwnasError
from ..jsonio import atomic_write_json, read_json
from ..latency_tables.calibration import Calibration
from ..latency_tables.loading import open_profiler, space_for_table
from ..latency_tables.plot import scatter_png
from ..latency_tables.predictor import LatencyPredictor
from ..latency_tables.published import is_published
from ..latency_tables.sampling import Sample, calibration_samples, choice_costs, draw_samples, group_of
from ..latency_tables.table import LatencyTable
from ..latency_tables.validation import END_TO_END, calibrate_table, calibration_hashes, fidelity_report, measure_archs
from ..locks import hold
from ..profilers.interleaved import RoundRecord
from ..runs import check_writable
from ..spaces import get_space
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


#: a validation is the check of a table: twice the rounds of a calibration make it precise enough to order
#: architectures a few percent apart (on this VM, odd against even rounds: tau 0.87-0.92 at 7 rounds, 0.94 at 15)
VALIDATE_ROUNDS = 15


def _common(parser, rounds: int) -> None:
    parser.add_argument("--lut", required=True, help="latency table JSON (calibrations are stored in it)")
    parser.add_argument("--space", default=None, help="space (default: the table's only one)")
    parser.add_argument("--resolution", type=int, default=None, help="resolution (default: the table's only one)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classes of the deployed head (default: the space's; the table must hold that head)")
    parser.add_argument("--rounds", type=int, default=rounds,
                        help=f"interleaved measurement rounds per architecture (default {rounds})")


def _positive(value: int, flag: str) -> None:
    if value < 1:
        raise HwnasError(f"{flag} must be >= 1, got {value}")


def _read_archs_file(path: str) -> list[tuple[str, str, Arch]]:
    """(label `FILE:LINE`, `FILE line LINE`, architecture) of every non-blank line of a JSON-lines file; a bad line is
    an ArchError naming the file and the line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArchError(f"--archs-file {path}: cannot read it ({exc.__class__.__name__}: {exc}); give a JSON-lines file "
                        "of architecture objects") from None
    spaces: dict[str, object] = {}
    archs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise ArchError(f"{where}: not JSON ({exc}); each line is one architecture object, e.g. "
                            "`hwnas arch sample --space SPACE` on one line") from None
        name = data.get("space") if isinstance(data, dict) else None
        if isinstance(name, str) and name not in spaces:
            try:
                spaces[name] = get_space(name)
            except HwnasError:
                spaces[name] = None
        archs.append((f"{path}:{number}", where, arch_from_dict(data, where, space=spaces.get(name) if isinstance(name, str)
                                                         else None)))
    if not archs:
        raise ArchError(f"--archs-file {path} holds no architecture; write one architecture object per line")
    return archs


def _predict_batch(args, table: LatencyTable) -> int:
    """Many architectures -> one JSON object per line, in input order (nothing printed on a bad input)."""
    if not args.json:
        raise HwnasError("several architectures are predicted as JSON lines (one object per architecture): pass --json")
    archs = [(ref, ref, resolve_arch(ref)) for ref in args.arch]
    if args.archs_file is not None:
        archs += _read_archs_file(args.archs_file)
    space = space_for_table(table, archs[0][2].space, args.resolution, args.num_classes)
    for _, where, arch in archs:
        if arch.space != space.name:
            raise ArchError(f"{where}: architecture is of space {arch.space!r}, not {space.name!r} (the first one's); predict "
                            "one space per call")
    predictor = LatencyPredictor(table, space)
    fixed = {"space": space.name, "resolution": space.resolution, "num_classes": space.num_classes,
             "backend": table.backend}
    lines = [json.dumps({"input": label, "arch": arch.hash, **fixed, **predictor.predict(arch).to_dict()}, sort_keys=True)
             for label, _, arch in archs]
    sys.stdout.write("\n".join(lines) + "\n")
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


def _progress_path(lut: str) -> Path:
    return Path(str(lut) + ".calibrate-progress.json")


def _measure(profiler, table, space, samples, rounds, seed, what, records=None, on_segment=None):
    config = replace(END_TO_END, rounds=rounds)
    archs = [s.arch for s in samples]
    done = sum(min(len(v), rounds) for v in (records or {}).values())
    with tqdm(total=rounds * len(archs), initial=done, desc=what, unit="arch-round") as bar:
        return measure_archs(profiler, space, archs, table, config, seed=seed, records=records,
                             on_segment=on_segment, progress=bar.update)


def _checkpoint_writer(path: Path, identity: dict, samples: list[Sample]):
    """A function writing the calibration checkpoint (its settings, samples and finished rounds)."""
    sample_docs = [{"arch": s.arch.to_dict(), "family": s.family} for s in samples]

    def write(done: dict) -> None:
        atomic_write_json(path, {"identity": identity, "samples": sample_docs,
                                 "rounds": {h: [r.to_dict() for r in v] for h, v in done.items() if v}})
    return write


def _open_calibration_progress(args, space, predictor: LatencyPredictor):
    """The samples and finished rounds of an interrupted calibration (with --resume), or new samples
    (their checkpoint written at once), and the function that checkpoints further rounds."""
    path = _progress_path(args.lut)
    identity = {"space": space.name, "resolution": space.resolution, "num_classes": space.num_classes,
                "seed": args.seed, "count": args.samples}
    if path.exists() and not args.resume:
        raise HwnasError(f"a calibration of {args.lut} was interrupted ({path} holds its measurements); pass --resume "
                         "to continue it, or delete that file to start again")
    if path.exists():
        doc = read_json(path, "calibration checkpoint")
        if doc.get("identity") != identity:
            raise HwnasError(f"{path} is a calibration with other settings ({doc.get('identity')}); rerun with those, "
                             "or delete the file to start again")
        samples = [Sample(arch_from_dict(s["arch"], str(path)), s["family"]) for s in doc["samples"]]
        records = {h: [RoundRecord.from_dict(r) for r in rounds] for h, rounds in doc["rounds"].items()}
        return samples, records, _checkpoint_writer(path, identity, samples)
    samples = calibration_samples(space, choice_costs(space, predictor.raw_sum_ms), args.samples, args.seed)
    write = _checkpoint_writer(path, identity, samples)
    write({})
    return samples, {}, write


def cmd_calibrate(args) -> int:
    _positive(args.samples, "--samples")
    if args.rounds < 2:
        raise HwnasError(f"--rounds must be >= 2 (the noise a calibration states is the spread between rounds; one "
                         f"round cannot measure it), got {args.rounds}")
    with hold(args.lut, "latency table"):  # a second calibrate or profile of this table is refused
        return _calibrate(args)


def _calibrate(args) -> int:
    table = LatencyTable.load(args.lut)
    space = space_for_table(table, args.space, args.resolution, args.num_classes)
    predictor = LatencyPredictor(table, space)  # refuses incomplete tables before measuring anything
    # opening the profiler refuses another device or backend before anything is written
    with open_profiler(table) as profiler:
        samples, records, checkpoint = _open_calibration_progress(args, space, predictor)
        measurements = _measure(profiler, table, space, samples, args.rounds, args.seed, "calibrating", records,
                                checkpoint)
    calibration = calibrate_table(table, space, measurements, samples)
    table.save(args.lut)
    _progress_path(args.lut).unlink(missing_ok=True)
    record = table.calibration[str(space.resolution)]
    groups = ", ".join(f"{g} {v:.1f}%" for g, v in calibration.group_error_pct)
    print(f"calibration at {space.resolution}px stored in {args.lut}: {calibration.model} "
          f"(cross-validated MAPE {groups}; states ±{calibration.stated_error_pct:.1f}%, the larger of that and the "
          f"measurements' run-to-run noise) on {calibration.n_samples} architectures")
    print("  models, cross-validated MAPE (uniform / lopsided): " + ", ".join(
        f"{m} {'/'.join(f'{v:.1f}' for v in e.values())}" for m, e in record["model_group_errors_pct"].items()))
    print(f"  run-to-run noise (median CV) {record['noise_cv_median'] * 100:.1f}%; the machine ran "
          f"{record['speed_vs_table']:.3f}x its speed at profiling (measurements rescaled by the reference network)")
    return 0


def cmd_validate(args) -> int:
    _positive(args.samples + args.lopsided + len(args.archs), "--samples plus --lopsided plus --archs")
    _positive(args.rounds, "--rounds")
    if args.samples < 0 or args.lopsided < 0:
        raise HwnasError("--samples and --lopsided must be >= 0")
    table = LatencyTable.load(args.lut)
    space = space_for_table(table, args.space, args.resolution, args.num_classes)
    predictor = LatencyPredictor(table, space)
    given = [resolve_arch(ref) for ref in args.archs]
    for arch in given:
        arch.check_space(space)
    exclude = calibration_hashes(table, space.resolution) | {a.hash for a in given}
    drawn = draw_samples(space, choice_costs(space, predictor.raw_sum_ms), args.samples, args.lopsided, args.seed,
                         exclude=exclude)
    samples = [Sample(a, "given") for a in given] + drawn
    labels = list(args.archs) + [f"{s.family}:{s.arch.hash}" for s in drawn]
    groups = ["given"] * len(given) + group_of(drawn)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise HwnasError(f"--out {out} is a file; validate writes report.json and scatter.png into a folder: give a "
                         "folder path")
    check_writable(out)
    if (out / "report.json").exists() and not args.force:
        raise HwnasError(f"{out / 'report.json'} exists; pass --force to overwrite it or choose another --out")
    with open_profiler(table) as profiler:
        measurements = _measure(profiler, table, space, samples, args.rounds, args.seed, "validating")
    report = fidelity_report(predictor, measurements, labels, groups)
    report["summary"].update({"backend": table.backend, "space": space.name, "resolution": space.resolution,
                              "num_classes": space.num_classes, "lut": str(args.lut), "seed": args.seed})
    atomic_write_json(out / "report.json", report)
    scatter_png(report, out / "scatter.png")
    s = report["summary"]
    print(f"{s['n_archs']} architectures on {table.backend} at {space.resolution}px "
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
    print(f"wrote {out / 'report.json'} and {out / 'scatter.png'}")
    record = (table.calibration or {}).get(str(space.resolution))
    if record is not None and not args.no_store:
        with hold(args.lut, "latency table"):
            _store_validation(table, args, record, s)
    return 0


def _print_errors(name: str, r: dict) -> None:
    print(f"    {name:<20} MAPE {r['mape_pct']:5.1f}%  within ±5% {r['within_5pct'] * 100:5.1f}%  "
          f"within ±10% {r['within_10pct'] * 100:5.1f}%  Kendall tau {r['kendall_tau']:.3f}  (n={r['n']})")


def _store_validation(table: LatencyTable, args, record: dict, s: dict) -> None:
    """Record the held-out error in the table; a calibration worse than the raw sum on held-out
    architectures is replaced by the raw sum (never keep a correction that hurts)."""
    c, raw = s["calibrated"], s["raw"]
    if record["model"] != "raw" and c["mape_pct"] > raw["mape_pct"]:
        print(f"  the {record['model']} calibration ({c['mape_pct']:.1f}%) is worse than the raw LUT sum "
              f"({raw['mape_pct']:.1f}%) on these held-out architectures: the table falls back to the raw sum")
        record.update(model="raw", a=1.0, b=0.0, c=0.0, type_scales={}, replaced_model=record["model"])
        c = raw
    record["validation"] = {"mape_pct": c["mape_pct"], "within_10pct": c["within_10pct"],
                            "kendall_tau": c["kendall_tau"], "n_archs": s["n_archs"],
                            "noise_cv_median": s["noise_cv_median"], "seed": args.seed,
                            "speed_vs_table": s["speed_vs_table"],
                            "groups": {g: v["calibrated"]["mape_pct"] for g, v in s["groups"].items()}}
    table.save(args.lut)
    stated = Calibration.from_dict(record).stated_error_pct
    print(f"stored the held-out error in {args.lut}: predictions state ±{stated:.1f}% (the largest of it, the "
          f"cross-validated {record['error_pct']:.1f}% and the calibration's noise {record.get('noise_pct', 0.0):.1f}%)")
