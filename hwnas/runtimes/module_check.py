"""The one check that a runtime runs what the torch module computes: a converted op or network
(ONNX graph, OpenVINO model, ExecuTorch program, LiteRT model) is refused before it is timed when
its output differs from the module's, relative to the output's scale (deep random-weight networks
reach logits in the thousands)."""

from __future__ import annotations

import numpy as np

from ..errors import BackendError
from .base import Runner


def first_tensor(output):
    """The first tensor of a module's output (a tensor, a dict of features, a tuple): the graph's first output."""
    while not hasattr(output, "numpy"):
        output = next(iter(output.values())) if isinstance(output, dict) else output[0]
    return output


def check_against_module(runner: Runner, module, tolerance: float, backend: str, what: str) -> None:
    """Run `runner` on its timing input through the timed path once, then compare with `module`;
    on a mismatch (or any failure) close the runner and raise BackendError naming `backend` and
    `what` was converted ("the exported ONNX graph", "the lowered program", ...)."""
    import torch

    try:
        x = runner.timing_input
        runner.time_call()  # the timed path itself, once
        got = runner.infer(x)
        with torch.inference_mode():
            want = first_tensor(module(torch.from_numpy(x))).numpy()
        scale = max(float(np.abs(want).max()), 1.0)
        if got.shape != want.shape or float(np.abs(got - want).max()) > tolerance * scale:
            diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("nan")
            raise BackendError(f"{backend}: {what} disagrees with the torch module (max abs diff {diff:.3g} at "
                               f"output scale {scale:.3g}, shapes {got.shape} vs {want.shape})")
    except BaseException:
        runner.close()
        raise
