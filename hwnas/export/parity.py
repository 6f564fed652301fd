"""Run an exported model and compare its outputs with a reference on the same inputs.

`OnnxRuntimeRunner` is the runtime layer's ONNX Runtime runner (activate / infer / deactivate, a
context manager, the protocol the profilers' runners share) and imports neither torch nor hwnas'
model code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import ExportError
from ..runtimes.ort import CPU, OrtRunner, OrtSettings

# diff / max|reference output| allowed between two fp32 CPU runs (torch vs ONNX Runtime)
FP32_TOLERANCE = 1e-4
PARITY_SEED = 0


class OnnxRuntimeRunner(OrtRunner):
    """The runtime layer's ONNX Runtime runner (hwnas.runtimes.ort) set up for parity checks:
    model bytes, `threads` 0 lets ONNX Runtime choose, failures are ExportErrors."""

    def __init__(self, model: bytes, providers: Sequence[str] = (CPU,), threads: int = 0):
        super().__init__(model, OrtSettings(threads=threads, providers=tuple(providers), name="onnxruntime",
                                            error=ExportError), what="the exported model")


@dataclass(frozen=True)
class Parity:
    """How far `candidate` is from `reference` over some batches (one record in the report).

    `rel_diff` = max |candidate - reference| / max |reference|: an absolute difference scaled by
    the size of the logits, so one tolerance serves small and large outputs alike.
    """

    reference: str
    candidate: str
    batches: tuple[int, ...]
    inputs: str
    max_abs_diff: float
    output_scale: float
    rel_diff: float
    top1_agreement: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.rel_diff) and self.rel_diff <= self.tolerance)

    def to_dict(self) -> dict:
        return {**asdict(self), "batches": list(self.batches), "passed": self.passed}

    def summary(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{self.candidate} vs {self.reference} (batch {', '.join(map(str, self.batches))}, {self.inputs} inputs): "
            f"max abs diff {self.max_abs_diff:.3g}, {self.rel_diff:.3g} of output scale "
            f"(tolerance {self.tolerance:g}), top-1 agreement {self.top1_agreement:.0%}: {verdict}"
        )

    def check(self) -> "Parity":
        """Raise ExportError when over tolerance (nothing has been written yet at that point)."""
        if not self.passed:
            raise ExportError(
                f"parity check failed: {self.candidate} differs from {self.reference} by {self.max_abs_diff:.3g} "
                f"({self.rel_diff:.3g} of output scale {self.output_scale:.3g}, tolerance {self.tolerance:g}); "
                "nothing was written"
            )
        return self


def random_inputs(batches: Sequence[int], resolution: int, seed: int = PARITY_SEED) -> list[np.ndarray]:
    """Seeded standard-normal images (the range of ImageNet-normalised pixels), one array per batch."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((b, 3, resolution, resolution), dtype=np.float32) for b in batches]


def compare(reference: Callable[[np.ndarray], np.ndarray], candidate: Callable[[np.ndarray], np.ndarray],
            inputs: Sequence[np.ndarray], tolerance: float, reference_name: str, candidate_name: str,
            input_kind: str = "random") -> Parity:
    """Run both on every input array and measure the largest difference."""
    max_diff, scale, agree, total = 0.0, 0.0, 0, 0
    for x in inputs:
        ref = np.asarray(reference(x), dtype=np.float64)
        out = np.asarray(candidate(x), dtype=np.float64)
        if ref.shape != out.shape:
            raise ExportError(f"{candidate_name} gave output shape {out.shape}, {reference_name} gave {ref.shape}")
        max_diff = max(max_diff, float(np.max(np.abs(out - ref))) if out.size else 0.0)
        scale = max(scale, float(np.max(np.abs(ref))) if ref.size else 0.0)
        agree += int(np.sum(ref.argmax(axis=1) == out.argmax(axis=1)))
        total += ref.shape[0]
    rel = max_diff / scale if scale > 0 else (0.0 if max_diff == 0 else float("inf"))
    return Parity(
        reference=reference_name, candidate=candidate_name, batches=tuple(int(x.shape[0]) for x in inputs),
        inputs=input_kind, max_abs_diff=max_diff, output_scale=scale, rel_diff=rel,
        top1_agreement=agree / total if total else 1.0, tolerance=tolerance,
    )


def torch_reference(model) -> Callable[[np.ndarray], np.ndarray]:
    """The eval-mode PyTorch model as a numpy -> numpy function."""
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).float().numpy()

    return run
