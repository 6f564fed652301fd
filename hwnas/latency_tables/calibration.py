"""Corrections from the LUT's additive sum to end-to-end latency, fitted on measurements.

Models (fitted to minimise relative error, since latencies span an order of magnitude):
  raw        measured = raw_sum   (no correction: always a candidate, so a fit that does not
             beat the plain sum on held-out samples is never chosen)
  scale      measured = a * raw_sum
  linear     measured = a * raw_sum + b
  ops        measured = a * raw_sum + c * n_ops + b   (n_ops: stem + blocks + head; a per-op
             term for what the backend does between ops, which the sum of isolated ops misses)
  types      measured = sum over op categories t of a_t * raw_sum_t   (a scale per kind of op:
             memory-bound e1 blocks and compute-bound e6 blocks are off by different factors in
             isolation; categories by `op_category`; the `fixed` category, stem and head, is in
             every network and so also absorbs a constant)
  types_ops  types plus c * n_ops

Parameters cannot run away: scales are bounded to [0.25, 4], the intercept and the per-op term
to half the smallest measured network and half the median op, and the per-type scales are
pulled toward one common scale by a ridge term whose strength (`SHRINKAGE`) is chosen by
cross-validation like the model itself. A type seen in few samples then stays near the common
scale instead of extrapolating (an all-e1 network was predicted 59% slow by an unshrunk fit).

Model selection: leave-one-out predictions of every model, scored by the mean of the MAPE on
the uniform and on the lopsided calibration samples (see hwnas.latency_tables.sampling), so
that the corners searches end on weigh as much as the bulk. `error_pct` is the larger of the
two groups' cross-validated MAPE.

A table holds one calibration per input resolution (`table.calibration["224"]`): a
correction fitted at one resolution is not assumed to hold at another. `error_pct` is the
leave-one-out cross-validated mean absolute percentage error on the calibration samples.
`hwnas validate` adds the MAPE on architectures measured later, in another session (a
`Validation` record, the calibration's `validation`); the error a prediction states is the
larger of the two, because on a shared machine the second is what a user meets (on this VM,
eager PyTorch: 6.4% against 9.1%).

Both records' JSON forms are `$defs/calibration` and `$defs/validation` of
hwnas/schemas/lut.schema.json. A table's calibration record also holds the fit report
`calibrate_table` adds (the samples, every model's error, ...), which `Calibration` ignores.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Mapping, Sequence

import numpy as np

from ..errors import LutError
from ..core.ops import DartsOpSpec, is_cell_op, parse_cell_op

MODELS = ("raw", "scale", "linear", "ops", "types", "types_ops")
MIN_SAMPLES = {"raw": 1, "scale": 2, "linear": 3, "ops": 4, "types": 8, "types_ops": 9}
#: ridge strengths toward one common scale tried for the per-type models (0: none)
SHRINKAGE = (0.0, 0.03, 0.3, 3.0)
#: a correction outside these bounds is a broken table or a broken measurement, not a correction
SCALE_BOUNDS = (0.25, 4.0)


def op_category(op) -> str:
    """Kind of an op for the `types` model: `fixed` (stem, head), `ir_e6`, `ir_e1_g2`, `ds`, ...,
    or for a cell space's network the op, `nb201_nor_conv_3x3`, `nb201_resblock`, `darts_sep_conv_3x3`, ..."""
    if op.kind != "block":
        return "fixed"
    if is_cell_op(op.spec):
        family = "darts" if DartsOpSpec.matches(op.spec) else "nb201"
        return f"{family}_{parse_cell_op(op.spec).op}"
    from ..core.build import decode_block

    args = decode_block(op.spec)[0]
    kind = args["block_type"]
    if kind == "ir":
        kind += f"_e{args['exp_ratio']:g}" + ("_g" if args.get("pw_groups", 1) > 1 else "")
    return kind


#: how far outside the calibration's range an architecture may lie before its error is widened
COVERAGE_MARGIN = {"raw": 0.10, "share": 0.05}


def _finite_or_none(value) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


