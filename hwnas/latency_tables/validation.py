"""End-to-end measurement of whole architectures, calibration fitting and the fidelity report.

Whole networks are timed by the same interleaved-rounds loop as the table's ops
(`hwnas.profilers.interleaved`), against the table's reference network, and expressed at the
reference's time when the table was profiled (`measured_ms`). The table, its calibration and a
validation made at different times then compare as if measured at one moment: the machine's
drift cancels instead of landing in the fitted correction or in the reported error.

What a user meets at this very minute is the table's prediction times the machine's present
speed; so every measurement also keeps the time as measured (`absolute_ms`) and the speed
(`speed` = the reference's time now / at profiling), and every report states that drift.
The spread of an architecture's normalised rounds is the backend's own run-to-run noise,
reported next to the prediction error: a predictor cannot be checked to be better than that.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy.stats import kendalltau

from ..core.arch import Arch
from ..errors import LutError
from ..profilers.end_to_end import END_TO_END, measure_end_to_end
from ..profilers.interleaved import RoundRecord, RoundsConfig, round_spread
from ..core.reference import reference_model, reference_ms
from ..core.spaces import SearchSpace
from .calibration import MODELS, Calibration, CalibrationData, fit_model, selection_score
from .predictor import LatencyPredictor
from .published import is_published
from .sampling import Sample, group_of
from ..profilers.table import LatencyTable


@dataclass(frozen=True)
class EndToEnd:
    """Whole-network latency of one architecture over interleaved rounds."""

    arch: Arch
    measured_ms: float    # median of the rounds, each rescaled to the table's reference time
    absolute_ms: float    # median of the rounds as timed (this session's speed)
    noise_cv: float       # spread of the rescaled rounds
    speed: float          # the reference's time during these rounds / at profiling (>1: slower now)
    round_ms: tuple[float, ...] = ()
    reference_ms: tuple[float, ...] = ()

    @classmethod
    def from_rounds(cls, arch: Arch, rounds: Sequence[RoundRecord], r0: float) -> "EndToEnd":
        normalised = [r.normalised(r0) for r in rounds]
        return cls(arch, float(np.median(normalised)), float(np.median([r.time_ms for r in rounds])),
                   round_spread(rounds, r0), float(np.median([r.reference_ms for r in rounds]) / r0),
                   tuple(r.time_ms for r in rounds), tuple(r.reference_ms for r in rounds))


def measure_archs(profiler, space: SearchSpace, archs: Sequence[Arch], table: LatencyTable,
                  config: RoundsConfig = END_TO_END, seed: int = 0,
                  records: Mapping[str, Sequence[RoundRecord]] | None = None,
                  on_segment: Callable[[dict[str, list[RoundRecord]]], None] | None = None,
                  progress: Callable[[int], None] | None = None) -> list[EndToEnd]:
    """End-to-end latency of each architecture on the table's backend, in interleaved rounds
    against the table's reference network (prepared `config.chunk_size` at a time);
    `records` holds rounds already timed (a resumed calibration), keyed by architecture hash."""
    r0 = reference_ms(table.reference)
    input_shape = (table.batch, 3, space.resolution, space.resolution)
    networks = {a.hash: (lambda a=a: space.build_model(a.choice_map).eval()) for a in archs}
    rounds = measure_end_to_end(networks, input_shape, profiler, reference=reference_model(table.reference, table.batch),
                                config=config, seed=seed, records=records, on_segment=on_segment, progress=progress)
    return [EndToEnd.from_rounds(a, rounds[a.hash], r0) for a in archs]


def exported_latency(lut_path, table: LatencyTable, prediction, arch: Arch, model, resolution: int, batch: int,
                     onnx_bytes: bytes | None, exported: tuple | None = None) -> dict:
    """The export report's `latency` section: predicted vs measured latency of the exported model
    on the LUT's backend (hwnas.profilers.end_to_end.measure_end_to_end, on the machine the table
    was made on). Backends whose runtime runs ONNX time the exported ONNX bytes themselves,
    PyTorch backends the model they were exported from. Interleaved with the table's reference
    network, `measured_ms` is at the speed the table was profiled at, as the prediction is;
    `absolute_ms` is as timed now. The prediction is the calibrated one searches use. A published
    table's device is not this machine: its section holds the prediction only (see
    `unmeasured_latency`). `exported`: (the model or a loader of it, what it is) to time instead,
    such as an OpenVINO IR on the openvino backend or a `.pte` program on executorch."""
    from ..runtimes import get_runtime
    from .loading import open_profiler

    if is_published(table):
        return unmeasured_latency(lut_path, table, prediction, int(model.num_classes))

    shape = (batch, 3, resolution, resolution)
    r0 = reference_ms(table.reference)
    with open_profiler(table) as profiler:  # refuses tables of other machines and published ones first
        runs_onnx = get_runtime(table.backend).runs_onnx
        network, what = (onnx_bytes, "exported ONNX model") if runs_onnx else (model, "PyTorch model")
        if exported is not None:
            network, what = exported
        rounds = measure_end_to_end(network, shape, profiler, reference=reference_model(table.reference, table.batch))
    measured = EndToEnd.from_rounds(arch, rounds, r0)
    error = (prediction.latency_ms - measured.measured_ms) / measured.measured_ms * 100.0
    return {
        "num_classes": int(model.num_classes),
        "lut": str(lut_path),
        "backend": table.backend,
        "backend_options": table.backend_options,
        "measured_what": what,
        "predicted_ms": prediction.latency_ms,
        "raw_sum_ms": prediction.raw_sum_ms,
        "stated_error_pct": prediction.error_pct,
        "coverage_note": prediction.coverage_note,
        "measured_ms": measured.measured_ms,
        "absolute_ms": measured.absolute_ms,
        "speed_vs_table": measured.speed,
        "rounds": len(rounds),
        "error_pct": error,
    }


def unmeasured_latency(lut_path, table: LatencyTable, prediction, num_classes: int) -> dict:
    """The export report's `latency` section for a published table: the prediction, not measured
    (its device, a phone, is not this machine), with an unknown error."""
    return {
        "num_classes": num_classes,
        "lut": str(lut_path),
        "backend": table.backend,
        "backend_options": table.backend_options,
        "device": table.device.get("name"),
        "predicted_ms": prediction.latency_ms,
        "raw_sum_ms": prediction.raw_sum_ms,
        "stated_error_pct": None,
        "derived": prediction.derived,
        "measured_ms": None,
        "note": f"predicted from a published table of {table.device.get('name')}; not measured (this machine is not "
                "that device) and its error is unknown: time the exported model on that device",
    }


def exported_prediction(table: LatencyTable, arch: Arch, resolution: int, batch: int, num_classes: int):
    """Predict the exported network (its head at `num_classes`) before any export work: a table of
    another batch, or one without that head, fails fast."""
    from ..errors import ExportError
    from .loading import space_for_table

    if batch != table.batch:
        raise ExportError(f"the table was measured at batch {table.batch}, the export is at batch {batch}; "
                          f"export with --batch {table.batch} to compare latencies")
    space = space_for_table(table, arch.space, resolution, num_classes)
    return LatencyPredictor(table, space).predict(arch)


def calibration_data(predictor: LatencyPredictor, measurements: Sequence[EndToEnd],
                     groups: Sequence[str] | None = None) -> CalibrationData:
    """The raw sums, op counts, per-category sums and measurements a calibration is fitted on."""
    return CalibrationData.create(
        [predictor.raw_sum_ms(m.arch) for m in measurements], [m.measured_ms for m in measurements],
        [predictor.n_ops(m.arch) for m in measurements], [predictor.type_sums(m.arch) for m in measurements], groups)


def fit_best_calibration(data: CalibrationData, resolution: int,
                         models: Sequence[str] = MODELS) -> tuple[Calibration, dict[str, Calibration]]:
    """Fit each model that has enough samples; keep the one whose leave-one-out MAPE, uniform
    and lopsided samples weighed equally, is lowest. `raw` (no correction) is always among
    them, so a fit worse than the plain sum on held-out samples is never chosen."""
    fitted = {model: fit_model(data, model, resolution) for model in models
              if data.raw.size >= data.min_samples(model)}
    if not fitted:
        raise LutError("calibration needs at least 2 measured architectures")
    order = {m: i for i, m in enumerate(MODELS)}  # ties go to the simpler model
    best = min(fitted.values(), key=lambda c: (round(selection_score(dict(c.group_error_pct)), 6), order[c.model]))
    return best, fitted


def calibrate_table(table: LatencyTable, space: SearchSpace, measurements: Sequence[EndToEnd],
                    samples: Sequence[Sample] | None = None) -> Calibration:
    """Fit a calibration from end-to-end measurements and store it (with its samples) in `table`."""
    predictor = LatencyPredictor(table, space)
    groups = group_of(samples) if samples else None
    data = calibration_data(predictor, measurements, groups)
    calibration, fitted = fit_best_calibration(data, space.resolution)
    calibration = replace(calibration, noise_pct=float(np.median([m.noise_cv for m in measurements]) * 100.0))
    families = [s.family for s in samples] if samples else ["uniform"] * len(measurements)
    record = calibration.to_dict()
    record.update({
        "space": space.name,
        "num_classes": space.num_classes,
        "model_errors_pct": {m: c.error_pct for m, c in fitted.items()},
        "model_group_errors_pct": {m: dict(c.group_error_pct) for m, c in fitted.items()},
        "noise_cv_median": float(np.median([m.noise_cv for m in measurements])),
        "speed_vs_table": float(np.median([m.speed for m in measurements])),
        "samples": [
            {"arch": m.arch.hash, "choices": m.arch.choice_map, "family": f, "raw_sum_ms": float(r), "n_ops": int(n), "measured_ms": m.measured_ms,
             "absolute_ms": m.absolute_ms, "noise_cv": m.noise_cv, "speed": m.speed}
            for m, f, r, n in zip(measurements, families, data.raw, data.n_ops)
        ],
    })
    table.calibration = dict(table.calibration or {})
    table.calibration[str(space.resolution)] = record
    return calibration


def calibration_hashes(table: LatencyTable, resolution: int) -> set[str]:
    """Hashes of the architectures a table's calibration at `resolution` was fitted on."""
    record = (table.calibration or {}).get(str(resolution)) or {}
    return {s["arch"] for s in record.get("samples", [])}


