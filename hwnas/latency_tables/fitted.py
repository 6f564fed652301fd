"""Tables fitted from a few end-to-end measurements of another device (`hwnas fewshot fit`,
hwnas.latency_tables.fewshot): their backend name, and what they cannot do here, in words."""

from __future__ import annotations

from ..core.spaces import SearchSpace
from ..profilers.table import LatencyTable, OpKey

FEWSHOT_BACKEND = "fewshot"


def is_fitted(table: LatencyTable) -> bool:
    return table.backend == FEWSHOT_BACKEND


def fewshot_refusal(table: LatencyTable) -> str:
    """Why end-to-end measurements here cannot use a few-shot table, and what to do instead."""
    return (f"this table was fitted from measurements on {table.device.get('name', 'another device')} (`hwnas fewshot "
            "fit`); calibrate, validate and a search's end-to-end check measure networks on this machine, which is not "
            "that device: measure the architecture on the device, add it to measured.csv and fit again")


def missing_ops(table: LatencyTable, space: SearchSpace, first: OpKey) -> str:
    """Why a few-shot table cannot predict `space` (another space, resolution or head), and what to do."""
    held = f"{', '.join(table.spaces)} at {'/'.join(map(str, table.resolutions))}px"
    return (f"the few-shot table of {table.device.get('name', 'a device')} holds {held} with the head its measured "
            f"networks had, not op {first} of {space.name!r} at {space.resolution}px, {space.num_classes} classes; "
            "predict its space at that resolution with the default --num-classes, or plan, measure and fit the "
            "networks you need with `hwnas fewshot plan` and `hwnas fewshot fit`")
