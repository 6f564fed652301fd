"""Trained weights travel with their architecture: one checkpoint file holds both."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .arch import Arch, arch_from_dict
from .errors import ArchError, HwnasError
from .runs import save_checkpoint

WEIGHTS_FORMAT = "hwnas.weights"
WEIGHTS_VERSION = 1


def save_weights(path: str | os.PathLike, arch: Arch, model: nn.Module, num_classes: int, resolution: int,
                 extra: dict | None = None) -> None:
    """Atomically save `model`'s state dict with the architecture, class count and resolution."""
    payload = {
        "format": WEIGHTS_FORMAT,
        "version": WEIGHTS_VERSION,
        "arch": arch.to_dict(),
        "num_classes": int(num_classes),
        "resolution": int(resolution),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    save_checkpoint(path, payload)


def load_weights(path: str | os.PathLike) -> dict:
    """Load a checkpoint written by `save_weights`; returns its dict with `arch` parsed to an Arch."""
    path = Path(path)
    if not path.is_file():
        raise HwnasError(f"weights file not found: {path} (give the model.pt written by `hwnas train` or `hwnas search`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise HwnasError(f"weights file {path} is not a readable checkpoint ({type(exc).__name__}); re-export or retrain") from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise HwnasError(f"{path} is not an hwnas weights file (no format {WEIGHTS_FORMAT!r}); use the model.pt of a run directory")
    if payload.get("version") != WEIGHTS_VERSION:
        raise HwnasError(f"{path}: weights version {payload.get('version')!r} is not supported")
    payload["arch"] = arch_from_dict(payload["arch"], source=str(path))
    return payload


def check_weights_match(payload: dict, arch: Arch) -> None:
    """Refuse weights trained for another architecture."""
    if payload["arch"] != arch:
        raise ArchError(
            f"weights were trained for architecture {payload['arch'].hash} ({payload['arch'].space}), "
            f"not {arch.hash} ({arch.space}); pass the ARCH the weights belong to"
        )
