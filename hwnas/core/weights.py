"""Trained weights travel with their architecture and preprocessing: one checkpoint file holds all.

Format `hwnas.weights` (hwnas/schemas/weights.schema.json for everything but the tensors):
version 2 adds `preprocessing` (the training data's normalisation and resize policy, see
hwnas.preprocessing); version 1 files are read with the policy their data source implies.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .arch import Arch, arch_from_dict
from ..errors import ArchError, HwnasError
from ..preprocessing import Preprocessing, legacy_preprocessing
from ..runs import load_checkpoint, save_checkpoint
from ..schemas import first_error

WEIGHTS_FORMAT = "hwnas.weights"
WEIGHTS_VERSION = 2
READABLE_VERSIONS = (1, 2)


def save_weights(path: str | os.PathLike, arch: Arch, model: nn.Module, num_classes: int, resolution: int,
                 extra: dict | None = None, preprocessing: Preprocessing | None = None) -> None:
    """Atomically save `model`'s state dict with the architecture, class count, resolution and the
    preprocessing its training data used (ImageNet statistics when not given)."""
    payload = {
        "format": WEIGHTS_FORMAT,
        "version": WEIGHTS_VERSION,
        "arch": arch.to_dict(),
        "num_classes": int(num_classes),
        "resolution": int(resolution),
        "preprocessing": (preprocessing or Preprocessing()).to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    save_checkpoint(path, payload)


def load_weights(path: str | os.PathLike) -> dict:
    """Load and check a checkpoint written by `save_weights`; returns its dict with `arch` parsed to
    an Arch and `preprocessing` to a Preprocessing. Every field and every tensor is checked."""
    path = Path(path)
    if not path.is_file():
        raise HwnasError(f"weights file not found: {path} (give the model.pt written by `hwnas train` or `hwnas search`)")
    payload = load_checkpoint(path, WEIGHTS_FORMAT, "use the model.pt of a run directory, or retrain",
                              what="weights file", error=HwnasError)
    if payload.get("version") not in READABLE_VERSIONS:
        raise HwnasError(f"{path}: weights version {payload.get('version')!r} is not supported")
    fields = {k: v for k, v in payload.items() if k != "state_dict"}
    problem = first_error(fields, "weights")
    if problem:
        raise HwnasError(f"{path}: {problem}; the file is damaged or hand-edited: retrain with `hwnas train` "
                         "(the format: hwnas/schemas/weights.schema.json)")
    _check_tensors(payload.get("state_dict"), path)
    payload["arch"] = arch_from_dict(payload["arch"], source=str(path))
    if "preprocessing" in payload:
        payload["preprocessing"] = Preprocessing.from_dict(payload["preprocessing"], str(path))
    else:
        payload["preprocessing"] = legacy_preprocessing((payload.get("extra") or {}).get("data"))
    return payload


def _check_tensors(state_dict: object, path: Path) -> None:
    """A state dict of named tensors, floating ones finite (a NaN weight gives NaN logits)."""
    if not isinstance(state_dict, dict) or not state_dict:
        raise HwnasError(f"{path}: no state_dict; use the model.pt written by `hwnas train`")
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise HwnasError(f"{path}: state_dict/{name} is a {type(tensor).__name__}, not a tensor; retrain with `hwnas train`")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise HwnasError(f"{path}: state_dict/{name} holds NaN or infinite values (training diverged?); "
                             "retrain, e.g. with a lower --lr")


def check_weights_match(payload: dict, arch: Arch) -> None:
    """Refuse weights trained for another architecture."""
    if payload["arch"] != arch:
        raise ArchError(
            f"weights were trained for architecture {payload['arch'].hash} ({payload['arch'].space}), "
            f"not {arch.hash} ({arch.space}); pass the ARCH the weights belong to"
        )
