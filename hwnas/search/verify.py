"""The budget verified on the device: measure a search's result end to end, repair it if it is over.

A search meets its budget by the table's prediction, which carries an error. When the table's
backend runs on this machine (same device and options), the result is measured end to end,
interleaved with the table's reference network so that the machine's present speed cancels
(`measured_ms` is at the table's speed; `absolute_ms` as timed now). If it is over the budget,
the prediction was optimistic by `measured / predicted`; the budget the LUT must meet is
tightened by that factor, the architecture repaired by LUT-guided downgrades to it
(`repair_to_budget`, each swap the smallest that finishes), and measured again, at most
`max_repairs` times. Every attempt is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from ..core.arch import Arch
from ..errors import HwnasError, LutError
from ..latency_tables.predictor import LatencyPredictor
from ..latency_tables.validation import EndToEnd
from .budget import BudgetError, repair_to_budget
from .decision_costs import decision_costs

#: the tightened LUT budget leaves this much room below the measured ratio
REPAIR_MARGIN = 0.02


@dataclass(frozen=True)
class Verification:
    """What the on-device check measured, attempt by attempt, and the architecture it ends with."""

    arch: Arch
    budget_ms: float | None
    attempts: tuple[dict, ...] = ()
    skipped: str | None = None  # why nothing was measured
    note: str = ""
    device: str | None = None  # in a search over several devices, the one measured

    @property
    def final(self) -> dict | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def meets_budget(self) -> bool | None:
        final = self.final
        if final is None or self.budget_ms is None:
            return None
        return final["measured_ms"] <= self.budget_ms

    @property
    def repaired(self) -> bool:
        return len(self.attempts) > 1

    def to_dict(self) -> dict:
        final = self.final or {}
        return {"skipped": self.skipped, "budget_ms": self.budget_ms, "meets_budget": self.meets_budget,
                "predicted_ms": final.get("predicted_ms"), "measured_ms": final.get("measured_ms"),
                "absolute_ms": final.get("absolute_ms"), "speed_vs_table": final.get("speed"),
                "measured_over_budget": (final["measured_ms"] / self.budget_ms
                                         if final and self.budget_ms else None),
                "repaired": self.repaired, "arch_hash": self.arch.hash, "attempts": list(self.attempts),
                "note": self.note, **({"device": self.device} if self.device else {})}


def _attempt(arch: Arch, predictor: LatencyPredictor, measured: EndToEnd, lut_budget: float | None,
             steps: list | None = None) -> dict:
    return {"arch_hash": arch.hash, "predicted_ms": predictor.latency_ms(arch), "measured_ms": measured.measured_ms,
            "absolute_ms": measured.absolute_ms, "speed": measured.speed, "noise_cv": measured.noise_cv,
            "lut_budget_ms": lut_budget, "repair_steps": [s.to_dict() for s in steps or ()]}


def _smallest_change_log_probs(model, choices: dict) -> list[list[float]]:
    """Log-probabilities that make `repair_to_budget` prefer the swaps that change latency least
    (summed over the devices of a search over several)."""
    table = decision_costs(model)
    out = [[0.0] * len(cands) for cands in table.candidates]
    for device in table.per_device:
        for i, (name, cands, cost) in enumerate(zip(table.names, table.candidates, device.costs)):
            current = float(cost[cands.index(choices[name])])
            out[i] = [o - abs(float(c) - current) for o, c in zip(out[i], cost)]
    return out


def verify_on_device(arch: Arch, predictor: LatencyPredictor, budget_ms: float | None,
                     measure: Callable[[Arch], EndToEnd], max_repairs: int = 3,
                     repair_model: Callable[[float], tuple] | None = None) -> Verification:
    """Measure `arch` with `measure` (end to end, at the table's speed); while it is over
    `budget_ms`, tighten the LUT budget by the measured/predicted ratio, repair and measure again.
    `repair_model(lut_budget) -> (model, budget in its units)` is what the repair must meet: by
    default `predictor` and the tightened budget; in a search over several devices, every device's
    model with this device's budget tightened, so that the repair keeps the others within theirs."""
    repair_model = repair_model or (lambda lut_budget: (predictor, lut_budget))
    measured = measure(arch)
    attempts = [_attempt(arch, predictor, measured, budget_ms)]
    if budget_ms is None or measured.measured_ms <= budget_ms:
        return Verification(arch, budget_ms, tuple(attempts))
    space = predictor.space
    try:
        decision_costs(predictor)
    except LutError:
        return Verification(arch, budget_ms, tuple(attempts),
                            note=f"measured over the budget; the latency of space {space.name!r} is not a sum over "
                                 "its decisions, so it is not repaired: search again with a tighter --latency-budget")
    lut_budget = budget_ms
    current = arch
    for _ in range(max_repairs):
        last = attempts[-1]
        lut_budget = min(lut_budget, last["predicted_ms"] * budget_ms / last["measured_ms"] * (1 - REPAIR_MARGIN))
        choices = current.choice_map
        model, model_budget = repair_model(lut_budget)
        try:
            current, steps = repair_to_budget(space, model, choices,
                                              _smallest_change_log_probs(model, choices), model_budget)
        except BudgetError as exc:
            return Verification(current, budget_ms, tuple(attempts), note=f"cannot repair further: {exc}")
        measured = measure(current)
        attempts.append(_attempt(current, predictor, measured, lut_budget, steps))
        if measured.measured_ms <= budget_ms:
            break
    return Verification(current, budget_ms, tuple(attempts))


def device_measure(predictor: LatencyPredictor, rounds: int = 5, seed: int = 0):
    """A `measure` function for `verify_on_device` on the table's own backend, or (None, why not)
    when that backend or device is not this machine's."""
    from ..latency_tables.loading import open_profiler
    from ..latency_tables.validation import END_TO_END, measure_archs

    table = predictor.table
    try:
        open_profiler(table).close()
        if not (table.reference or {}).get("ms"):
            return None, "the table has no reference network (made by an older hwnas)"
    except HwnasError as exc:
        return None, str(exc)
    config = replace(END_TO_END, rounds=rounds)

    def measure(arch: Arch) -> EndToEnd:
        with open_profiler(table) as profiler:
            measured = measure_archs(profiler, predictor.space, [arch], table, config, seed=seed)[0]
        offset = predictor.task_head_offset_ms  # a task model: the measured head in place of the classifier's
        return replace(measured, measured_ms=measured.measured_ms + offset,
                       absolute_ms=measured.absolute_ms + offset * measured.speed) if offset else measured

    return measure, None


def _tightened(model, name: str):
    """`repair_model` for device `name` of a multi-device model: every device, this one's budget tightened."""
    def repair_model(lut_budget: float):
        tightened = model.with_budget(name, lut_budget)
        return tightened, tightened.budget_ms
    return repair_model


def verify_result(run_dir, result, predictor, budget_ms: float | None,
                  rounds: int = 5, progress: bool = True) -> list[Verification]:
    """The on-device check of a finished search in `run_dir`: measures its result (repairing it if
    over the budget), records the check under "verify" in result.json and, if repaired, writes the
    repaired architecture to arch.json (the search's own pick stays in result.json). In a search
    over several devices each device whose table's backend runs here is checked in turn (the
    repair keeps the others within their budgets by prediction): one Verification per device."""
    from pathlib import Path

    from ..jsonio import atomic_write_json, read_json
    from ..latency_tables.multi_device import MultiDevicePredictor

    run_dir = Path(run_dir)
    devices = predictor.devices if isinstance(predictor, MultiDevicePredictor) else (None,)
    arch, verifications = result.arch, []
    for device in devices:
        own = device.predictor if device else predictor
        budget = device.budget_ms if device else budget_ms
        name = device.name if device else None
        repair = _tightened(predictor, name) if device else None
        measure, why = device_measure(own, rounds=rounds)
        if measure is None:
            verification = Verification(arch, budget, skipped=f"not measured here: {why}", device=name)
        else:
            if progress:
                print(f"verifying {arch.hash} end to end on {own.table.backend}{f' ({name})' if name else ''} "
                      "against the budget ...")
            verification = replace(verify_on_device(arch, own, budget, measure, repair_model=repair), device=name)
        verifications.append(verification)
        arch = verification.arch
    doc = read_json(run_dir / "result.json", "search result")
    if isinstance(predictor, MultiDevicePredictor):
        doc["verify"] = {"devices": {v.device: v.to_dict() for v in verifications}}
    else:
        doc["verify"] = verifications[0].to_dict()
    if arch != result.arch:
        doc["searched_arch_hash"] = result.arch.hash
        doc["arch"], doc["arch_hash"] = arch.to_dict(), arch.hash
        if isinstance(predictor, MultiDevicePredictor):
            doc["devices"] = predictor.report(arch)
            doc["predicted_latency_ms"] = next(d["predicted_ms"] for d in doc["devices"]
                                               if d["device"] == predictor.primary.name)
        else:
            doc["predicted_latency_ms"] = predictor.latency_ms(arch)
        atomic_write_json(run_dir / "arch.json", arch.to_dict())
    atomic_write_json(run_dir / "result.json", doc)
    return verifications
