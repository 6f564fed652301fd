"""Corrections from the LUT's additive sum to end-to-end latency, fitted on measurements.

Models (all fitted to minimise relative error, since latencies span an order of magnitude):
  scale   measured = a * raw_sum
  linear  measured = a * raw_sum + b
  ops     measured = a * raw_sum + c * n_ops + b   (n_ops: stem + blocks + head; a per-op term
          for what the backend does between ops, which the sum of isolated ops misses)

`hwnas calibrate` fits every model and keeps the one with the lowest cross-validated error.

A table holds one calibration per input resolution (`table.calibration["224"]`): a
correction fitted at one resolution is not assumed to hold at another. `error_pct` is the
leave-one-out cross-validated mean absolute percentage error: an honest estimate of how far a
prediction on an unseen architecture is off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import LutError

MODELS = ("scale", "linear", "ops")
MIN_SAMPLES = {"scale": 2, "linear": 3, "ops": 4}


@dataclass(frozen=True)
class Calibration:
    model: str
    a: float
    b: float
    error_pct: float
    n_samples: int
    resolution: int
    c: float = 0.0

    def apply(self, raw_ms: float, n_ops: float = 0.0) -> float:
        return self.a * raw_ms + self.c * n_ops + self.b

    def apply_tensor(self, raw_ms: torch.Tensor, n_ops: torch.Tensor | float = 0.0) -> torch.Tensor:
        return raw_ms * self.a + n_ops * self.c + self.b

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        try:
            return cls(**{k: data[k] for k in ("model", "a", "b", "error_pct", "n_samples", "resolution")},
                       c=float(data.get("c", 0.0)))
        except (KeyError, TypeError) as exc:
            raise LutError(f"malformed calibration in table ({exc}); re-run `hwnas calibrate`") from None


def _fit_coefficients(model: str, raw: np.ndarray, n_ops: np.ndarray, measured: np.ndarray) -> tuple[float, float, float]:
    """(a, b, c) by least squares on relative residuals (each residual divided by `measured`)."""
    if model == "scale":
        ratio = raw / measured
        return float(ratio.sum() / (ratio**2).sum()), 0.0, 0.0
    if model == "linear":
        design = np.stack([raw / measured, 1.0 / measured], axis=1)
        (a, b), *_ = np.linalg.lstsq(design, np.ones_like(measured), rcond=None)
        return float(a), float(b), 0.0
    if model == "ops":
        design = np.stack([raw / measured, 1.0 / measured, n_ops / measured], axis=1)
        (a, b, c), *_ = np.linalg.lstsq(design, np.ones_like(measured), rcond=None)
        return float(a), float(b), float(c)
    raise LutError(f"unknown calibration model {model!r}; choose one of: {', '.join(MODELS)}")


def fit_calibration(raw_ms: Sequence[float], measured_ms: Sequence[float], resolution: int,
                    model: str = "scale", n_ops: Sequence[float] | None = None) -> Calibration:
    """Fit `model` on (raw sum, measured) pairs (and op counts); error_pct is leave-one-out MAPE."""
    raw = np.asarray(raw_ms, dtype=np.float64)
    measured = np.asarray(measured_ms, dtype=np.float64)
    ops = np.zeros_like(raw) if n_ops is None else np.asarray(n_ops, dtype=np.float64)
    if model not in MODELS:
        raise LutError(f"unknown calibration model {model!r}; choose one of: {', '.join(MODELS)}")
    if model == "ops" and n_ops is None:
        raise LutError("the 'ops' calibration model needs the op count of every architecture")
    min_samples = MIN_SAMPLES[model]
    if raw.shape != measured.shape or raw.shape != ops.shape or raw.size < min_samples:
        raise LutError(f"calibration model {model!r} needs at least {min_samples} (raw, measured) pairs, got {raw.size}")
    if (raw <= 0).any() or (measured <= 0).any():
        raise LutError("calibration needs positive latencies")
    a, b, c = _fit_coefficients(model, raw, ops, measured)
    errors = []
    for i in range(raw.size):
        keep = np.arange(raw.size) != i
        ai, bi, ci = _fit_coefficients(model, raw[keep], ops[keep], measured[keep])
        errors.append(abs(ai * raw[i] + ci * ops[i] + bi - measured[i]) / measured[i])
    return Calibration(model, a, b, float(np.mean(errors) * 100.0), int(raw.size), int(resolution), c)


def calibration_for(table_calibration: dict | None, resolution: int) -> Calibration | None:
    """The table's calibration at `resolution`, or None."""
    if not table_calibration:
        return None
    data = table_calibration.get(str(resolution))
    return Calibration.from_dict(data) if data else None
