"""Corrections from the LUT's additive sum to end-to-end latency, fitted on measurements.

Models (all fitted to minimise relative error, since latencies span an order of magnitude):
  scale   measured = a * raw_sum
  linear  measured = a * raw_sum + b

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

MODELS = ("scale", "linear")


@dataclass(frozen=True)
class Calibration:
    model: str
    a: float
    b: float
    error_pct: float
    n_samples: int
    resolution: int

    def apply(self, raw_ms: float) -> float:
        return self.a * raw_ms + self.b

    def apply_tensor(self, raw_ms: torch.Tensor) -> torch.Tensor:
        return raw_ms * self.a + self.b

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        try:
            return cls(**{k: data[k] for k in ("model", "a", "b", "error_pct", "n_samples", "resolution")})
        except (KeyError, TypeError) as exc:
            raise LutError(f"malformed calibration in table ({exc}); re-run `hwnas calibrate`") from None


def _fit_coefficients(model: str, raw: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    """Weighted least squares on relative residuals (each residual divided by `measured`)."""
    if model == "scale":
        ratio = raw / measured
        return float(ratio.sum() / (ratio**2).sum()), 0.0
    if model == "linear":
        design = np.stack([raw / measured, 1.0 / measured], axis=1)
        (a, b), *_ = np.linalg.lstsq(design, np.ones_like(measured), rcond=None)
        return float(a), float(b)
    raise LutError(f"unknown calibration model {model!r}; choose one of: {', '.join(MODELS)}")


def fit_calibration(raw_ms: Sequence[float], measured_ms: Sequence[float], resolution: int,
                    model: str = "scale") -> Calibration:
    """Fit `model` on (raw sum, measured) pairs; error_pct is leave-one-out MAPE."""
    raw = np.asarray(raw_ms, dtype=np.float64)
    measured = np.asarray(measured_ms, dtype=np.float64)
    min_samples = 2 if model == "scale" else 3
    if raw.shape != measured.shape or raw.size < min_samples:
        raise LutError(f"calibration model {model!r} needs at least {min_samples} (raw, measured) pairs, got {raw.size}")
    if (raw <= 0).any() or (measured <= 0).any():
        raise LutError("calibration needs positive latencies")
    a, b = _fit_coefficients(model, raw, measured)
    errors = []
    for i in range(raw.size):
        keep = np.arange(raw.size) != i
        ai, bi = _fit_coefficients(model, raw[keep], measured[keep])
        errors.append(abs(ai * raw[i] + bi - measured[i]) / measured[i])
    return Calibration(model, a, b, float(np.mean(errors) * 100.0), int(raw.size), int(resolution))


def calibration_for(table_calibration: dict | None, resolution: int) -> Calibration | None:
    """The table's calibration at `resolution`, or None."""
    if not table_calibration:
        return None
    data = table_calibration.get(str(resolution))
    return Calibration.from_dict(data) if data else None
