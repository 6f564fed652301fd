"""Corrections from the LUT's additive sum to end-to-end latency, fitted on measurements.

Models (all fitted to minimise relative error, since latencies span an order of magnitude):
  scale   measured = a * raw_sum
  linear  measured = a * raw_sum + b
  ops     measured = a * raw_sum + c * n_ops + b   (n_ops: stem + blocks + head; a per-op term
          for what the backend does between ops, which the sum of isolated ops misses)
  types   measured = sum over op categories t of a_t * raw_sum_t   (a scale per kind of op:
          e.g. memory-bound e1 blocks and compute-bound e6 blocks are off by different factors
          in isolation; categories are made by `op_category`; the `fixed` category, stem and
          head, is in every network and so also absorbs a constant)

`hwnas calibrate` fits every model and keeps the one with the lowest cross-validated error.

A table holds one calibration per input resolution (`table.calibration["224"]`): a
correction fitted at one resolution is not assumed to hold at another. `error_pct` is the
leave-one-out cross-validated mean absolute percentage error on the calibration samples.
`hwnas validate` adds the MAPE on architectures measured later, in another session
(`validated_error_pct`); the error a prediction states is the larger of the two, because on a
shared machine the second is what a user meets (on this VM, eager PyTorch: 6.4% against 9.1%).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..errors import LutError

MODELS = ("scale", "linear", "ops", "types")
MIN_SAMPLES = {"scale": 2, "linear": 3, "ops": 4, "types": 8}


def op_category(op) -> str:
    """Kind of an op for the `types` model: `fixed` (stem, head), `ir_e6`, `ir_e1_g2`, `ds`, ..."""
    if op.kind != "block":
        return "fixed"
    from ..build import decode_block

    args = decode_block(op.spec)[0]
    kind = args["block_type"]
    if kind == "ir":
        kind += f"_e{args['exp_ratio']:g}" + ("_g" if args.get("pw_groups", 1) > 1 else "")
    return kind


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
    validated_error_pct: float | None = None  # MAPE on held-out architectures (hwnas validate)
    validated_n: int = 0

    @property
    def stated_error_pct(self) -> float:
        """The error predictions state: cross-validated, or held-out where that is larger."""
        return max(self.error_pct, self.validated_error_pct or 0.0)

    def fit_dict(self) -> dict:
        """The fitted correction alone (what a search depends on), without the error records."""
        return {k: v for k, v in self.to_dict().items() if k not in ("validated_error_pct", "validated_n")}

    def scale_of(self, category: str) -> float:
        """Multiplier of an op's LUT latency (per category for `types`, else `a`)."""
        for name, value in self.type_scales:
            if name == category:
                return value
        return self.a

    def apply(self, raw_ms: float, n_ops: float = 0.0) -> float:
        """For the models without per-type scales; `types` needs per-op scaling (`scale_of`)."""
        return self.a * raw_ms + self.c * n_ops + self.b

    def to_dict(self) -> dict:
        doc = asdict(self)
        doc["type_scales"] = dict(self.type_scales)
        return doc

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        try:
            validation = data.get("validation") or {}
            return cls(**{k: data[k] for k in ("model", "a", "b", "error_pct", "n_samples", "resolution")},
                       c=float(data.get("c", 0.0)),
                       validated_error_pct=validation.get("mape_pct"), validated_n=int(validation.get("n_archs", 0)),
                       type_scales=tuple(sorted((str(k), float(v)) for k, v in (data.get("type_scales") or {}).items())))
        except (KeyError, TypeError) as exc:
            raise LutError(f"malformed calibration in table ({exc}); re-run `hwnas calibrate`") from None


def _fit(model: str, raw: np.ndarray, n_ops: np.ndarray, sums: np.ndarray, names: list[str],
         measured: np.ndarray) -> tuple[float, float, float, tuple]:
    """(a, b, c, type scales) by least squares on relative residuals (residual / measured)."""
    ones = np.ones_like(measured)
    if model == "scale":
        ratio = raw / measured
        return float(ratio.sum() / (ratio**2).sum()), 0.0, 0.0, ()
    if model == "linear":
        (a, b), *_ = np.linalg.lstsq(np.stack([raw / measured, 1.0 / measured], axis=1), ones, rcond=None)
        return float(a), float(b), 0.0, ()
    if model == "ops":
        design = np.stack([raw / measured, 1.0 / measured, n_ops / measured], axis=1)
        (a, b, c), *_ = np.linalg.lstsq(design, ones, rcond=None)
        return float(a), float(b), float(c), ()
    # no intercept: the `fixed` category (stem + head, in every network) plays that part
    coef, *_ = np.linalg.lstsq(sums / measured[:, None], ones, rcond=None)
    scales = tuple((name, float(v)) for name, v in zip(names, coef))
    mean_scale = float(np.sum(coef * sums.sum(axis=0)) / max(sums.sum(), 1e-12))
    return mean_scale, 0.0, 0.0, scales


def _predict(model, coefs, raw, n_ops, sums) -> np.ndarray:
    a, b, c, scales = coefs
    if model == "types":
        return sums @ np.array([v for _, v in scales]) + b
    return a * raw + c * n_ops + b


def fit_calibration(raw_ms: Sequence[float], measured_ms: Sequence[float], resolution: int,
                    model: str = "scale", n_ops: Sequence[float] | None = None,
                    type_sums: Sequence[dict[str, float]] | None = None) -> Calibration:
    """Fit `model` on (raw sum, measured) pairs (plus op counts, or per-category sums of LUT
    latency for `types`); error_pct is the leave-one-out MAPE."""
    raw = np.asarray(raw_ms, dtype=np.float64)
    measured = np.asarray(measured_ms, dtype=np.float64)
    ops = np.zeros_like(raw) if n_ops is None else np.asarray(n_ops, dtype=np.float64)
    if model not in MODELS:
        raise LutError(f"unknown calibration model {model!r}; choose one of: {', '.join(MODELS)}")
    if model == "ops" and n_ops is None:
        raise LutError("the 'ops' calibration model needs the op count of every architecture")
    if model == "types" and type_sums is None:
        raise LutError("the 'types' calibration model needs per-category latency sums of every architecture")
    names = sorted({k for d in type_sums or () for k in d})
    sums = np.array([[d.get(k, 0.0) for k in names] for d in type_sums]) if type_sums else np.zeros((raw.size, 0))
    min_samples = max(MIN_SAMPLES[model], len(names) + 1 if model == "types" else 0)
    if raw.shape != measured.shape or raw.shape != ops.shape or raw.size < min_samples:
        raise LutError(f"calibration model {model!r} needs at least {min_samples} (raw, measured) pairs, got {raw.size}")
    if (raw <= 0).any() or (measured <= 0).any():
        raise LutError("calibration needs positive latencies")
    coefs = _fit(model, raw, ops, sums, names, measured)
    errors = []
    for i in range(raw.size):
        keep = np.arange(raw.size) != i
        fold = _fit(model, raw[keep], ops[keep], sums[keep], names, measured[keep])
        predicted = _predict(model, fold, raw[i:i + 1], ops[i:i + 1], sums[i:i + 1])[0]
        errors.append(abs(predicted - measured[i]) / measured[i])
    a, b, c, scales = coefs
    return Calibration(model, a, b, float(np.mean(errors) * 100.0), int(raw.size), int(resolution), c, scales)


def calibration_for(table_calibration: dict | None, resolution: int) -> Calibration | None:
    """The table's calibration at `resolution`, or None."""
    if not table_calibration:
        return None
    data = table_calibration.get(str(resolution))
    return Calibration.from_dict(data) if data else None