def _share_within(errors: np.ndarray, bound: float) -> float:
    return float(np.mean(np.abs(errors) <= bound))


def prediction_errors(predicted: Sequence[float], measured: Sequence[float]) -> dict:
    """MAPE, mean signed error, share within ±5% / ±10% and Kendall tau of predictions."""
    predicted, measured = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    rel = (predicted - measured) / measured
    tau = kendalltau(predicted, measured).statistic if len(measured) > 1 else float("nan")
    return {
        "mape_pct": float(np.mean(np.abs(rel)) * 100),
        "mean_error_pct": float(np.mean(rel) * 100),
        "within_5pct": _share_within(rel, 0.05),
        "within_10pct": _share_within(rel, 0.10),
        "kendall_tau": float(tau),
        "n": int(len(measured)),
    }


def fidelity_report(predictor: LatencyPredictor, measurements: Sequence[EndToEnd], labels: Sequence[str] | None = None,
                    groups: Sequence[str] | None = None) -> dict:
    """The validation report: per architecture and overall (and per group), raw and calibrated,
    at the table's speed; the same calibrated figures against the times as measured now; the
    machine's drift; and how often the stated error covered the measured one."""
    rows = []
    for i, m in enumerate(measurements):
        prediction = predictor.predict(m.arch)
        rows.append({
            "arch": m.arch.hash,
            "label": labels[i] if labels else m.arch.hash,
            "group": groups[i] if groups else "uniform",
            "choices": m.arch.choice_map,
            "raw_sum_ms": prediction.raw_sum_ms,
            "calibrated_ms": prediction.latency_ms,
            "stated_error_pct": prediction.error_pct,
            "coverage_note": prediction.coverage_note,
            "measured_ms": m.measured_ms,
            "absolute_ms": m.absolute_ms,
            "speed": m.speed,
            "noise_cv": m.noise_cv,
            "round_ms": list(m.round_ms),
            "reference_ms": list(m.reference_ms),
        })
    summary = {"n_archs": len(rows), "noise_cv_median": float(np.median([r["noise_cv"] for r in rows])),
               "noise_cv_max": float(np.max([r["noise_cv"] for r in rows])),
               "speed_vs_table": float(np.median([r["speed"] for r in rows])),
               "speed_range": [float(min(r["speed"] for r in rows)), float(max(r["speed"] for r in rows))]}
    measured = [r["measured_ms"] for r in rows]
    for name, column in (("raw", "raw_sum_ms"), ("calibrated", "calibrated_ms")):
        summary[name] = prediction_errors([r[column] for r in rows], measured)
    summary["as_measured"] = prediction_errors([r["calibrated_ms"] * r["speed"] for r in rows],
                                               [r["absolute_ms"] for r in rows])
    summary["as_measured_unscaled"] = prediction_errors([r["calibrated_ms"] for r in rows],
                                                        [r["absolute_ms"] for r in rows])
    summary["groups"] = {}
    for group in sorted({r["group"] for r in rows}):
        members = [r for r in rows if r["group"] == group]
        summary["groups"][group] = {
            name: prediction_errors([r[column] for r in members], [r["measured_ms"] for r in members])
            for name, column in (("raw", "raw_sum_ms"), ("calibrated", "calibrated_ms"))
        }
    stated = [r["stated_error_pct"] for r in rows if r["stated_error_pct"] is not None]
    if stated:
        errors = [abs(r["calibrated_ms"] - r["measured_ms"]) / r["measured_ms"] * 100 for r in rows]
        summary["stated_error_pct"] = predictor.calibration.stated_error_pct
        summary["stated_covers_mape"] = predictor.calibration.stated_error_pct >= summary["calibrated"]["mape_pct"]
        summary["widened"] = sum(r["coverage_note"] is not None for r in rows)
        summary["within_stated"] = float(np.mean([e <= s for e, s in zip(errors, stated)]))
    summary["calibration"] = predictor.calibration.to_dict() if predictor.calibration else None
    summary["mape_over_noise"] = (
        summary["calibrated"]["mape_pct"] / (summary["noise_cv_median"] * 100) if summary["noise_cv_median"] > 0 else None
    )
    return {"summary": summary, "archs": rows}
