"""The reference network: a whole network every latency measurement of a table is expressed against.

A table's ops, its calibration's end-to-end samples, a validation and a search's on-device
check are measured minutes or days apart on a machine whose speed drifts. Each of them times
the table's reference network between its own measurements (`hwnas.profilers.interleaved`)
and rescales them to the reference's time at profiling (`ms` below), so the numbers compare
as if taken at one moment. A whole network, not one small block, because load and clock
changes slow a network's mix of compute- and memory-bound layers as a whole.

The reference is a fixed architecture of the table's first space: the uniform sample of seed
`REFERENCE_SEED`, at that space's resolution and class count. The table stores it:

    reference   {"space", "resolution", "num_classes", "choices", "ms", "probes", "measured"}
"""

from __future__ import annotations

import random
from datetime import datetime, timezone

from torch import nn

from .arch import Arch
from ..errors import LutError
from .spaces import SearchSpace, get_space

REFERENCE_SEED = 0


def reference_arch(space: SearchSpace) -> Arch:
    """The space's reference architecture (the same for every table of this space)."""
    return Arch.create(space, space.sample(random.Random(REFERENCE_SEED)))


def new_reference(space: SearchSpace) -> dict:
    """The reference record of a new table, before its time is known."""
    arch = reference_arch(space)
    return {"space": space.name, "resolution": space.resolution, "num_classes": space.num_classes,
            "choices": arch.choice_map, "ms": None, "probes": 0, "measured": None}


def set_reference_time(record: dict, ms: float, probes: int) -> None:
    """Fix the reference's time: from now on every measurement of the table is expressed at it."""
    record.update(ms=float(ms), probes=int(probes),
                  measured=datetime.now(timezone.utc).replace(microsecond=0).isoformat())


def reference_model(record: dict | None, batch: int = 1) -> tuple[nn.Module, tuple[int, int, int, int]]:
    """The reference network of a table's record (eval mode) and its input shape."""
    if not record:
        raise LutError("the table has no reference network (it was made by an older hwnas); profile the device "
                       "again with `hwnas profile ... --out NEW_TABLE`")
    try:
        space = get_space(record["space"], resolution=int(record["resolution"]), num_classes=int(record["num_classes"]))
        arch = Arch.create(space, record["choices"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LutError(f"the table's reference record is malformed ({exc}); profile the device again") from None
    model = space.build_model(arch.choice_map).eval()
    return model, (batch, 3, space.resolution, space.resolution)


def reference_ms(record: dict | None) -> float:
    """The reference's time (ms) a table is expressed at; refuses a table without one."""
    if not record or not record.get("ms"):
        raise LutError("the table's reference network has no time yet (its profile never finished a chunk); "
                       "finish it with `hwnas profile ... --resume`")
    return float(record["ms"])
