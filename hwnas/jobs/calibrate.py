"""Calibrate a latency table and validate it on held-out architectures: end-to-end measurements
on the table's own backend and device, a calibration fitted and stored in the table, a held-out
report. A calibration checkpoints every finished segment of rounds (TABLE.calibrate-progress.json)
and resumes from it after a kill."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from ..core.arch import arch_from_dict
from ..errors import HwnasError
from ..options import record_from
from ..jsonio import atomic_write_json, read_json
from ..latency_tables.calibration import Calibration, Validation
from ..latency_tables.loading import open_profiler, space_for_table
from ..latency_tables.plot import scatter_png
from ..latency_tables.predictor import LatencyPredictor
from ..latency_tables.sampling import Sample, calibration_samples, choice_costs, draw_samples, group_of
from ..latency_tables.validation import END_TO_END, calibrate_table, calibration_hashes, fidelity_report, measure_archs
from ..locks import hold
from ..core.presets import resolve_arch
from ..profilers.interleaved import RoundRecord
from ..profilers.table import LatencyTable
from ..runs import check_writable
from ..core.spaces import SearchSpace

#: a validation is the check of a table: twice the rounds of a calibration make it precise enough to order
#: architectures a few percent apart (on this VM, odd against even rounds: tau 0.87-0.92 at 7 rounds, 0.94 at 15)
VALIDATE_ROUNDS = 15


@dataclass(frozen=True, kw_only=True)
class TableRequest:
    """A job on one table: the table, and the space, resolution and head it is used at (by
    default the table's only space and resolution, the space's head)."""

    lut: str
    space: str | None = None
    resolution: int | None = None
    num_classes: int | None = None

    @classmethod
    def from_args(cls, args):
        return record_from(cls, vars(args))


@dataclass(frozen=True, kw_only=True)
class CalibrateRequest(TableRequest):
    """`hwnas calibrate`'s flags, by the same names."""

    rounds: int = END_TO_END.rounds
    samples: int = 40
    seed: int = 1000
    resume: bool = False


@dataclass(frozen=True, kw_only=True)
class ValidateRequest(TableRequest):
    """`hwnas validate`'s flags, by the same names."""

    out: str
    rounds: int = VALIDATE_ROUNDS
    samples: int = 50
    lopsided: int = 20
    archs: list = field(default_factory=list)
    seed: int = 2000
    force: bool = False
    no_store: bool = False


@dataclass(frozen=True)
class Calibrated:
    table: LatencyTable
    space: SearchSpace
    calibration: Calibration
    record: dict  # the stored calibration as written, with its model comparison and noise


@dataclass(frozen=True)
class Validated:
    table: LatencyTable
    space: SearchSpace
    report: dict
    out: Path
    stored: str | None  # what storing the held-out error did (None with --no-store or without a calibration)


def _positive(value: int, flag: str) -> None:
    if value < 1:
        raise HwnasError(f"{flag} must be >= 1, got {value}")


def progress_path(lut: str) -> Path:
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


def _open_calibration_progress(request: CalibrateRequest, space, predictor: LatencyPredictor):
    """The samples and finished rounds of an interrupted calibration (with --resume), or new samples
    (their checkpoint written at once), and the function that checkpoints further rounds."""
    path = progress_path(request.lut)
    identity = {"space": space.name, "resolution": space.resolution, "num_classes": space.num_classes,
                "seed": request.seed, "count": request.samples}
    if path.exists() and not request.resume:
        raise HwnasError(f"a calibration of {request.lut} was interrupted ({path} holds its measurements); pass "
                         "--resume to continue it, or delete that file to start again")
    if path.exists():
        doc = read_json(path, "calibration checkpoint")
        if doc.get("identity") != identity:
            raise HwnasError(f"{path} is a calibration with other settings ({doc.get('identity')}); rerun with those, "
                             "or delete the file to start again")
        samples = [Sample(arch_from_dict(s["arch"], str(path)), s["family"]) for s in doc["samples"]]
        records = {h: [RoundRecord.from_dict(r) for r in rounds] for h, rounds in doc["rounds"].items()}
        return samples, records, _checkpoint_writer(path, identity, samples)
    samples = calibration_samples(space, choice_costs(space, predictor.raw_sum_ms), request.samples, request.seed)
    write = _checkpoint_writer(path, identity, samples)
    write({})
    return samples, {}, write