@dataclass(frozen=True)
class Validation:
    """The held-out error of a calibration: MAPE of its predictions on `n_archs` architectures
    measured after it was fitted, in another session (`hwnas validate`)."""

    mape_pct: float
    n_archs: int
    within_10pct: float | None = None
    kendall_tau: float | None = None  # None where undefined (one architecture, constant times)
    noise_cv_median: float | None = None  # run-to-run noise of the validation's measurements
    speed_vs_table: float | None = None  # the machine's speed then / at profiling
    seed: int | None = None  # of the drawn architectures
    groups: tuple[tuple[str, float], ...] = ()  # calibrated MAPE per sample group
    created: str | None = None  # ISO-8601 UTC; None in older tables

    @classmethod
    def from_summary(cls, summary: Mapping, column: str = "calibrated", seed: int | None = None) -> "Validation":
        """The record of a fidelity report's summary (`fidelity_report(...)["summary"]`), of its
        `column` ("calibrated", or "raw" where the calibration was replaced by the raw sum)."""
        errors = summary[column]
        return cls(mape_pct=float(errors["mape_pct"]), n_archs=int(summary["n_archs"]),
                   within_10pct=float(errors["within_10pct"]), kendall_tau=_finite_or_none(errors["kendall_tau"]),
                   noise_cv_median=float(summary["noise_cv_median"]), speed_vs_table=float(summary["speed_vs_table"]),
                   seed=seed,
                   groups=tuple(sorted((g, float(v[column]["mape_pct"])) for g, v in summary.get("groups", {}).items())),
                   created=datetime.now(timezone.utc).replace(microsecond=0).isoformat())

    def to_dict(self) -> dict:
        """Unknown values (None) are left out, but for an undefined `kendall_tau` (null)."""
        doc = {k: v for k, v in asdict(self).items() if v is not None}
        doc["kendall_tau"] = _finite_or_none(self.kendall_tau)
        doc["groups"] = dict(self.groups)
        return doc

    @classmethod
    def from_dict(cls, data: Mapping) -> "Validation":
        def optional(key, kind):
            value = data.get(key)
            return None if value is None else kind(value)

        return cls(mape_pct=float(data["mape_pct"]), n_archs=int(data["n_archs"]),
                   within_10pct=optional("within_10pct", float), kendall_tau=_finite_or_none(data.get("kendall_tau")),
                   noise_cv_median=optional("noise_cv_median", float), speed_vs_table=optional("speed_vs_table", float),
                   seed=optional("seed", int),
                   groups=tuple(sorted((str(k), float(v)) for k, v in (data.get("groups") or {}).items())),
                   created=optional("created", str))


