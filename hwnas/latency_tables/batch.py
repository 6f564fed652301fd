"""Predictions of many architectures at once: a JSON-lines file of architecture objects read
with every bad line named, and one prediction record per architecture, in input order."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.arch import Arch, arch_from_dict
from ..core.spaces import get_space
from ..errors import ArchError, HwnasError
from ..profilers.table import LatencyTable
from .loading import space_for_table
from .predictor import LatencyPredictor


def read_archs_file(path: str) -> list[tuple[str, str, Arch]]:
    """(label `FILE:LINE`, `FILE line LINE`, architecture) of every non-blank line of a JSON-lines file; a bad line is
    an ArchError naming the file and the line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArchError(f"--archs-file {path}: cannot read it ({exc.__class__.__name__}: {exc}); give a JSON-lines file "
                        "of architecture objects") from None
    spaces: dict[str, object] = {}
    archs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise ArchError(f"{where}: not JSON ({exc}); each line is one architecture object, e.g. "
                            "`hwnas arch sample --space SPACE` on one line") from None
        name = data.get("space") if isinstance(data, dict) else None
        if isinstance(name, str) and name not in spaces:
            try:
                spaces[name] = get_space(name)
            except HwnasError:
                spaces[name] = None
        archs.append((f"{path}:{number}", where, arch_from_dict(data, where, space=spaces.get(name) if isinstance(name, str)
                                                         else None)))
    if not archs:
        raise ArchError(f"--archs-file {path} holds no architecture; write one architecture object per line")
    return archs


def predict_many(table: LatencyTable, archs: list[tuple[str, str, Arch]], resolution: int | None = None,
                 num_classes: int | None = None) -> list[dict]:
    """One record per (label, where, architecture), in order: the prediction's fields, the input's
    label and the table's backend. All architectures are of one space (the first one's)."""
    space = space_for_table(table, archs[0][2].space, resolution, num_classes)
    for _, where, arch in archs:
        if arch.space != space.name:
            raise ArchError(f"{where}: architecture is of space {arch.space!r}, not {space.name!r} (the first one's); "
                            "predict one space per call")
    predictor = LatencyPredictor(table, space)
    fixed = {"space": space.name, "resolution": space.resolution, "num_classes": space.num_classes,
             "backend": table.backend}
    return [{"input": label, "arch": arch.hash, **fixed, **predictor.predict(arch).to_dict()} for label, _, arch in archs]
