"""End-to-end latency of whole networks on one backend: the one timing path of the search's
on-device check (verify and repair), calibration and validation, the export report's latency
section and a task head's cost.

`measure_end_to_end` loads each network into its backend's runtime (hwnas.runtimes, through the
backend's profiler, so the runner is the one the table's ops were timed with) and times them in
the interleaved rounds of `hwnas.profilers.interleaved`, against the table's reference network
when one is given (drift cancels: see hwnas.latency_tables.validation), else against nothing
(rounds at the speed of the moment).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from torch import nn

from ..errors import BackendError
from .base import Profiler, Runner
from .interleaved import RoundRecord, RoundsConfig, time_rounds

#: end-to-end rounds: whole networks take milliseconds, a few calls per round suffice
END_TO_END = RoundsConfig(rounds=7, min_calls=4, max_calls=12, call_budget_s=0.05, chunk_size=40)


def open_backend(backend: str, options: Mapping | None = None, stats=None) -> Profiler:
    """The profiler of `backend` with those of `options` it takes (a table's backend options
    also hold recorded facts, such as the opset, that are not settings)."""
    from . import PROFILERS, backend_options, get_profiler

    accepted = set(backend_options(backend)) if backend in PROFILERS else set()
    return get_profiler(backend, stats=stats, **{k: v for k, v in (options or {}).items() if k in accepted})


def _unit_reference() -> float:
    return 1.0


def _prepare(profiler, item, input_shape) -> Runner:
    """A runner of one network: a module, ONNX bytes or a program in the backend's own format (a `.pte`
    for executorch), run as they are, or a zero-argument loader of either."""
    if not isinstance(item, (nn.Module, bytes, bytearray)) and callable(item):
        item = item()
    if isinstance(item, (bytes, bytearray)):  # ONNX, or the backend's own program format (prepare_program)
        load = getattr(profiler, "prepare_program", None) or getattr(profiler, "prepare_onnx", None)
        if load is None:
            raise BackendError(f"backend {profiler.name} runs torch modules, not ONNX graphs; give the module")
        return load(bytes(item), input_shape)
    return profiler.prepare(item, input_shape)


def measure_end_to_end(model, input_shape: Sequence[int], backend: str | Profiler, *, options: Mapping | None = None,
                       reference: tuple[nn.Module, tuple] | None = None, config: RoundsConfig = END_TO_END,
                       seed: int = 0, stats=None, records: Mapping[str, Sequence[RoundRecord]] | None = None,
                       on_segment: Callable[[dict[str, list[RoundRecord]]], None] | None = None,
                       progress: Callable[[int], None] | None = None):
    """Time `model` end to end on `backend` at `input_shape`, in interleaved rounds.

    `model`: a torch module, ONNX bytes (backends whose runtime runs ONNX time that very graph),
    a zero-argument loader of either, or a mapping name -> any of these, timed interleaved with
    one another (loaded `config.chunk_size` at a time). `backend`: a backend name, opened with
    `options` (for the duration of the call), or an open profiler. `reference`: (module, input
    shape) of the network every round is expressed against. `records`: rounds already timed
    (resumed), by name; `on_segment` gets every name's rounds after each segment.
    Returns the rounds (RoundRecords), or for a mapping the rounds by name.
    """
    single = not isinstance(model, Mapping)
    items = {"model": model} if single else dict(model)
    results: dict[str, list[RoundRecord]] = {k: list((records or {}).get(k, ())) for k in items}
    owned = isinstance(backend, str)
    profiler = open_backend(backend, options, stats) if owned else backend
    try:
        reference_runner = profiler.prepare(*reference) if reference is not None else None
        try:
            reference_call = reference_runner.time_call if reference_runner is not None else _unit_reference
            todo = [k for k in items if len(results[k]) < config.rounds]
            for start in range(0, len(todo), config.chunk_size):
                runners: dict[str, Runner] = {}
                try:
                    for key in todo[start:start + config.chunk_size]:
                        runners[key] = _prepare(profiler, items[key], tuple(input_shape))

                    def checkpoint(done):
                        results.update(done)
                        if on_segment:
                            on_segment(results)

                    results.update(time_rounds({k: r.time_call for k, r in runners.items()}, reference_call, config,
                                               seed=seed + start, records={k: results[k] for k in runners},
                                               on_segment=checkpoint, progress=progress))
                finally:
                    for runner in runners.values():
                        runner.close()
        finally:
            if reference_runner is not None:
                reference_runner.close()
    finally:
        if owned:
            profiler.close()
    return results["model"] if single else results