@dataclass(frozen=True)
class Calibration:
    model: str
    a: float
    b: float
    error_pct: float
    n_samples: int
    resolution: int
    c: float = 0.0
    type_scales: tuple[tuple[str, float], ...] = ()
    validation: Validation | None = None  # the held-out error (hwnas validate)
    shrinkage: float = 0.0  # ridge strength of the per-type scales chosen by cross-validation
    group_error_pct: tuple[tuple[str, float], ...] = ()  # cross-validated MAPE per sample group
    coverage: dict | None = None  # ranges of the calibration samples (see `coverage_issue`)
    noise_pct: float = 0.0  # run-to-run noise (median CV of rounds) of the calibration's measurements

    @property
    def validated_error_pct(self) -> float | None:
        """MAPE on held-out architectures, or None before `hwnas validate`."""
        return self.validation.mape_pct if self.validation else None

    @property
    def validated_n(self) -> int:
        return self.validation.n_archs if self.validation else 0

    @property
    def stated_error_pct(self) -> float:
        """The error predictions state: the largest of the cross-validated error, the run-to-run
        noise of the measurements it was fitted on (a measurement made at another time carries
        that much again, which cross-validation inside one time window cannot see) and, once
        `hwnas validate` ran, the held-out error."""
        return max(self.error_pct, self.noise_pct, self.validated_error_pct or 0.0)

    def fit_dict(self) -> dict:
        """The fitted correction alone (what a search depends on), without the error records."""
        return {k: v for k, v in self.to_dict().items() if k != "validation"}

    def scale_of(self, category: str) -> float:
        """Multiplier of an op's LUT latency (per category for the types models, else `a`)."""
        for name, value in self.type_scales:
            if name == category:
                return value
        return self.a

    def apply(self, raw_ms: float, n_ops: float = 0.0) -> float:
        """For the models without per-type scales; the types models need per-op scaling (`scale_of`)."""
        return self.a * raw_ms + self.c * n_ops + self.b

    def coverage_issue(self, raw_ms: float, type_sums: dict[str, float]) -> str | None:
        """Why an architecture lies outside what the calibration sampled (its raw sum, or the
        share of its latency in one kind of op), or None when it lies inside."""
        if not self.coverage:
            return None
        lo, hi = self.coverage["raw_ms"]
        margin = COVERAGE_MARGIN["raw"]
        if raw_ms < lo * (1 - margin) or raw_ms > hi * (1 + margin):
            return f"raw sum {raw_ms:.3g} ms outside the calibrated {lo:.3g}-{hi:.3g} ms"
        total = sum(type_sums.values()) or 1.0
        for name in sorted(set(type_sums) | set(self.coverage.get("shares", {}))):
            share = type_sums.get(name, 0.0) / total
            low, high = self.coverage.get("shares", {}).get(name, (0.0, 0.0))
            if share < low - COVERAGE_MARGIN["share"] or share > high + COVERAGE_MARGIN["share"]:
                return f"{name} ops make {share:.0%} of it, calibrated {low:.0%}-{high:.0%}"
        return None

    def widened_error_pct(self) -> float:
        """The error stated outside the calibration's coverage: twice the usual one."""
        return 2.0 * self.stated_error_pct

    def to_dict(self) -> dict:
        doc = asdict(self)
        doc["type_scales"] = dict(self.type_scales)
        doc["group_error_pct"] = dict(self.group_error_pct)
        doc["validation"] = self.validation.to_dict() if self.validation else None
        return doc

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        """Read a calibration record; older forms load too: the held-out error as top-level
        `validated_error_pct`/`validated_n` instead of `validation`, and no `c`, `shrinkage`,
        `group_error_pct`, `coverage` or `noise_pct`."""
        try:
            if data.get("validation"):
                validation = Validation.from_dict(data["validation"])
            elif data.get("validated_error_pct") is not None:
                validation = Validation(float(data["validated_error_pct"]), int(data.get("validated_n", 0)))
            else:
                validation = None
            return cls(**{k: data[k] for k in ("model", "a", "b", "error_pct", "n_samples", "resolution")},
                       c=float(data.get("c", 0.0)), validation=validation,
                       type_scales=tuple(sorted((str(k), float(v)) for k, v in (data.get("type_scales") or {}).items())),
                       shrinkage=float(data.get("shrinkage", 0.0)),
                       group_error_pct=tuple(sorted((str(k), float(v))
                                                    for k, v in (data.get("group_error_pct") or {}).items())),
                       coverage=data.get("coverage"), noise_pct=float(data.get("noise_pct", 0.0)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LutError(f"malformed calibration in table ({exc}); re-run `hwnas calibrate`") from None


@dataclass(frozen=True)
class CalibrationData:
    """What a calibration is fitted on: per architecture the raw sum, the op count, the raw
    latency per op category, the measured latency and the sample's group."""

    raw: np.ndarray
    measured: np.ndarray
    n_ops: np.ndarray
    sums: np.ndarray          # (architectures, categories)
    names: tuple[str, ...]    # the categories
    groups: tuple[str, ...]   # "uniform" or "lopsided" per architecture

    @classmethod
    def create(cls, raw, measured, n_ops=None, type_sums=None, groups=None) -> "CalibrationData":
        raw = np.asarray(raw, dtype=np.float64)
        measured = np.asarray(measured, dtype=np.float64)
        ops = np.zeros_like(raw) if n_ops is None else np.asarray(n_ops, dtype=np.float64)
        names = tuple(sorted({k for d in type_sums or () for k in d}))
        sums = (np.array([[d.get(k, 0.0) for k in names] for d in type_sums]) if type_sums
                else np.zeros((raw.size, 0)))
        groups = tuple(groups) if groups is not None else ("uniform",) * raw.size
        if raw.shape != measured.shape or raw.shape != ops.shape or len(groups) != raw.size or len(sums) != raw.size:
            raise LutError("calibration data: raw sums, measurements, op counts and groups differ in length")
        if not (np.isfinite(raw).all() and np.isfinite(measured).all()) or (raw <= 0).any() or (measured <= 0).any():
            raise LutError("calibration needs positive, finite latencies")
        return cls(raw, measured, ops, sums, names, groups)

    def subset(self, keep: np.ndarray) -> "CalibrationData":
        return CalibrationData(self.raw[keep], self.measured[keep], self.n_ops[keep], self.sums[keep], self.names,
                               tuple(g for g, k in zip(self.groups, keep) if k))

    def min_samples(self, model: str) -> int:
        extra = len(self.names) + (2 if model == "types_ops" else 1) if model.startswith("types") else 0
        return max(MIN_SAMPLES[model], extra)


def _bounded_fit(design: np.ndarray, target: np.ndarray, lower, upper) -> np.ndarray:
    from scipy.optimize import lsq_linear

    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    return lsq_linear(design, target, bounds=(lower, upper), method="bvls").x


def _coef_bounds(data: CalibrationData) -> tuple[float, float]:
    """(|b| bound, |c| bound): half the smallest measured network, half the median op."""
    per_op = float(np.median(data.raw / np.maximum(data.n_ops, 1.0)))
    return 0.5 * float(data.measured.min()), 0.5 * per_op


def _fit(model: str, data: CalibrationData, shrinkage: float = 0.0) -> tuple[float, float, float, tuple]:
    """(a, b, c, type scales) by bounded least squares on relative residuals (residual / measured)."""
    raw, measured, ops = data.raw, data.measured, data.n_ops
    w = 1.0 / measured
    ones = np.ones_like(measured)
    lo, hi = SCALE_BOUNDS
    b_max, c_max = _coef_bounds(data)
    if model == "raw":
        return 1.0, 0.0, 0.0, ()
    if model == "scale":
        (a,) = _bounded_fit((raw * w)[:, None], ones, [lo], [hi])
        return float(a), 0.0, 0.0, ()
    if model == "linear":
        a, b = _bounded_fit(np.stack([raw * w, w], axis=1), ones, [lo, -b_max], [hi, b_max])
        return float(a), float(b), 0.0, ()
    if model == "ops":
        a, b, c = _bounded_fit(np.stack([raw * w, w, ops * w], axis=1), ones, [lo, -b_max, -c_max], [hi, b_max, c_max])
        return float(a), float(b), float(c), ()
    # per-type scales, no intercept (the `fixed` category, in every network, plays that part),
    # ridge rows pulling every scale toward the common scale a0
    a0 = _fit("scale", data)[0]
    k = len(data.names)
    design = data.sums * w[:, None]
    target = ones
    lower, upper = [lo] * k, [hi] * k
    if model == "types_ops":
        design = np.concatenate([design, (ops * w)[:, None]], axis=1)
        lower, upper = lower + [-c_max], upper + [c_max]
    if shrinkage > 0:
        ridge = np.zeros((k, design.shape[1]))
        ridge[np.arange(k), np.arange(k)] = np.sqrt(shrinkage * raw.size)
        design = np.concatenate([design, ridge])
        target = np.concatenate([target, np.full(k, np.sqrt(shrinkage * raw.size) * a0)])
    coef = _bounded_fit(design, target, lower, upper)
    scales = tuple((name, float(v)) for name, v in zip(data.names, coef[:k]))
    c = float(coef[k]) if model == "types_ops" else 0.0
    mean_scale = float(np.sum(coef[:k] * data.sums.sum(axis=0)) / max(data.sums.sum(), 1e-12))
    return mean_scale, 0.0, c, scales


def _predict(model, coefs, data: CalibrationData) -> np.ndarray:
    a, b, c, scales = coefs
    if model.startswith("types"):
        return data.sums @ np.array([v for _, v in scales]) + c * data.n_ops + b
    return a * data.raw + c * data.n_ops + b


def loo_predictions(model: str, data: CalibrationData, shrinkage: float = 0.0) -> np.ndarray:
    """Leave-one-out prediction of every sample (the raw model needs no fit: its own prediction)."""
    if model == "raw":
        return data.raw.copy()
    out = np.empty_like(data.measured)
    for i in range(data.raw.size):
        keep = np.arange(data.raw.size) != i
        fold = _fit(model, data.subset(keep), shrinkage)
        out[i] = _predict(model, fold, data.subset(~keep))[0]
    return out


def group_mape(predicted: np.ndarray, data: CalibrationData) -> dict[str, float]:
    """MAPE (%) per sample group ("uniform", "lopsided") present in the data."""
    rel = np.abs(predicted - data.measured) / data.measured
    groups = np.array(data.groups)
    return {g: float(rel[groups == g].mean() * 100.0) for g in sorted(set(data.groups))}


def selection_score(per_group: dict[str, float]) -> float:
    """Selection score: the groups' MAPEs weighed equally (corners count as much as the bulk)."""
    return float(np.mean(list(per_group.values())))


def _coverage(data: CalibrationData) -> dict:
    """The range of raw sums and of each category's share of them seen in calibration."""
    shares = data.sums / data.raw[:, None] if data.names else np.zeros((data.raw.size, 0))
    return {"raw_ms": [float(data.raw.min()), float(data.raw.max())],
            "n_ops": [float(data.n_ops.min()), float(data.n_ops.max())],
            "shares": {n: [float(shares[:, i].min()), float(shares[:, i].max())] for i, n in enumerate(data.names)}}


def fit_calibration(raw_ms: Sequence[float], measured_ms: Sequence[float], resolution: int,
                    model: str = "scale", n_ops: Sequence[float] | None = None,
                    type_sums: Sequence[dict[str, float]] | None = None, groups: Sequence[str] | None = None,
                    shrinkage: float | None = None) -> Calibration:
    """Fit `model` on (raw sum, measured) pairs (plus op counts, or per-category sums of LUT
    latency for the types models); see `fit_model`."""
    if model not in MODELS:
        raise LutError(f"unknown calibration model {model!r}; choose one of: {', '.join(MODELS)}")
    if model in ("ops", "types_ops") and n_ops is None:
        raise LutError(f"the {model!r} calibration model needs the op count of every architecture")
    if model.startswith("types") and type_sums is None:
        raise LutError(f"the {model!r} calibration model needs per-category latency sums of every architecture")
    return fit_model(CalibrationData.create(raw_ms, measured_ms, n_ops, type_sums, groups), model, resolution,
                     shrinkage)


def fit_model(data: CalibrationData, model: str, resolution: int, shrinkage: float | None = None) -> Calibration:
    """Fit `model` on `data`; error_pct is the worst group's leave-one-out MAPE. For the types
    models `shrinkage=None` picks the ridge strength from `SHRINKAGE` by the same LOO."""
    if data.raw.size < data.min_samples(model):
        raise LutError(f"calibration model {model!r} needs at least {data.min_samples(model)} (raw, measured) pairs, "
                       f"got {data.raw.size}")
    grid = SHRINKAGE if model.startswith("types") and shrinkage is None else (shrinkage or 0.0,)
    scored = []
    for strength in grid:
        per_group = group_mape(loo_predictions(model, data, strength), data)
        scored.append((selection_score(per_group), strength, per_group))
    _, strength, per_group = min(scored, key=lambda t: t[0])
    a, b, c, scales = _fit(model, data, strength)
    return Calibration(model, a, b, max(per_group.values()), int(data.raw.size), int(resolution), c, scales,
                       shrinkage=strength, group_error_pct=tuple(sorted(per_group.items())),
                       coverage=_coverage(data))


def calibration_for(table_calibration: dict | None, resolution: int) -> Calibration | None:
    """The table's calibration at `resolution`, or None."""
    if not table_calibration:
        return None
    data = table_calibration.get(str(resolution))
    return Calibration.from_dict(data) if data else None
