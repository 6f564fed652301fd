"""Open a table for a space and a profiler for a table (shared by predict/calibrate/validate)."""

from __future__ import annotations

from ..errors import BackendError, LutError
from ..core.spaces import SearchSpace, get_space
from .fitted import fewshot_refusal, is_fitted
from .published import is_published, refusal
from ..profilers.table import LatencyTable, device_identity


def space_for_table(table: LatencyTable, space_name: str | None = None, resolution: int | None = None,
                    num_classes: int | None = None) -> SearchSpace:
    """The space (at the table's resolution; with a head of `num_classes`, default the space's) a
    command works on; ambiguity is an error."""
    if space_name is None:
        if len(table.spaces) != 1:
            raise LutError(f"the table holds spaces {table.spaces or '[]'}; pick one with --space")
        space_name = table.spaces[0]
    if resolution is None:
        if len(table.resolutions) != 1:
            raise LutError(f"the table holds resolutions {table.resolutions or '[]'}; pick one with --resolution")
        resolution = table.resolutions[0]
    return get_space(space_name, resolution=resolution, num_classes=num_classes)


def open_profiler(table: LatencyTable):
    """A profiler with the table's backend and options, on the device the table was made on."""
    from ..profilers.end_to_end import open_backend

    if is_published(table):
        raise BackendError(refusal(table))
    if is_fitted(table):
        raise BackendError(fewshot_refusal(table))
    profiler = open_backend(table.backend, table.backend_options)
    try:
        if profiler.options() != table.backend_options:
            raise BackendError(
                f"cannot reproduce the table's backend options {table.backend_options} here "
                f"(got {profiler.options()}); profile this device with the options you need"
            )
        here, there = device_identity(profiler.fingerprint()), device_identity(table.device)
        if here != there:
            differing = sorted(k for k in set(here) | set(there) if here.get(k) != there.get(k))
            raise BackendError(
                f"this machine differs from the one the table was profiled on (in {', '.join(differing)}); "
                "end-to-end measurements must run on the same device and software: profile this device first"
            )
    except BackendError:
        profiler.close()
        raise
    return profiler
