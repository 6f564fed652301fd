"""End-to-end measurement of whole architectures, calibration fitting and the fidelity report.

Whole networks are measured in interleaved rounds (every architecture once per round, the
order shuffled each round), so that a burst of load on the machine spreads over all of them
instead of poisoning one. The spread of an architecture's round medians is the backend's own
run-to-run noise, reported next to the prediction error: a predictor cannot be trusted to be
better than the measurements it is checked against.

A shared machine also changes speed as a whole between sessions (on this project's VM: 5% between
a calibration and a validation run minutes apart). So every architecture measurement is preceded
by one of a fixed reference op; calibration stores the reference's median, and the report
states how much slower or faster the machine is now (`speed_vs_calibration`) and the calibrated
figures with each measurement rescaled by the reference's speed (`calibrated_speed_adjusted`).
The first is what a user meets; the second separates the predictor's error from the machine's.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.stats import kendalltau

from ..arch import Arch
from ..build import build_block, build_model
from ..errors import LutError
from ..spaces import SearchSpace
from .calibration import MIN_SAMPLES, MODELS, Calibration, fit_calibration
from .predictor import LatencyPredictor
from .table import LatencyTable

#: the reference op timed before every architecture: a small block, the same for every space
REFERENCE_BLOCK, REFERENCE_SHAPE = "ir_r1_k3_s1_e6_c32", (1, 32, 28, 28)


@dataclass(frozen=True)
class EndToEnd:
    """Whole-network latency of one architecture over several interleaved rounds."""

    arch: Arch
    measured_ms: float
    noise_cv: float
    round_ms: tuple[float, ...]
    reference_ms: tuple[float, ...] = ()  # the reference op, timed just before each round's measurement

    def speed_adjusted_ms(self, reference_ms: float) -> float:
        """Median over rounds of the latency rescaled to a machine whose reference op takes `reference_ms`."""
        return float(np.median([m * reference_ms / r for m, r in zip(self.round_ms, self.reference_ms)]))


def measure_archs(profiler, space: SearchSpace, archs: Sequence[Arch], batch: int = 1, rounds: int = 3,
                  seed: int = 0, progress: Callable[[int, int], None] | None = None) -> list[EndToEnd]:
    """Median end-to-end latency and run-to-run CV of each architecture, interleaving rounds; the
    reference op is timed before every measurement."""
    if rounds < 1:
        raise LutError("rounds must be >= 1")
    models = [build_model(a.arch_def(space), space.build_config, space.num_classes).eval() for a in archs]
    reference = build_block(REFERENCE_BLOCK, REFERENCE_SHAPE[1], space.build_config).eval()
    shape = (batch, 3, space.resolution, space.resolution)
    per_arch: list[list[float]] = [[] for _ in archs]
    per_reference: list[list[float]] = [[] for _ in archs]
    rng = random.Random(seed)
    order = list(range(len(archs)))
    done, total = 0, rounds * len(archs)
    for _ in range(rounds):
        rng.shuffle(order)
        for i in order:
            per_reference[i].append(profiler.measure(reference, REFERENCE_SHAPE).p50_ms)
            per_arch[i].append(profiler.measure(models[i], shape).p50_ms)
            done += 1
            if progress:
                progress(done, total)
    results = []
    for arch, values, refs in zip(archs, per_arch, per_reference):
        arr = np.asarray(values)
        cv = float(arr.std(ddof=1) / arr.mean()) if arr.size > 1 else 0.0
        results.append(EndToEnd(arch, float(np.median(arr)), cv, tuple(float(v) for v in arr),
                                tuple(float(v) for v in refs)))
    return results


def sample_archs(space: SearchSpace, count: int, seed: int, exclude: set[str] = frozenset()) -> list[Arch]:
    """`count` distinct architectures whose hashes are not in `exclude`: half drawn uniformly, half
    with a random preference per choice (Dirichlet weights), so that the set also holds the
    lopsided architectures a search ends on (all e1 blocks, many skips, ...), which uniform
    sampling almost never draws."""
    rng = random.Random(seed)
    names = sorted({c for d in space.decisions for c in d.choices})
    archs: dict[str, Arch] = {}
    attempts = 0
    while len(archs) < count and attempts < count * 100:
        attempts += 1
        if len(archs) % 2 == 0:
            choices = space.sample(rng)
        else:
            weight = {name: rng.gammavariate(0.5, 1.0) + 1e-9 for name in names}
            choices = {d.name: rng.choices(d.choices, weights=[weight[c] for c in d.choices])[0] for d in space.decisions}
        arch = Arch.create(space, choices)
        if arch.hash not in exclude:
            archs.setdefault(arch.hash, arch)
    return list(archs.values())


def fit_best_calibration(raw: Sequence[float], measured: Sequence[float], n_ops: Sequence[int],
                         type_sums: Sequence[dict], resolution: int,
                         models: Sequence[str] = MODELS) -> tuple[Calibration, dict[str, float]]:
    """Fit each model that has enough samples and keep the lowest cross-validated error."""
    n_types = len({k for d in type_sums for k in d})
    enough = {m: len(raw) >= max(MIN_SAMPLES[m], n_types + 1 if m == "types" else 0) for m in models}
    fitted = {m: fit_calibration(raw, measured, resolution, model=m, n_ops=n_ops, type_sums=type_sums)
              for m in models if enough[m]}
    if not fitted:
        raise LutError(f"calibration needs at least {min(MIN_SAMPLES.values())} measured architectures")
    best = min(fitted.values(), key=lambda c: c.error_pct)
    return best, {m: c.error_pct for m, c in fitted.items()}


def calibrate_table(table: LatencyTable, space: SearchSpace, measurements: Sequence[EndToEnd]) -> Calibration:
    """Fit a calibration from end-to-end measurements and store it (with its samples) in `table`."""
    predictor = LatencyPredictor(table, space)
    raw = [predictor.raw_sum_ms(m.arch) for m in measurements]
    n_ops = [predictor.n_ops(m.arch) for m in measurements]
    type_sums = [predictor.type_sums(m.arch) for m in measurements]
    measured = [m.measured_ms for m in measurements]
    calibration, errors = fit_best_calibration(raw, measured, n_ops, type_sums, space.resolution)
    record = calibration.to_dict()
    record.update({
        "space": space.name,
        "model_errors_pct": errors,
        "noise_cv_median": float(np.median([m.noise_cv for m in measurements])),
        "reference_ms": _median_reference(measurements),
        "samples": [
            {"arch": m.arch.hash, "raw_sum_ms": r, "n_ops": n, "measured_ms": m.measured_ms, "noise_cv": m.noise_cv}
            for m, r, n in zip(measurements, raw, n_ops)
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


def _median_reference(measurements: Sequence[EndToEnd]) -> float | None:
    refs = [r for m in measurements for r in m.reference_ms]
    return float(np.median(refs)) if refs else None


def _errors(predicted: np.ndarray, measured: np.ndarray) -> dict:
    rel = (predicted - measured) / measured
    tau = kendalltau(predicted, measured).statistic if len(measured) > 1 else float("nan")
    return {
        "mape_pct": float(np.mean(np.abs(rel)) * 100),
        "mean_error_pct": float(np.mean(rel) * 100),
        "within_5pct": _share_within(rel, 0.05),
        "within_10pct": _share_within(rel, 0.10),
        "kendall_tau": float(tau),
    }


def fidelity_report(predictor: LatencyPredictor, measurements: Sequence[EndToEnd], labels: Sequence[str] | None = None) -> dict:
    """The validation report: per architecture and overall, raw and calibrated."""
    rows = []
    for i, m in enumerate(measurements):
        raw = predictor.raw_sum_ms(m.arch)
        calibrated = predictor.latency_ms(m.arch)
        rows.append({
            "arch": m.arch.hash,
            "label": labels[i] if labels else m.arch.hash,
            "choices": m.arch.choice_map,
            "raw_sum_ms": raw,
            "calibrated_ms": calibrated,
            "measured_ms": m.measured_ms,
            "noise_cv": m.noise_cv,
            "round_ms": list(m.round_ms),
        })
    measured = np.array([r["measured_ms"] for r in rows])
    summary = {"n_archs": len(rows), "noise_cv_median": float(np.median([r["noise_cv"] for r in rows])),
               "noise_cv_max": float(np.max([r["noise_cv"] for r in rows]))}
    for name in ("raw", "calibrated"):
        predicted = np.array([r["raw_sum_ms" if name == "raw" else "calibrated_ms"] for r in rows])
        summary[name] = _errors(predicted, measured)
    record = (predictor.table.calibration or {}).get(str(predictor.space.resolution)) or {}
    calibrated_reference, now = record.get("reference_ms"), _median_reference(measurements)
    summary["speed_vs_calibration"] = now / calibrated_reference if calibrated_reference and now else None
    summary["calibrated_speed_adjusted"] = None
    if summary["speed_vs_calibration"] is not None and all(m.reference_ms for m in measurements):
        for row, m in zip(rows, measurements):
            row["speed_adjusted_ms"] = m.speed_adjusted_ms(calibrated_reference)
        adjusted = np.array([r["speed_adjusted_ms"] for r in rows])
        summary["calibrated_speed_adjusted"] = _errors(np.array([r["calibrated_ms"] for r in rows]), adjusted)
    summary["calibration"] = asdict(predictor.calibration) if predictor.calibration else None
    summary["mape_over_noise"] = (
        summary["calibrated"]["mape_pct"] / (summary["noise_cv_median"] * 100) if summary["noise_cv_median"] > 0 else None
    )
    return {"summary": summary, "archs": rows}