def calibrate(request: CalibrateRequest) -> Calibrated:
    """Measure the calibration samples (resumable), fit, and store the calibration in the table,
    under a lock on the table (a second calibrate or profile of it is refused)."""
    _positive(request.samples, "--samples")
    if request.rounds < 2:
        raise HwnasError(f"--rounds must be >= 2 (the noise a calibration states is the spread between rounds; one "
                         f"round cannot measure it), got {request.rounds}")
    with hold(request.lut, "latency table"):
        table = LatencyTable.load(request.lut)
        space = space_for_table(table, request.space, request.resolution, request.num_classes)
        predictor = LatencyPredictor(table, space)  # refuses incomplete tables before measuring anything
        # opening the profiler refuses another device or backend before anything is written
        with open_profiler(table) as profiler:
            samples, records, checkpoint = _open_calibration_progress(request, space, predictor)
            measurements = _measure(profiler, table, space, samples, request.rounds, request.seed, "calibrating",
                                    records, checkpoint)
        calibration = calibrate_table(table, space, measurements, samples)
        table.save(request.lut)
        progress_path(request.lut).unlink(missing_ok=True)
    return Calibrated(table, space, calibration, table.calibration[str(space.resolution)])


def validate(request: ValidateRequest) -> Validated:
    """Measure held-out architectures (never calibration samples), write report.json and
    scatter.png into --out, and, unless --no-store, record the held-out error in the table."""
    r = request
    _positive(r.samples + r.lopsided + len(r.archs), "--samples plus --lopsided plus --archs")
    _positive(r.rounds, "--rounds")
    if r.samples < 0 or r.lopsided < 0:
        raise HwnasError("--samples and --lopsided must be >= 0")
    table = LatencyTable.load(r.lut)
    space = space_for_table(table, r.space, r.resolution, r.num_classes)
    predictor = LatencyPredictor(table, space)
    given = [resolve_arch(ref) for ref in r.archs]
    for arch in given:
        arch.check_space(space)
    exclude = calibration_hashes(table, space.resolution) | {a.hash for a in given}
    drawn = draw_samples(space, choice_costs(space, predictor.raw_sum_ms), r.samples, r.lopsided, r.seed,
                         exclude=exclude)
    samples = [Sample(a, "given") for a in given] + drawn
    labels = list(r.archs) + [f"{s.family}:{s.arch.hash}" for s in drawn]
    groups = ["given"] * len(given) + group_of(drawn)
    out = Path(r.out)
    if out.exists() and not out.is_dir():
        raise HwnasError(f"--out {out} is a file; validate writes report.json and scatter.png into a folder: give a "
                         "folder path")
    check_writable(out)
    if (out / "report.json").exists() and not r.force:
        raise HwnasError(f"{out / 'report.json'} exists; pass --force to overwrite it or choose another --out")
    with open_profiler(table) as profiler:
        measurements = _measure(profiler, table, space, samples, r.rounds, r.seed, "validating")
    report = fidelity_report(predictor, measurements, labels, groups)
    report["summary"].update({"backend": table.backend, "space": space.name, "resolution": space.resolution,
                              "num_classes": space.num_classes, "lut": str(r.lut), "seed": r.seed})
    atomic_write_json(out / "report.json", report)
    scatter_png(report, out / "scatter.png")
    record = (table.calibration or {}).get(str(space.resolution))
    stored = None
    if record is not None and not r.no_store:
        with hold(r.lut, "latency table"):
            stored = store_validation(table, r, record, report["summary"])
    return Validated(table, space, report, out, stored)


def store_validation(table: LatencyTable, request: ValidateRequest, record: dict, s: dict) -> str:
    """Record the held-out error in the table; a calibration worse than the raw sum on held-out
    architectures is replaced by the raw sum (never keep a correction that hurts). Returns what
    was done, in words."""
    c, raw = s["calibrated"], s["raw"]
    said, column = "", "calibrated"
    if record["model"] != "raw" and c["mape_pct"] > raw["mape_pct"]:
        said = (f"  the {record['model']} calibration ({c['mape_pct']:.1f}%) is worse than the raw LUT sum "
                f"({raw['mape_pct']:.1f}%) on these held-out architectures: the table falls back to the raw sum\n")
        record.update(model="raw", a=1.0, b=0.0, c=0.0, type_scales={}, replaced_model=record["model"])
        column = "raw"
    record["validation"] = Validation.from_summary(s, column, seed=request.seed).to_dict()
    table.save(request.lut)
    stated = Calibration.from_dict(record).stated_error_pct
    return (f"{said}stored the held-out error in {request.lut}: predictions state ±{stated:.1f}% (the largest of it, "
            f"the cross-validated {record['error_pct']:.1f}% and the calibration's noise "
            f"{record.get('noise_pct', 0.0):.1f}%)")
