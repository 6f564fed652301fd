"""A synthetic machine: a stand-in backend whose speed drifts with its own virtual clock.

A module's call takes `cost(module) x speed(t)` ms (times a +-`wobble` alternation), where
`cost` is the module's MACs x K_MS_PER_MAC, scaled by `network_scale` for whole networks plus
`network_ms` (what happens between ops in a real runtime), and `t` is the machine's virtual
time, advanced by every call. Everything the real code does with a backend (prepare, time
calls, memory, close) works on it; nothing sleeps.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from hwnas.latency_tables import LatencyTable, Measurement, OpKey
from hwnas.runtimes.memory import MemoryInfo
from hwnas.profilers.base import Profiler, Runner
from hwnas.core.summary import count_macs

K_MS_PER_MAC = 1e-5


def is_network(module: nn.Module) -> bool:
    return hasattr(module, "conv_head") and hasattr(module, "blocks")


class SyntheticRunner(Runner):
    def __init__(self, machine: "SyntheticMachine", cost_ms: float):
        self.machine, self.cost_ms, self.calls = machine, cost_ms, 0

    def time_call(self) -> float:
        self.calls += 1
        wobble = 1 + self.machine.wobble * (1 if self.calls % 2 else -1)
        ms = self.cost_ms * self.machine.speed(self.machine.t) * wobble
        self.machine.t += ms / 1000.0
        self.machine.calls += 1
        return ms

    def memory(self) -> MemoryInfo:
        return MemoryInfo(param_bytes=0, input_bytes=0, output_bytes=0, peak_bytes=None, peak_source="unknown")


class SyntheticMachine(Profiler):
    """Stand-in profiler (named like torch-cpu, so tables it makes look like ordinary ones)."""

    name = "torch-cpu"

    def __init__(self, speed: Callable[[float], float] = lambda t: 1.0, network_scale: float = 1.3,
                 network_ms: float = 0.2, wobble: float = 0.01):
        super().__init__()
        self.speed, self.network_scale, self.network_ms, self.wobble = speed, network_scale, network_ms, wobble
        self.t = 0.0
        self.calls = 0
        self.prepared: list[nn.Module] = []

    def options(self) -> dict:
        return {"threads": 1}

    def fingerprint(self) -> dict:
        return {"cpu": {"model": "synthetic"}}

    def overhead_ms(self) -> float:
        return 0.0

    def cost_ms(self, module: nn.Module, shape) -> float:
        ms = count_macs(module, tuple(shape))[0] * K_MS_PER_MAC
        return self.network_scale * ms + self.network_ms if is_network(module) else ms

    def prepare(self, module: nn.Module, input_shape) -> Runner:
        self.prepared.append(module)
        return SyntheticRunner(self, self.cost_ms(module.eval(), input_shape))


def macs_table(space, reference_ms: float | None = None) -> LatencyTable:
    """A table whose every op takes exactly its MACs x K ms, with the space's reference network
    at the synthetic machine's speed 1 (what a profile on a steady SyntheticMachine gives)."""
    from hwnas.core.reference import new_reference, reference_model, set_reference_time

    table = LatencyTable(backend="torch-cpu", backend_options={"threads": 1}, device={"cpu": {"model": "synthetic"}},
                         spaces=[space.name], resolutions=[space.resolution])
    machine = SyntheticMachine()
    for op in space.all_ops():
        from hwnas.profilers.session import op_module

        ms = machine.cost_ms(op_module(op, space.build_config), op.input_shape(1))
        table.put(OpKey.for_op(op, space.build_config.name), Measurement(ms, ms, ms, ms, 0, 1))
    table.reference = new_reference(space)
    model, shape = reference_model(table.reference)
    set_reference_time(table.reference, reference_ms or machine.cost_ms(model, shape), 1)
    return table
